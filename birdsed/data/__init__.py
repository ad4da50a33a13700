"""Data: a BirdCLEF-format folder read and validated (``folder``), recordings decoded to 32 kHz mono (``audio``),
the float16 waveform cache and what goes into it (``cache``, ``prepare``), torch Datasets over it (``datasets``),
augmentations (``augment``) and the synthetic dataset the demo and tests use (``synth``).

Imports the base (``config``, ``errors``, ``rules``, ``outputs``) and ``scoring`` only: every later stage reads data,
data reads no later stage.
"""
