"""birdsed: a BirdCLEF-style pipeline from raw recordings to a Kaggle submission."""

__version__ = "0.1.0"
