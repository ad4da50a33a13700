"""Scoring: the BirdCLEF metric (macro ROC-AUC over classes with positives), padded cmAP, P/R/F1, and the checks
that a submission or solution table is well formed.

Low in the house: every later stage may score, so this package imports only the base (``config``, ``errors``,
``rules``, ``outputs``).
"""
