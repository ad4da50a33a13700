"""SED models: a timm backbone under an attention Sound-Event-Detection head, the mel front-end inside.

No Lightning here: inference and export import this package alone.
"""

from birdsed.models.build import build_model, load_checkpoint, save_checkpoint
from birdsed.models.sed import SEDModel

__all__ = ["SEDModel", "build_model", "load_checkpoint", "save_checkpoint"]
