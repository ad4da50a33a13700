"""Ensembles for inference: load members on a runtime, share front-ends, align classes, combine predictions.

No Lightning here. A member is a birdsed checkpoint (a ``.pt`` file or a run folder) or an exported model folder
(``birdsed export``): either carries its own config and class list, so nothing depends on today's defaults.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from birdsed.config import Config
from birdsed.config.load import config_from_dict
from birdsed.inference.infer import Runner
from birdsed.models.build import load_checkpoint, read_checkpoint
from birdsed.models.frontend import MelFrontend
from birdsed.training.losses import activation as loss_activation

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One model of an ensemble, ready to run on log-mels."""

    name: str
    cfg: Config
    classes: list[str]
    weight: float
    runner: Runner
    activation: str  # sigmoid | softmax
    prior: np.ndarray | None  # (K,) training class frequencies, for fallback rows
    factory: Callable[[int], Runner] | None = None  # a new runner with n threads (ONNX Runtime/OpenVINO); torch: None
    frontend: torch.nn.Module | None = None  # the model's own front-end (weights included); None: MelFrontend(audio)

    def with_threads(self, threads: int) -> Member:
        """This member with its own runtime session of `threads` threads (the same runner for torch)."""
        return replace(self, runner=self.factory(threads)) if self.factory is not None else self

    @property
    def frontend_key(self) -> tuple:
        """Members with equal keys share one spectrogram: the audio settings of a log-mel front-end; a front-end with
        weights of its own (BirdNET's) by its kind and a digest of those weights."""
        if self.frontend is None or isinstance(self.frontend, MelFrontend):
            return astuple(self.cfg.audio)
        return (type(self.frontend).__name__, self.cfg.audio.sample_rate, state_digest(self.frontend.state_dict()))


def torch_runner(model: torch.nn.Module, device: torch.device | str, precision: str = "f32") -> Runner:
    """Run ``model.forward_mel`` under no_grad (bf16: under autocast); returns numpy float32 logits."""
    device_type = torch.device(device).type

    def run(mel: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad(), torch.autocast(device_type, torch.bfloat16, enabled=precision == "bf16"):
            out = model.forward_mel(mel.to(device))
        return out["clip_logits"].float().cpu().numpy(), out["frame_logits"].float().cpu().numpy()

    return run


def _prior(payload: dict, n: int) -> np.ndarray | None:
    prior = payload.get("class_prior")
    return np.asarray(prior, dtype=np.float64) if prior is not None and len(prior) == n else None


def load_member(
    path: str | Path,
    weight: float,
    runtime: str,
    device: torch.device | str,
    threads: int = 0,
    precision: str = "f32",
) -> Member:
    """A member from a checkpoint/run folder (torch, or exported on the fly for onnx/openvino) or an export folder,
    run at `precision` (``f32``, or ``bf16`` on torch/OpenVINO)."""
    path = Path(path)
    if (path / "model.json").is_file():  # an export folder
        from birdsed.inference.export import export_frontend, read_export_meta, runtime_runner

        meta = read_export_meta(path)
        cfg = config_from_dict(meta["config"])
        classes = meta["classes"]
        prior = _prior(meta, len(classes))
        kind = runtime if runtime != "torch" else meta["format"]
        runner = runtime_runner(path, kind, threads, precision)
        factory = partial(runtime_runner, path, kind, precision=precision)
        frontend = export_frontend(path, cfg)
    else:
        payload = read_checkpoint(path)
        if runtime == "torch":
            model, cfg, classes = load_checkpoint(path, device)
            runner, factory, frontend = torch_runner(model, device, precision), None, model.frontend
        else:
            from birdsed.inference.export import export_cached, export_frontend, runtime_runner

            folder = export_cached(path, runtime)
            cfg = config_from_dict(payload["config"])
            classes = list(payload["classes"])
            runner = runtime_runner(folder, runtime, threads, precision)
            factory = partial(runtime_runner, folder, runtime, precision=precision)
            frontend = export_frontend(folder, cfg)
        prior = _prior(payload, len(classes))
    activation = loss_activation(cfg.train.loss)
    return Member(str(path), cfg, list(classes), weight, runner, activation, prior, factory, frontend)


def frontends(members: list[Member], device: torch.device | str) -> dict[tuple, torch.nn.Module]:
    """One front-end per distinct :attr:`Member.frontend_key`: a log-mel one built from its audio settings, a
    front-end with weights (BirdNET's) the first such member's own."""
    out: dict[tuple, torch.nn.Module] = {}
    for m in members:
        if m.frontend_key not in out:
            own = m.frontend is not None and not isinstance(m.frontend, MelFrontend)
            front = m.frontend if own else MelFrontend.from_config(m.cfg.audio)
            out[m.frontend_key] = front.to(device).eval()
    return out


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A short digest of a state dict's names and values (equal weights, equal digest)."""
    h = hashlib.sha1()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def align(scores: np.ndarray, classes: list[str], columns: list[str]) -> np.ndarray:
    """(N, K_model) scores → (N, len(columns)), NaN for columns the model does not know."""
    out = np.full((len(scores), len(columns)), np.nan)
    index = {c: i for i, c in enumerate(classes)}
    for j, col in enumerate(columns):
        if col in index:
            out[:, j] = scores[:, index[col]]
    return out


def combine(
    preds: list[np.ndarray],
    members: list[Member],
    columns: list[str],
    mode: str = "mean",
    specialist: int = -1,
    specialist_classes: list[str] | None = None,
) -> np.ndarray:
    """Weighted ensemble of aligned predictions.

    Args:
        preds: per member, (N, K_member) probabilities for the same N windows.
        columns: output classes.
        mode: ``mean`` of probabilities, or ``rank``: each member's column turned into normalised ranks first.
        specialist: index of a member whose classes replace the ensemble's (1st place 2025: an insect/amphibian
            model); -1 for none. `specialist_classes` limits which of its classes (default all it knows).

    Returns:
        (N, len(columns)); NaN where no member knows a class.
    """
    stack = []
    for p, m in zip(preds, members, strict=True):
        a = align(p, m.classes, columns)
        if mode == "rank":
            for j in range(a.shape[1]):
                if np.isfinite(a[:, j]).all() and len(a) > 1:
                    a[:, j] = (rankdata(a[:, j]) - 1) / (len(a) - 1)
        stack.append(a)
    arr = np.stack(stack)  # (M, N, C)
    w = np.array([m.weight for m in members])[:, None, None] * np.isfinite(arr)
    total = w.sum(axis=0)
    out = np.where(total > 0, np.nansum(np.nan_to_num(arr) * w, axis=0) / np.maximum(total, 1e-12), np.nan)
    if specialist >= 0:
        spec = stack[specialist]
        keep = specialist_classes or members[specialist].classes
        for j, col in enumerate(columns):
            if col in keep and np.isfinite(spec[:, j]).all():
                out[:, j] = spec[:, j]
    return out


def fallback_prior(members: list[Member], columns: list[str]) -> np.ndarray:
    """Per-column fill value for rows that cannot be predicted: the members' training class frequencies
    (weighted), else 1/len(columns)."""
    rows = [align(m.prior[None], m.classes, columns)[0] for m in members if m.prior is not None]
    if not rows:
        return np.full(len(columns), 1.0 / len(columns))
    stack = np.stack(rows)
    known = np.isfinite(stack).any(axis=0)
    prior = np.full(len(columns), np.nan)
    prior[known] = np.nanmean(stack[:, known], axis=0)  # no empty-slice warning for columns no member knows
    return np.where(np.isfinite(prior), prior, 1.0 / len(columns))


def describe(members: list[Member]) -> str:
    """One line per member: backbone, classes, weight, front-end group."""
    keys = {k: i for i, k in enumerate(dict.fromkeys(m.frontend_key for m in members))}
    return "\n".join(
        f"  [{i}] {m.name}: {m.cfg.model.backbone}, {len(m.classes)} classes, weight {m.weight:g}, "
        f"front-end #{keys[m.frontend_key]}"
        for i, m in enumerate(members)
    )
