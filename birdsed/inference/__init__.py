"""Inference: 5-s windows with centred context, shift TTA, the clip/frame blend and smoothing (``infer``); ensembles on
a runtime (``ensemble``); ONNX/OpenVINO export (``export``); a soundscape folder → a complete, validated submission
with fallback rows and a teacher blend (``submit``); :func:`birdsed.inference.predict.predict`, the one entry every
caller uses (``predict``); and the Kaggle time budget (``budget``).

No Lightning imports. Imports the base, ``scoring``, ``data``, ``models``, ``teacher`` and ``training.losses`` (the
output activation a loss implies).
"""
