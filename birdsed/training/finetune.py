"""Fine-tuning a pre-trained backbone: what is frozen (``model.freeze``), the learning rate of each layer group
(``train.backbone_lr``, ``train.layer_decay``) and over the steps (:func:`lr_factor`), and BirdNET's classifier as the
head's start (``model.birdnet_head``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn

from birdsed.config import Config, TrainConfig
from birdsed.data.folder import read_taxonomy
from birdsed.models.backbones import BIRDNET
from birdsed.models.birdnet_port import birdnet_files, birdnet_labels, classifier_weights
from birdsed.models.sed import SEDModel
from birdsed.models.tflite_graph import read_graph
from birdsed.teacher.birdnet_tflite import map_classes, read_overrides

log = logging.getLogger(__name__)


def lr_factor(step: int, total: int, warmup: int, scheduler: str, period: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (linear warm-up, then the schedule).

    ``cosine`` decays to `min_ratio` over the remaining steps; ``cosine_restarts`` repeats that decay every
    `period` steps (1st place BirdCLEF 2025: every 5 epochs); ``constant`` stays at 1. A factor, for torch's
    ``LambdaLR``: torch's and timm's cosine schedulers take one absolute floor and warm-up start for every parameter
    group, where the layer-wise learning rates need each group's own (``min_ratio`` × its rate).
    """
    if step < warmup:
        return 0.01 + 0.99 * step / max(1, warmup)
    if scheduler == "constant":
        return 1.0
    if scheduler == "cosine_restarts":
        progress = ((step - warmup) % max(1, period)) / max(1, period)
    else:
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def layer_groups(model: SEDModel) -> list[list[nn.Parameter]]:
    """The backbone's parameters from input to output: its own depth-ordered groups where it has them (BirdNET's
    stem, stages and post block), else one group; the front-end's parameters join the first."""
    own = getattr(model.backbone, "layer_groups", None)
    groups = own() if own is not None else [list(model.backbone.parameters())]
    groups[0] = [*model.frontend.parameters(), *groups[0]]
    return groups


def freeze(model: SEDModel, what: str) -> int:
    """Stop gradients to the front-end and stem (``front``) or the whole backbone (``all``); returns how many
    parameters no longer train."""
    if what == "none":
        return 0
    groups = layer_groups(model)
    frozen = groups[0] if what == "front" else [p for g in groups for p in g]
    for p in frozen:
        p.requires_grad_(False)
    return sum(p.numel() for p in frozen)


def param_groups(model: SEDModel, t: TrainConfig) -> list[dict]:
    """Optimiser groups: the head at ``train.lr``, backbone group g of G at ``lr · backbone_lr · layer_decay^(G-1-g)``;
    frozen parameters are left out. One group of everything that trains when no rate differs (as runs were before
    these settings, so their checkpoints resume)."""
    if t.backbone_lr == 1.0 and t.layer_decay == 1.0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": t.lr}]
    groups = layer_groups(model)
    in_backbone = {id(p) for g in groups for p in g}
    head = [p for p in model.parameters() if id(p) not in in_backbone]
    out = [{"params": [p for p in head if p.requires_grad], "lr": t.lr}]
    for g, params in enumerate(groups):
        lr = t.lr * t.backbone_lr * t.layer_decay ** (len(groups) - 1 - g)
        out.append({"params": [p for p in params if p.requires_grad], "lr": lr})
    return [g for g in out if g["params"]]


def birdnet_rows(cfg: Config, classes: list[str], labels: list[str] | None = None) -> list[tuple[int, int]]:
    """(our class index, BirdNET output index) of each class BirdNET knows, mapped as ``birdsed teacher`` maps them
    (``data.root``'s taxonomy.csv, ``teacher.mapping``). `labels`: the teacher's outputs (default BirdNET's 6,522)."""
    taxonomy = read_taxonomy(Path(cfg.data.root) / "taxonomy.csv")
    mapping = map_classes(
        taxonomy, labels if labels is not None else birdnet_labels(), read_overrides(cfg.teacher.mapping)
    )
    return [(i, mapping.index[c]) for i, c in enumerate(classes) if c in mapping.index]


def birdnet_head(model: SEDModel, classes: list[str], cfg: Config) -> dict[str, int]:
    """Start the head's rows of the classes BirdNET knows from BirdNET's classifier (1,024 → 6,522, applied frame by
    frame) and its attention at zero (uniform over frames), so the clip logits begin as BirdNET's on the mean
    frame; classes BirdNET lacks keep their random rows. The classes are mapped as ``birdsed teacher`` maps them
    (``data.root``'s taxonomy.csv, ``teacher.mapping``).

    Returns:
        ``{"birdnet": classes started from BirdNET, "new": the others}``.
    """
    rows = birdnet_rows(cfg, classes)
    weight, bias = classifier_weights(read_graph(birdnet_files()[0]))
    head = model.head
    cla = getattr(head, "cla", None) or head.fc  # attention heads: cla (K, C, 1); the clip head: fc (K, C)
    with torch.no_grad():
        for i, j in rows:
            cla.weight[i] = torch.from_numpy(weight[j]).view_as(cla.weight[i])
            cla.bias[i] = float(bias[j])
        if hasattr(head, "att"):
            head.att.weight.zero_()
            head.att.bias.zero_()
    if type(head).__name__ != "PlainAttentionHead":
        log.warning("model.birdnet_head with model.head=%s: rows copied, but only model.head=attention starts "
                    "exactly at BirdNET's output", cfg.model.head)  # fmt: skip
    counts = {"birdnet": len(rows), "new": len(classes) - len(rows)}
    log.info("head: %d class(es) start from BirdNET's classifier, %d at random", counts["birdnet"], counts["new"])
    return counts


def prepare_model(model: SEDModel, classes: list[str], cfg: Config) -> None:
    """Everything fine-tuning does to a freshly built model before training: BirdNET's head rows (birdnet_v24 with
    ``model.birdnet_head``, unless ``model.init_from`` gives the head), then ``model.freeze``."""
    if cfg.model.backbone == BIRDNET and cfg.model.birdnet_head and not cfg.model.init_from:
        birdnet_head(model, classes, cfg)
    n = freeze(model, cfg.model.freeze)
    if n:
        log.info("model.freeze=%s: %d parameters frozen", cfg.model.freeze, n)
