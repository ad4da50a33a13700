"""Training: the LightningModule and ``fit(cfg)``, losses, weight averaging, run folders (marker, config, history,
resumable checkpoints, predictions) and MLflow tracking.

Imports the base, ``scoring``, ``data`` and ``models``. Lightning is imported here and nowhere before.
"""
