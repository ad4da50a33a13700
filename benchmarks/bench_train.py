"""Training speed: a Lightning training step vs a bare PyTorch loop on the same batches, and samples/s.

Both paths run the identical computation (front-end, SpecAugment, MixUp, SED model, focal+BCE, AdamW step,
gradient clipping) over the same pre-made batches held in memory, so the ratio is Lightning's own overhead.
A third figure times the full data path (cache crops through DataLoader workers) on the synthetic set.

``--speed`` instead compares samples/s of the bare training step across ways to make it faster on the CPU
(issue 13): backbone (efficientnet_b0 / resnet18 at the CPU recipes' shapes), channels_last off, ``torch.compile``,
a cheaper input (the mel hop doubled: half the frames; fewer mels), and bf16 autocast where the CPU has bf16 units
(skipped, and said so, where it has none). Variants run in turns, twice, so a shared machine's drift hits all alike;
the ratios are against the reference recipe's step and against the same backbone's plain step.

Usage: python benchmarks/bench_train.py [--config configs/effnet_b0_sed.yaml] [--steps 12] [--batch 32] [--speed]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from birdsed.config.load import load_config
from birdsed.data.augment import mixup, spec_augment
from birdsed.training.train import SEDModule, cpu_has_bf16, trainer_kwargs


class Batches(Dataset):
    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


class Timer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self._t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/effnet_b0_sed.yaml")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--speed", action="store_true", help="compare ways to speed up the training step")
    args = ap.parse_args()
    if args.speed:
        speed(args)
        return
    cfg = load_config(args.config, [f"data.batch_size={args.batch}", "train.progress=false"])
    n_classes = 25
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"config: {args.config} ({cfg.model.backbone}, {cfg.audio.n_mels} mels x {cfg.frames_per_crop} frames), "
        f"batch {args.batch}"
    )
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "wave": torch.randn(args.batch, cfg.crop_samples, generator=g) * 0.1,
            "target": (torch.rand(args.batch, n_classes, generator=g) > 0.9).float(),
            "weight": torch.ones(args.batch),
            "index": torch.arange(args.batch),
        }
        for _ in range(args.steps)
    ]

    names = [str(i) for i in range(n_classes)]

    def run_bare() -> list[float]:
        """The same module's model, loss and optimiser, driven by hand."""
        L.seed_everything(0, verbose=False)
        module = SEDModule(cfg, names).train()
        opt = torch.optim.AdamW(module.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        times = []
        for b in batches:
            t = time.perf_counter()
            wave, y, w = mixup(b["wave"], b["target"], b["weight"], cfg.augment)
            out = module.model.forward_mel(spec_augment(module.model.frontend(wave), cfg.augment))
            loss = module.loss_fn(out["clip_logits"], y, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.train.grad_clip)
            opt.step()
            times.append(time.perf_counter() - t)
        return times[2:]  # warm-up steps

    def run_lightning() -> list[float]:
        L.seed_everything(0, verbose=False)
        module = SEDModule(cfg, names)
        timer = Timer()
        kwargs = trainer_kwargs(cfg) | {"max_epochs": 1, "logger": False, "enable_checkpointing": False}
        trainer = L.Trainer(limit_val_batches=0, callbacks=[timer], **kwargs)
        trainer.fit(module, train_dataloaders=DataLoader(Batches(batches), batch_size=None, num_workers=0))
        return timer.times[2:]

    # alternate the two so drifts of a shared machine hit both alike
    bare, light = [], []
    for _ in range(2):
        bare += run_bare()
        light += run_lightning()
    bare_s, light_s = statistics.median(bare), statistics.median(light)
    print(f"median of {len(bare)} steps each")
    print(f"bare PyTorch step: {bare_s * 1000:.0f} ms ({args.batch / bare_s:.1f} samples/s)")
    print(f"Lightning step:    {light_s * 1000:.0f} ms ({args.batch / light_s:.1f} samples/s)")
    print(f"lightning_over_bare={light_s / bare_s:.2f}x (goal <= 1.2x)")


PHASES = ("mixup", "front-end", "SpecAugment", "forward", "loss", "backward", "optimiser")


def _step_times(cfg, batches, compiled: bool, bf16: bool) -> tuple[list[float], dict[str, float]]:
    """Seconds per bare training step (front-end, SpecAugment, MixUp, model, loss, clipping, AdamW), warm-up
    (and compilation) left out, and the mean seconds of each phase of the step (:data:`PHASES`)."""
    L.seed_everything(0, verbose=False)
    module = SEDModule(cfg, [str(i) for i in range(batches[0]["target"].shape[1])]).train()
    model = module.model
    forward = torch.compile(model.forward_mel) if compiled else model.forward_mel
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    times, marks = [], []
    for b in batches:
        t = [time.perf_counter()]
        wave, y, w = mixup(b["wave"], b["target"], b["weight"], cfg.augment)
        t.append(time.perf_counter())
        mel = model.frontend(wave)
        t.append(time.perf_counter())
        mel = spec_augment(mel, cfg.augment)
        t.append(time.perf_counter())
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = forward(mel)
        t.append(time.perf_counter())
        loss = module.loss_fn(out["clip_logits"].float(), y, w)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.train.grad_clip)
        opt.step()
        t.append(time.perf_counter())
        times.append(t[-1] - t[0])
        marks.append(t)
    kept = marks[3:]
    phases = {name: statistics.mean(m[i + 1] - m[i] for m in kept) for i, name in enumerate(PHASES)}
    return times[3:], phases


def speed(args) -> None:
    base = load_config(args.config, [f"data.batch_size={args.batch}", "train.progress=false"])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, bf16 units: {cpu_has_bf16()}"
    )
    print(f"shapes: {base.audio.n_mels} mels x {base.frames_per_crop} frames, batch {args.batch}, 25 classes")
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "wave": torch.randn(args.batch, base.crop_samples, generator=g) * 0.1,
            "target": (torch.rand(args.batch, 25, generator=g) > 0.9).float(),
            "weight": torch.ones(args.batch),
        }
        for _ in range(args.steps)
    ]
    r18 = ["model.backbone=resnet18"]
    variants = {  # name: (overrides, compiled, bf16)
        "efficientnet_b0 (reference)": ([], False, False),
        "efficientnet_b0, no channels_last": (["model.channels_last=false"], False, False),
        "efficientnet_b0, torch.compile": ([], True, False),
        "efficientnet_b0, hop 1024": (["audio.hop_length=1024"], False, False),
        "resnet18": (r18, False, False),
        "resnet18, torch.compile": (r18, True, False),
        "resnet18, hop 1024": ([*r18, "audio.hop_length=1024"], False, False),
        "resnet18, 48 mels": ([*r18, "audio.n_mels=48"], False, False),
    }
    if cpu_has_bf16():
        variants["efficientnet_b0, bf16 autocast"] = ([], False, True)
        variants["resnet18, bf16 autocast"] = (r18, False, True)
    else:
        print("bf16 autocast: not measured (no AVX512-BF16/AMX here; emulated bf16 is slower, birdsed trains in 32)")
    times: dict[str, list[float]] = {k: [] for k in variants}
    phases: dict[str, dict[str, float]] = {}
    for _ in range(2):
        for name, (over, compiled, bf16) in variants.items():
            cfg = load_config(args.config, [f"data.batch_size={args.batch}", "train.progress=false", *over])
            step, phases[name] = _step_times(cfg, batches, compiled, bf16)
            times[name] += step
    median = {name: statistics.median(t) for name, t in times.items()}
    ref = median["efficientnet_b0 (reference)"]
    print(
        f"median of {len(times['efficientnet_b0 (reference)'])} steps each; ratios = samples/s over the reference, "
        "and over the same backbone's plain step (resnet18: configs/resnet18_sed.yaml's)"
    )
    for name, m in median.items():
        own = median["resnet18" if name.startswith("resnet18") else "efficientnet_b0 (reference)"]
        print(f"{name:38s} {m * 1000:7.0f} ms/step {args.batch / m:6.1f} samples/s  {ref / m:.2f}x  {own / m:.2f}x")
    print("where a step's time goes (share of the step, last pass):")
    for name in ("efficientnet_b0 (reference)", "resnet18"):
        total = sum(phases[name].values())
        print(f"  {name:36s} " + ", ".join(f"{k} {v / total:.0%}" for k, v in phases[name].items()))


if __name__ == "__main__":
    main()
