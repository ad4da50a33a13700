"""timm backbones by name, single-channel, stochastic depth, never downloading weights."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
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
        weights: a local timm weights file (state dict) to start from; nothing is ever downloaded. 3-channel stems
            are folded to 1 channel by summing over the input channels, as timm does for ``in_chans=1``.
    """
    check_backbone_name(name)
    kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate > 0 else {}
    model = timm.create_model(name, pretrained=False, in_chans=1, num_classes=0, global_pool="", **kwargs)
    if weights:
        load_local_weights(model, weights)
    return model


def load_local_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local timm state dict into `model`, adapting the RGB stem to 1 channel and ignoring the classifier."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.pretrained_weights: {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    adapted = {}
    for key, value in state.items():
        if key not in own:
            continue  # classifier of the source model and the like
        if value.dim() == 4 and own[key].dim() == 4 and value.shape[1] == 3 and own[key].shape[1] == 1:
            value = value.sum(dim=1, keepdim=True)
        if value.shape != own[key].shape:
            raise ConfigError(
                f"model.pretrained_weights: {path}: tensor {key} has shape {tuple(value.shape)}, "
                f"the model wants {tuple(own[key].shape)}"
            )
        adapted[key] = value
    missing = [k for k in own if k not in adapted]
    if len(missing) > len(own) // 2:
        raise ConfigError(
            f"model.pretrained_weights: {path}: matches only {len(adapted)} of {len(own)} tensors; "
            f"is it a {type(model).__name__}?"
        )
    model.load_state_dict(adapted, strict=False)
