"""Export a model's ``forward_mel`` to ONNX (and OpenVINO IR) for CPU inference, and run exported models.

An export folder holds ``model.onnx`` (log-mel in, clip and frame logits out, dynamic batch), optionally
``model.xml``/``model.bin`` (OpenVINO), and ``model.json`` (format, config, classes, class prior) so that
inference rebuilds the front-end from the model's own config; a front-end with weights of its own (BirdNET's) is
saved beside it as ``frontend.pt``. No Lightning here.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from birdsed.config import Config, ConfigError
from birdsed.inference.infer import Runner
from birdsed.models.backbones import BIRDNET
from birdsed.models.birdnet_port import BIRDNET_LICENCE
from birdsed.models.build import (
    CheckpointError,
    build_frontend,
    load_checkpoint,
    load_plain,
    read_checkpoint,
    resolve_checkpoint,
)
from birdsed.models.frontend import MelFrontend
from birdsed.outputs import atomic_path, atomic_write
from birdsed.ownership import check_dir_output, mark_output, staged_dir

log = logging.getLogger(__name__)
FORMATS = ("onnx", "openvino")
FRONTEND_FILE = "frontend.pt"


class _MelToLogits(torch.nn.Module):
    """forward_mel with tuple outputs, as exporters want."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.forward_mel(mel)
        return out["clip_logits"], out["frame_logits"]


def export(checkpoint: str | Path, out_dir: str | Path, fmt: str = "onnx", seconds: float = 5.0) -> Path:
    """Export `checkpoint` (a .pt file or run folder) to `out_dir`; returns the folder.

    Args:
        fmt: ``onnx``, or ``openvino`` (ONNX first, then converted to OpenVINO IR beside it).
        seconds: example input length; batch and time axes are dynamic.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    out = check_dir_output(out_dir, kind="export", inputs=(checkpoint,), create=False)  # before seconds of loading
    payload = read_checkpoint(checkpoint)
    model, cfg, classes = load_checkpoint(checkpoint)
    model.channels_last = False  # a memory-format hint means nothing to an exporter
    model.backbone.to(memory_format=torch.contiguous_format)
    with staged_dir(out) as stage:  # a re-export replaces the whole folder: no file of the old one stays
        mark_output(stage, "export")
        _write_export(model, cfg, classes, payload, checkpoint, fmt, seconds, stage)
    return out


def _write_export(
    model: torch.nn.Module,
    cfg: Config,
    classes: list[str],
    payload: dict,
    checkpoint: str | Path,
    fmt: str,
    seconds: float,
    stage: Path,
) -> None:
    """Write model.onnx (and model.xml for openvino), the front-end's weights where it has its own, and model.json
    (last) into `stage`."""
    with torch.no_grad():
        mel = model.frontend(torch.zeros(2, cfg.seconds_to_samples(seconds)))  # (2, 1, M, T)
    wrapper = _MelToLogits(model).eval()
    with atomic_path(stage / "model.onnx") as tmp, warnings.catch_warnings():  # a kill leaves no half-written model
        # the TorchScript exporter's notes on constant folding concern its graph, nothing a user can act on
        warnings.filterwarnings("ignore", message=r".*[Cc]onstant folding.*")
        torch.onnx.export(
            wrapper,
            (mel,),
            str(tmp),
            input_names=["mel"],
            output_names=["clip_logits", "frame_logits"],
            dynamic_axes={
                "mel": {0: "batch", 3: "frames"},
                "clip_logits": {0: "batch"},
                "frame_logits": {0: "batch", 1: "out_frames"},
            },
            opset_version=17,
            dynamo=False,
        )
    meta = {
        "format": fmt,
        "config": payload["config"],
        "classes": classes,
        "class_prior": payload.get("class_prior"),
        "source": str(resolve_checkpoint(checkpoint)),
        "input_frames": int(mel.shape[-1]),
    }
    if cfg.model.backbone == BIRDNET:  # the weights started as BirdNET's: their licence travels with every export
        meta["licence"] = BIRDNET_LICENCE
    if fmt == "openvino":
        import openvino as ov

        ov.save_model(ov.convert_model(str(stage / "model.onnx")), str(stage / "model.xml"))
    if not isinstance(model.frontend, MelFrontend):  # a front-end with weights of its own (BirdNET's) travels too
        with atomic_path(stage / FRONTEND_FILE) as tmp:
            torch.save({k: v.contiguous() for k, v in model.frontend.state_dict().items()}, tmp)
        meta["frontend"] = FRONTEND_FILE
    atomic_write(stage / "model.json", json.dumps(meta, indent=1))  # last: the folder is complete


def export_frontend(folder: str | Path, cfg: Config) -> torch.nn.Module:
    """The front-end an export folder's model reads: its saved weights (``frontend.pt``) where it has one of its own,
    else the log-mel front-end its config describes."""
    frontend = build_frontend(cfg)
    path = Path(folder) / FRONTEND_FILE
    if isinstance(frontend, MelFrontend) and not path.is_file():
        return frontend
    try:
        state = load_plain(path)
        frontend.load_state_dict(state)
    except (OSError, RuntimeError, ValueError, EOFError) as err:
        raise CheckpointError(f"{path}: the export's front-end weights are missing or damaged ({err})") from None
    return frontend.eval()


def export_root() -> Path:
    """Where a checkpoint run on ONNX Runtime/OpenVINO is exported once and reused: ``$BIRDSED_CACHE/exports``,
    else the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/birdsed/exports`` — never the working folder,
    which may be read-only or someone else's. Where that cannot be written, a temporary folder for this process."""
    base = (
        os.environ.get("BIRDSED_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "birdsed"
    )
    root = Path(base) / "exports"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
        return root
    except OSError:
        tmp = Path(tempfile.mkdtemp(prefix="birdsed-exports-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        log.info("%s is not writable: exports go to %s for this run", root, tmp)
        return tmp


def export_cached(checkpoint: str | Path, fmt: str, root: str | Path | None = None) -> Path:
    """Export once per checkpoint content (keyed by its hash) into `root` (default :func:`export_root`) and reuse
    the folder afterwards."""
    path = resolve_checkpoint(checkpoint)
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
    folder = Path(root or export_root()) / f"{digest}-{fmt}"
    if not (folder / "model.json").is_file():
        log.info("exporting %s to %s", path, folder)
        export(path, folder, fmt)
    return folder


def read_export_meta(folder: str | Path) -> dict:
    """An export folder's ``model.json``, checked to hold what a member needs (format, config, classes).

    Raises:
        CheckpointError: naming the file, when it cannot be read or parsed or lacks a key.
    """
    path = Path(folder) / "model.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable birdsed export description ({err})") from None
    missing = [k for k in ("format", "config", "classes") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise CheckpointError(f"{path}: not a birdsed export description (no {', '.join(missing)})")
    return meta


def runtime_runner(folder: str | Path, runtime: str, threads: int = 0, precision: str = "f32") -> Runner:
    """A runner over an export folder: ``onnx`` (ONNX Runtime, CPU, f32) or ``openvino``.

    OpenVINO is told the precision explicitly (``INFERENCE_PRECISION_HINT``): left alone it picks bf16 by itself on
    CPUs with bf16 units (AMX, AVX512-BF16), and the same model then gives other numbers on another machine.
    """
    folder = Path(folder)
    if runtime == "onnx":
        if precision != "f32":
            raise ConfigError("infer.precision: ONNX Runtime runs in f32 on the CPU; use openvino or torch for bf16")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # ORT's idle threads otherwise busy-wait after each run, stealing the cores the front-end and the decoder
        # need between runs (measured: torch.stft 3x slower beside a spinning session)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for a missing, truncated or foreign file
            raise CheckpointError(f"{folder / 'model.onnx'}: cannot be loaded ({str(err).splitlines()[0]})") from None

        def run(mel: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            clip, frame = session.run(None, {"mel": mel.detach().cpu().numpy().astype(np.float32)})
            return clip, frame

        return run
    if runtime == "openvino":
        compiled = openvino_model(folder, threads, precision)

        def run(mel: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            result = compiled(mel.detach().cpu().numpy().astype(np.float32))
            return np.asarray(result[0]), np.asarray(result[1])

        return run
    raise ConfigError(f"infer.runtime: {runtime!r} is not one of torch, onnx, openvino")


def openvino_model(folder: str | Path, threads: int = 0, precision: str = "f32"):
    """The export folder's model compiled for OpenVINO's CPU plugin at an explicit inference precision."""
    import openvino as ov

    folder = Path(folder)
    core = ov.Core()
    # the IR when the folder has one, else the ONNX file read directly (nothing is written: inputs may be read-only)
    model = folder / "model.xml" if (folder / "model.xml").is_file() else folder / "model.onnx"
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision}  # f32 | bf16, OpenVINO's own names
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        return core.compile_model(str(model), "CPU", config)
    except Exception as err:  # OpenVINO raises RuntimeError for a missing, truncated or foreign file
        raise CheckpointError(f"{model}: cannot be loaded ({str(err).splitlines()[0]})") from None
