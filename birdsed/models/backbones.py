"""timm backbones by name, single-channel, stochastic depth, never downloading weights."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from torch import nn

from birdsed.errors import ConfigError

# the families the recipes use; any other timm model name also works if timm knows it
KNOWN = (
    "efficientnet_b0",
    "tf_efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "tf_efficientnetv2_s",
    "regnety_008",
    "regnety_016",
    "eca_nfnet_l0",
    "mobilenetv3_small_100",
    "resnet18",
)


def check_backbone_name(name: str) -> None:
    """Raise ConfigError for a name timm does not know, listing close matches."""
    if name in KNOWN or name in timm.list_models():
        return
    # the recipes' own families first, then the rest of timm
    close = difflib.get_close_matches(name.lower(), KNOWN, n=3, cutoff=0.6)
    close += [m for m in difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6) if m not in close]
    close = close[:5]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ConfigError(f"model.backbone: unknown timm model {name!r}{hint}")


def create_backbone(name: str, drop_path_rate: float = 0.0, weights: str = "") -> nn.Module:
    """A feature extractor: ``forward_features`` maps (B, 1, n_mels, T) to (B, C, F', T').

    Args:
        name: a timm model name.
        drop_path_rate: stochastic depth (1st place BirdCLEF 2025 used 0.15).
        weights: a local timm weights file (state dict, ``.pth`` or ``.safetensors``) to start from, loaded by timm
            itself (``pretrained_cfg_overlay``: its 3-channel stem folded to 1 channel by ``adapt_input_conv``, its
            classifier dropped); nothing is ever downloaded.

    Raises:
        ConfigError: an unknown name, a missing weights file, or one that does not fit the model.
    """
    check_backbone_name(name)
    kwargs: dict = {"drop_path_rate": drop_path_rate} if drop_path_rate > 0 else {}
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"model.pretrained_weights: {path} not found")
        # source "" makes timm read `file` before any hub or URL entry of the model's default config
        kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path), "source": ""}}
    try:
        return timm.create_model(name, in_chans=1, num_classes=0, global_pool="", **kwargs)
    except (RuntimeError, KeyError, ValueError, OSError) as err:
        if not weights:
            raise
        what = str(err).strip().splitlines()[0][:300]
        raise ConfigError(f"model.pretrained_weights: {weights}: does not fit {name} ({what})") from None
