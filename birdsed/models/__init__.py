"""Models: backbones (timm by name, local weights), the SED head (attention pooling → clip and frame logits) with
the mel front-end inside, the builder and self-describing checkpoints.

No Lightning here: inference and export import this package alone. Imports the base and ``data``; the mel
front-end is :mod:`birdsed.models.frontend`.
"""

from birdsed.models.build import build_model, load_checkpoint, save_checkpoint
from birdsed.models.sed import SEDModel

__all__ = ["SEDModel", "build_model", "load_checkpoint", "save_checkpoint"]
