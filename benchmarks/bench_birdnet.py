"""BirdNET V2.4 as a backbone (issue 27): the port against the TFLite interpreter, the input-rate choice, the
training step's speed, round 0 before any training, and the fine-tuned students alone and blended with BirdNET.

Usage:
    birdsed teacher configs/birdnet_sed.yaml --folders test_soundscapes,train_soundscapes --out TEACHER
    python benchmarks/bench_birdnet.py --port --speed --round0 --teacher TEACHER
    birdsed study configs/studies/birdnet_recipe.yaml --out runs/studies/birdnet_recipe
    python benchmarks/bench_birdnet.py --teacher TEACHER --students runs/studies/birdnet_recipe/base \\
        [--baseline runs/studies/ablation/recipe] [--agile AGILE]
    birdsed study configs/studies/birdnet_rounds.yaml --out runs/studies/birdnet_rounds
    python benchmarks/bench_birdnet.py --rounds runs/studies/birdnet_rounds/round2

`--students`: a folder of ``seed<k>`` run folders; each run's ``soundscape_preds.csv`` (the labelled soundscapes,
as ``birdsed infer`` predicts them) is scored on BirdNET's classes and on all classes, and blended with BirdNET
(``(1-w)·student + w·BirdNET`` where BirdNET knows a class, the student elsewhere): w is chosen on a random half of
the 30 labelled soundscapes and scored on the other half, 200 halvings, so the blend's figure is never the one it
was chosen on. `--baseline` (another seed folder, e.g. the ResNet-18 recipe's) is scored beside, paired by seed.
`--agile AGILE` (``birdsed agile``): the classes BirdNET lacks are the agile model's alone in every entry, so w = 1
is BirdNET + agile (the best entry without our models) and the blend says whether the student adds to it on
BirdNET's classes ("all" then scores the student there and agile elsewhere).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agile import macro

from birdsed.config.load import load_config
from birdsed.data.audio import load_audio
from birdsed.data.folder import split_row_ids
from birdsed.models.birdnet_port import birdnet_files, load_birdnet
from birdsed.teacher.birdnet_tflite import read_teacher

REPO = Path(__file__).resolve().parents[1]
MINI = REPO.parent / "shared" / "data" / "birdclef-real-mini"
RECIPE = REPO / "configs" / "birdnet_sed.yaml"
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def real_chunks(n: int, tail: bool = False) -> np.ndarray:
    """3-s chunks at 48 kHz of `n` recordings spread over the mini set's classes: (n, 144000). `tail`: each
    recording's last partial chunk, zero-padded to 3 s as BirdNET and ``birdsed teacher`` pad it (recordings of at
    least 3 s otherwise, their first 3 s)."""
    files = sorted((MINI / "train_audio").rglob("*.ogg"))
    out = []
    for f in files[:: max(1, len(files) // n)]:
        w = load_audio(str(f), 48000)
        if tail and len(w) % 144000:
            out.append(np.pad(w[len(w) // 144000 * 144000 :], (0, 144000 - len(w) % 144000)))
        elif not tail and len(w) >= 144000:
            out.append(w[:144000])
        if len(out) == n:
            break
    return np.stack(out).astype(np.float32)


def bench_port(n: int) -> None:
    from ai_edge_litert.interpreter import Interpreter

    torch.set_num_threads(2)
    model = load_birdnet().eval()
    for tail in (False, True):
        x = real_chunks(n, tail)
        interp = Interpreter(model_path=str(birdnet_files()[0]), num_threads=2, experimental_preserve_all_tensors=True)
        inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
        interp.resize_tensor_input(inp, list(x.shape))
        interp.allocate_tensors()
        interp.set_tensor(inp, x)
        t0 = time.perf_counter()
        interp.invoke()
        t_lite = time.perf_counter() - t0
        logits_ref, emb_ref = interp.get_tensor(out), interp.get_tensor(out - 1).reshape(len(x), -1)
        spec_ref = interp.get_tensor(265).transpose(0, 3, 1, 2)  # the graph's spectrogram (BNORM_SPEC's output)
        with torch.no_grad():
            t0 = time.perf_counter()
            emb = model.embed(torch.from_numpy(x)).numpy()
            t_port = time.perf_counter() - t0
            logits = model.classifier(torch.from_numpy(emb)).numpy()
            spec = model.frontend(torch.from_numpy(x)).numpy()
            body_only = model.body.forward_features(torch.from_numpy(np.ascontiguousarray(spec_ref))).mean((2, 3))
        exact = reference_spectrogram(x, model)
        what = "last chunks, zero-padded" if tail else "full chunks"
        silent = (x == 0).mean(axis=1) > 0.01  # digital silence: padding, or a muted stretch of a recording
        dl, de = np.abs(logits - logits_ref).max(axis=1), np.abs(emb - emb_ref).max(axis=1)
        for name, rows in (("without digital silence", ~silent), ("with > 1 % exact zeros", silent)):
            if rows.any():
                print(f"port vs TFLite, {rows.sum()} of {len(x)} real 3-s {what} {name}: logits max |Δ| "
                      f"{dl[rows].max():.2e}, embedding max |Δ| {de[rows].max():.2e}, probabilities max |Δ| "
                      f"{np.abs(sigmoid(logits) - sigmoid(logits_ref))[rows].max():.2e}; top-1 agrees on "
                      f"{(logits.argmax(1) == logits_ref.argmax(1))[rows].mean():.0%}")  # fmt: skip
        print(f"  TFLite {t_lite:.2f} s (every tensor kept: its debug mode), port (torch, 2 threads) {t_port:.2f} s "
              f"for the {len(x)} chunks; the body "
              f"alone on TFLite's own spectrogram: embedding max |Δ| {np.abs(body_only.numpy() - emb_ref).max():.2e}; "
              f"spectrogram max |Δ| to float64 NumPy: port {np.abs(spec - exact).max():.2e}, TFLite "
              f"{np.abs(spec_ref - exact).max():.2e}")  # fmt: skip


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(v, -30, 30)))


def reference_spectrogram(x: np.ndarray, model) -> np.ndarray:
    """BirdNET's front-end from the port's constants: the peak normalisation in float32 as the graph has it (both
    sides agree there to the bit), the FFT, filterbank and power in float64 NumPy."""
    fe = model.frontend
    w = x - x.min(axis=1, keepdims=True)
    w = ((w / (w.max(axis=1, keepdims=True) + np.float32(fe.eps)) - np.float32(0.5)) * np.float32(2.0)).astype(
        np.float64
    )
    out = []
    for b in fe.branches:
        idx = np.arange(b.frame)[None, :] + b.step * np.arange(1 + (w.shape[1] - b.frame) // b.step)[:, None]
        real = np.fft.rfft(w[:, idx] * b.window.double().numpy(), axis=-1).real
        bands = (real @ b.filterbank.double().numpy()) ** 2
        out.append(np.power(bands, float(b.exponent))[..., ::-1].transpose(0, 2, 1))
    t = min(s.shape[-1] for s in out)
    spec = np.stack([s[..., :t] for s in out], axis=1)
    return (
        spec * fe.norm.scale.detach().double().numpy()[None, :, None, None]
        + fe.norm.shift.detach().double().numpy()[None, :, None, None]
    )


def bench_speed() -> None:
    """Seconds per epoch of 512 samples: the model step (forward, backward, AdamW) at the recipe's settings."""
    from birdsed.models.build import build_model
    from birdsed.training.finetune import freeze, param_groups

    torch.set_num_threads(2)
    for crop in (5, 3):
        for what in ("front", "none", "all"):
            cfg = load_config(RECIPE, [f"model.freeze={what}", f"data.crop_seconds={crop}"])
            model = build_model(cfg, 25)
            model.backbone.to(memory_format=torch.channels_last)
            model.channels_last = True
            freeze(model, what)
            opt = torch.optim.AdamW(param_groups(model, cfg.train), lr=1e-4)
            x = torch.randn(cfg.data.batch_size, crop * cfg.audio.sample_rate) * 0.1
            times = []
            for _ in range(4):
                t0 = time.perf_counter()
                loss = model(x)["clip_logits"].sigmoid().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t0)
            per_epoch = min(times[1:]) * 512 / cfg.data.batch_size
            print(f"step, {crop}-s crops, freeze={what}: {per_epoch:.0f} s per epoch of 512 samples "
                  f"({min(times[1:]):.2f} s a batch of {cfg.data.batch_size})")  # fmt: skip


def labelled() -> tuple[pd.DataFrame, np.ndarray]:
    solution = pd.read_csv(MINI / "test_solution.csv", dtype={"row_id": str})
    return solution, split_row_ids(solution["row_id"])[0].to_numpy()


def aligned(path: Path, solution: pd.DataFrame) -> np.ndarray:
    sub = pd.read_csv(path, dtype={"row_id": str}).set_index("row_id")
    return sub.loc[solution["row_id"], [c for c in solution.columns if c != "row_id"]].to_numpy(float)


def bench_round0(teacher: Path | None) -> None:
    """The SED model before any training (BirdNET's body, its classifier as the head), predicting the labelled
    soundscapes like `birdsed infer`: 32-kHz decode resampled inside the model vs a 48-kHz decode."""
    from birdsed.cli import main
    from birdsed.models.build import build_model, save_checkpoint
    from birdsed.training.finetune import prepare_model

    solution, _ = labelled()
    classes = [c for c in solution.columns if c != "row_id"]
    y = solution[classes].to_numpy(float)
    known = None
    if teacher is not None:
        t = read_teacher(teacher / "test_soundscapes.csv", classes).loc[solution["row_id"]]
        known = np.flatnonzero(np.isfinite(t.to_numpy(float)).all(axis=0))
        print(f"BirdNET alone (birdsed teacher): {macro(y, t.to_numpy(float), known):.3f} on its {len(known)} classes")
    with tempfile.TemporaryDirectory() as tmp:
        for rate, clip_weights in ((32000, (0.5, 1.0)), (48000, (0.5,))):
            cfg = load_config(RECIPE, [f"audio.sample_rate={rate}", f"data.root={MINI}"])
            taxonomy = pd.read_csv(MINI / "taxonomy.csv", dtype=str)["primary_label"].tolist()
            model = build_model(cfg, len(taxonomy))
            prepare_model(model, taxonomy, cfg)
            ckpt = Path(tmp) / f"round0_{rate}.pt"
            save_checkpoint(ckpt, model.eval(), cfg, taxonomy)
            for clip_weight in clip_weights:
                sub = Path(tmp) / f"r0_{rate}_{clip_weight}.csv"
                t0 = time.perf_counter()
                args = ["infer", "--checkpoint", ckpt, "--soundscapes", MINI / "test_soundscapes", "--out", sub,
                        "infer.runtime=onnx", "--no-progress", f"infer.clip_weight={clip_weight}"]  # fmt: skip
                assert main([str(a) for a in args]) == 0
                p = aligned(sub, solution)
                cols = known if known is not None else np.arange(len(classes))
                print(f"round 0 (no training), {rate // 1000} kHz decode, clip_weight {clip_weight}: "
                      f"{macro(y, p, cols):.3f} on BirdNET's classes ({time.perf_counter() - t0:.0f} s)")  # fmt: skip


def seeds_of(folder: Path) -> dict[int, Path]:
    return {int(p.name.removeprefix("seed")): p for p in sorted(folder.glob("seed*")) if p.is_dir()}


def bench_students(
    folder: Path, teacher: Path, baseline: Path | None, agile: Path | None = None, halvings: int = 200
) -> None:
    solution, groups = labelled()
    classes = [c for c in solution.columns if c != "row_id"]
    y = solution[classes].to_numpy(float)
    t = read_teacher(teacher / "test_soundscapes.csv", classes).loc[solution["row_id"]]
    tp = t.to_numpy(float)
    known = np.flatnonzero(np.isfinite(tp).all(axis=0))
    ag = None
    if agile is not None:  # the classes BirdNET lacks are the agile model's, in every entry
        ag = read_teacher(agile / "test_soundscapes.agile.csv", classes).loc[solution["row_id"]].to_numpy(float)
        ref = np.where(np.isfinite(tp), tp, ag)
        print(f"BirdNET where it knows, agile elsewhere: {macro(y, ref, np.arange(len(classes))):.3f} on all classes")
    every = np.arange(len(classes))
    stems = np.unique(groups)
    rng = np.random.default_rng(0)
    splits = []
    for _ in range(halvings):
        pick = rng.permutation(stems)[: len(stems) // 2]
        choose = np.isin(groups, pick)
        splits.append((choose, ~choose))
    rows = []
    for name, runs in [("student", seeds_of(folder)), *([("baseline", seeds_of(baseline))] if baseline else [])]:
        for seed, run in runs.items():
            p = aligned(run / "soundscape_preds.csv", solution)
            if ag is not None:
                p = np.where(np.isfinite(tp), p, ag)
            blended = {w: np.where(np.isfinite(tp), (1 - w) * p + w * np.nan_to_num(tp), p) for w in WEIGHTS}
            oos, chosen, teacher_half, student_half = [], [], [], []
            for a, b in splits:
                w = max(WEIGHTS, key=lambda w: macro(y[a], blended[w][a], every))
                chosen.append(w)
                oos.append(macro(y[b], blended[w][b], every))
                teacher_half.append(macro(y[b], blended[1.0][b], every))
                student_half.append(macro(y[b], p[b], every))
            rows.append({"model": name, "seed": seed, "known": macro(y, p, known), "all": macro(y, p, every),
                         "blend_oos": np.mean(oos), "birdnet_w1_oos": np.mean(teacher_half),
                         "student_oos": np.mean(student_half),
                         "w_chosen": pd.Series(chosen).value_counts(normalize=True).round(2).to_dict()})  # fmt: skip
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for name, g in df.groupby("model"):
        known_s = f"{g['known'].mean():.3f} ± {g['known'].std():.3f}"
        all_s = f"{g['all'].mean():.3f} ± {g['all'].std():.3f}"
        print(f"{name}: {len(g)} seeds; BirdNET's {len(known)} classes {known_s}; all classes {all_s}; blend with "
              f"BirdNET (w chosen on the other half) {g['blend_oos'].mean():.3f} vs BirdNET where it knows a class "
              f"(w=1) {g['birdnet_w1_oos'].mean():.3f} and the student alone {g['student_oos'].mean():.3f} on the same "
              f"halves")  # fmt: skip
    print(f"BirdNET alone on its {len(known)} classes: {macro(y, tp, known):.3f}")


def bench_rounds(folder: Path) -> None:
    """Rounds 1 and 2 against the round before, paired by seed: each ``seed<k>/rounds.csv`` of `folder` (the
    `round2` variant of configs/studies/birdnet_rounds.yaml), last-epoch soundscape AUC, with a 95 % interval over
    the seeds (t with n-1 degrees of freedom)."""
    from scipy import stats

    rows = {
        seed: pd.read_csv(run / "rounds.csv").set_index("round")["soundscape_auc"]
        for seed, run in seeds_of(folder).items()
    }
    table = pd.DataFrame(rows).T.sort_index()
    table.columns = [f"round {c}" for c in table.columns]
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    for a, b in zip(table.columns[:-1], table.columns[1:], strict=True):
        d = (table[b] - table[a]).dropna()
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        print(f"{b} - {a}: {d.mean():+.4f} (per seed {', '.join(f'{x:+.4f}' for x in d)}); 95 % over "
              f"{len(d)} seeds [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}]")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", action="store_true")
    ap.add_argument("--port-chunks", type=int, default=25)
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--round0", action="store_true")
    ap.add_argument("--teacher", type=Path)
    ap.add_argument("--students", type=Path)
    ap.add_argument("--baseline", type=Path)
    ap.add_argument("--agile", type=Path, help="an agile folder: its scores where BirdNET has none")
    ap.add_argument("--rounds", type=Path, help="a folder of seed<k> pseudo folders (rounds.csv)")
    args = ap.parse_args()
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}")
    if args.port:
        bench_port(args.port_chunks)
    if args.speed:
        bench_speed()
    if args.round0:
        bench_round0(args.teacher)
    if args.rounds:
        bench_rounds(args.rounds)
    if args.students:
        if args.teacher is None:
            ap.error("--students needs --teacher")
        bench_students(args.students, args.teacher, args.baseline, args.agile)


if __name__ == "__main__":
    main()
