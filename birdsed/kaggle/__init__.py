"""The Kaggle path: ``bundle`` (exported models, ensemble settings, the filled notebook from ``notebooks/``, metadata,
a dry run), ``wheels`` (the packages the Kaggle image lacks) and ``image`` (what that image has).

Imports the base, ``data``, ``inference`` and ``teacher``; nothing imports it but the commands.
"""
