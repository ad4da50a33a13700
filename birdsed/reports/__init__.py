"""Validation reports: gather runs, pseudo-label folders, submissions and studies into one model (``report``), draw
them (``plots``), lay them out in one self-contained HTML page (``html``, ``templates/``) and pick the windows to
listen to (``listen``).

High in the house: it reads every stage's outputs, and no stage imports it.
"""
