"""Studies: variants × seeds of a recipe as ordinary run folders (``runner``), the study file (``spec``), and the paired
statistics with bootstrap intervals (``stats``).

Imports the base and the stages it runs (training, pseudo, inference, scoring); nothing above it.
"""
