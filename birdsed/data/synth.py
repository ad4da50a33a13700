"""A synthetic BirdCLEF-format dataset: the embedded default that demos and tests train on.

Each class is a procedurally generated vocalisation family — a frequency band, a frequency-modulation shape, a
note rhythm or trill rate, harmonics — with per-call variation; a few classes are non-birds (an insect-like
stridulation, a frog-like pulsed croak) with numeric labels, as in BirdCLEF 2025. Focal recordings are clean and
close, with the odd secondary species; one-minute soundscapes hold several species, distance-filtered at low SNR
in background noise. That gap between clean focal audio and noisy soundscapes is what makes pseudo-labelling
the unlabelled ``train_soundscapes`` worth doing. Everything is deterministic per seed.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import fft, signal

from birdsed.config import InferConfig
from birdsed.errors import ConfigError
from birdsed.outputs import die_with_parent
from birdsed.ownership import check_dir_output, mark_output, staged_dir

SR = 32000
WINDOW_SECONDS = round(InferConfig().window_seconds)  # labelled windows, as the competition scores them
SHAPES = ("up", "down", "vibrato", "flat", "hook", "trill")


@dataclass(frozen=True)
class ClassSpec:
    """The generative recipe of one class."""

    label: str
    group: str  # Aves | Insecta | Amphibia
    f0: float  # centre frequency of the fundamental, Hz
    sweep: float  # relative frequency excursion of the FM shape
    shape: str  # one of SHAPES, or "pulse" for non-birds
    note_seconds: float
    gap_seconds: float
    notes: int  # notes per phrase
    harmonics: int
    pulse_rate: float  # Hz; amplitude pulsing (trills, insects, frogs)


def make_classes(n: int, seed: int) -> list[ClassSpec]:
    """`n` distinct class recipes; about one in six is a non-bird with a numeric label."""
    if n < 2:
        raise ConfigError(f"--classes: need at least 2 classes, got {n}")
    rng = np.random.default_rng(seed)
    n_other = max(1, n // 6)
    n_birds = n - n_other
    bands = np.geomspace(1500, 8500, n_birds)
    rng.shuffle(bands)
    specs = []
    for i in range(n_birds):
        shape = SHAPES[i % len(SHAPES)]
        specs.append(
            ClassSpec(
                label=f"synbrd{i + 1:02d}",
                group="Aves",
                f0=float(bands[i]),
                sweep=float(rng.uniform(0.15, 0.45)),
                shape=shape,
                note_seconds=float(rng.uniform(0.08, 0.45)),
                gap_seconds=float(rng.uniform(0.05, 0.3)),
                notes=int(rng.integers(1, 6)),
                harmonics=int(rng.integers(1, 4)),
                pulse_rate=float(rng.uniform(18, 40)) if shape == "trill" else 0.0,
            )
        )
    for j in range(n_other):
        insect = j % 2 == 0
        specs.append(
            ClassSpec(
                label=str(1_000_000 + 7919 * (j + 1) + int(rng.integers(0, 1000))),
                group="Insecta" if insect else "Amphibia",
                f0=float(rng.uniform(5500, 9000) if insect else rng.uniform(350, 900)),
                sweep=0.02,
                shape="pulse",
                note_seconds=float(rng.uniform(1.0, 2.5) if insect else rng.uniform(0.3, 0.6)),
                gap_seconds=float(rng.uniform(0.3, 1.0)),
                notes=1 if insect else int(rng.integers(2, 5)),
                harmonics=1 if insect else 4,
                pulse_rate=float(rng.uniform(40, 90) if insect else rng.uniform(12, 25)),
            )
        )
    return specs


def call(spec: ClassSpec, rng: np.random.Generator) -> np.ndarray:
    """One note of `spec` with per-call variation (pitch ±7 %, duration ±15 %), peak 1, shape (n,)."""
    dur = spec.note_seconds * rng.uniform(0.85, 1.15)
    f0 = spec.f0 * rng.uniform(0.93, 1.07)
    n = max(16, int(dur * SR))
    u = np.linspace(0.0, 1.0, n, endpoint=False)
    s = spec.sweep
    if spec.shape == "up":
        freq = f0 * (1 - s / 2 + s * u)
    elif spec.shape == "down":
        freq = f0 * (1 + s / 2 - s * u)
    elif spec.shape == "vibrato":
        freq = f0 * (1 + s / 2 * np.sin(2 * np.pi * 6 * u))
    elif spec.shape == "hook":
        freq = f0 * (1 + s * (u - 0.5) ** 2 * 4 - s / 2)
    else:  # flat, trill, pulse
        freq = f0 * (1 + 0.02 * np.sin(2 * np.pi * u))
    phase = 2 * np.pi * np.cumsum(freq) / SR
    wave = sum((0.6**h) * np.sin((h + 1) * phase) for h in range(spec.harmonics) if (h + 1) * f0 < SR / 2 - 500)
    env = np.sin(np.pi * u) ** 0.5
    if spec.pulse_rate > 0:
        t = np.arange(n) / SR
        env = env * (0.5 + 0.5 * np.sin(2 * np.pi * spec.pulse_rate * t)) ** 2
    out = np.asarray(wave) * env
    return (out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def phrase(spec: ClassSpec, rng: np.random.Generator) -> np.ndarray:
    """A phrase: `spec.notes` calls separated by jittered gaps, shape (n,)."""
    parts = []
    for k in range(spec.notes):
        parts.append(call(spec, rng))
        if k < spec.notes - 1:
            parts.append(np.zeros(int(spec.gap_seconds * rng.uniform(0.8, 1.2) * SR), dtype=np.float32))
    return np.concatenate(parts)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise, shape (n,)."""
    m = fft.next_fast_len(n)  # an awkward length can make the FFT 100x slower
    spec = fft.rfft(rng.standard_normal(m))
    f = np.arange(len(spec))
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = fft.irfft(spec, m)[:n]
    return (x / (x.std() + 1e-12)).astype(np.float32)


def place_track(
    spec: ClassSpec, seconds: float, rng: np.random.Generator, bouts: int, density: float, whole: bool = False
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A track of `seconds` holding `bouts` bouts of phrases of `spec`; returns it and its call intervals (s).

    `whole`: one bout from the first half-second to the end, as in a focal recording of a singing bird.
    """
    n = int(seconds * SR)
    track = np.zeros(n, dtype=np.float32)
    events: list[tuple[float, float]] = []
    for _ in range(1 if whole else bouts):
        t = rng.uniform(0, 0.5) if whole else rng.uniform(0, seconds - 1.0)
        bout_len = seconds if whole else rng.uniform(3.0, 12.0)
        end = min(seconds, t + bout_len)
        while t < end:
            p = phrase(spec, rng) * rng.uniform(0.6, 1.0)
            i = int(t * SR)
            j = min(n, i + len(p))
            track[i:j] += p[: j - i]
            events.append((t, j / SR))
            t += len(p) / SR + rng.exponential(1.0 / density)
    return track, events


def distance_filter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Far-away sound: a random low-pass (2–9 kHz cut-off) as air absorbs high frequencies."""
    sos = signal.butter(2, rng.uniform(2000, 9000), btype="low", fs=SR, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def write_audio(path: Path, wave: np.ndarray, sr: int) -> None:
    """Write by file suffix; long OGG files are written in chunks (libsndfile can crash in one call)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".ogg": "OGG", ".flac": "FLAC", ".wav": "WAV", ".mp3": "MP3"}[path.suffix]
    wave = np.clip(wave, -0.99, 0.99).astype(np.float32)
    with sf.SoundFile(str(path), "w", sr, 1, format=fmt) as f:
        for i in range(0, len(wave), sr * 10):
            f.write(wave[i : i + sr * 10])


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def make_recording(args: tuple) -> dict:
    """Write one focal recording; returns its train.csv row. Worker-process entry point."""
    out, specs, ci, k, seed = args
    spec: ClassSpec = specs[ci]
    rng = _rng(seed, 1, ci, k)
    seconds = float(rng.uniform(6, 18))
    track, _ = place_track(spec, seconds, rng, bouts=1, density=1.2, whole=True)
    wave = 0.5 * track + 0.01 * pink_noise(len(track), rng)
    secondary: list[str] = []
    if rng.random() < 0.2:
        other = int(rng.choice([j for j in range(len(specs)) if j != ci]))
        extra, _ = place_track(specs[other], seconds, rng, bouts=1, density=0.8)
        wave += 0.2 * distance_filter(extra, rng)
        secondary.append(specs[other].label)
    # the focal set mixes rates and formats, as real archives do
    sr, ext = [(32000, ".ogg"), (32000, ".ogg"), (44100, ".ogg"), (48000, ".flac"), (22050, ".wav"), (32000, ".mp3")][
        int(rng.integers(0, 6))
    ]
    wave = signal.resample_poly(wave, sr, SR).astype(np.float32) if sr != SR else wave
    filename = f"{spec.label}/SYN{ci:02d}{k:03d}{ext}"
    write_audio(Path(out) / "train_audio" / filename, wave, sr)
    return {
        "primary_label": spec.label,
        "secondary_labels": str(secondary if secondary else [""]),
        "type": "['song']" if spec.group == "Aves" else "['call']",
        "filename": filename,
        "collection": "SYN",
        "rating": f"{float(rng.integers(3, 6)):.1f}",
        "scientific_name": f"Synthetica {spec.label}",
        "common_name": f"Synthetic {spec.group} {spec.label}",
        "author": "birdsed.synth",
        "license": "CC0",
    }


def make_soundscape(args: tuple) -> dict:
    """Write one one-minute soundscape; returns its per-class call intervals. Worker-process entry point."""
    path, specs, seed, salt, seconds = args
    rng = _rng(seed, 2, salt)
    n = int(seconds * SR)
    wind = signal.sosfilt(signal.butter(2, 300, fs=SR, output="sos"), rng.standard_normal(n)).astype(np.float32)
    noise = 0.02 * pink_noise(n, rng) + 0.03 * wind / (wind.std() + 1e-9) * rng.uniform(0.3, 1.5)
    wave = noise.astype(np.float32)
    present = rng.choice(len(specs), size=min(len(specs), int(rng.integers(2, 6))), replace=False)
    events: dict[str, list[tuple[float, float]]] = {}
    for ci in present:
        track, ev = place_track(specs[ci], seconds, rng, bouts=int(rng.integers(1, 4)), density=0.7)
        snr_gain = 0.02 * 10 ** (rng.uniform(-4, 10) / 20)  # calls from about -4 to +10 dB against the noise floor
        wave += snr_gain * distance_filter(track, rng)
        events[specs[ci].label] = ev
    write_audio(Path(path), wave / max(1.0, np.abs(wave).max() / 0.9), SR)
    return {"file": Path(path).name, "events": events}


def window_labels(events: dict[str, list[tuple[float, float]]], classes: list[str], seconds: float) -> np.ndarray:
    """0/1 labels of each 5-s window: a class is present if its calls overlap the window by ≥ 0.1 s.

    Returns:
        shape (n_windows, n_classes), int.
    """
    n_win = int(seconds // WINDOW_SECONDS)
    y = np.zeros((n_win, len(classes)), dtype=np.int64)
    for label, ev in events.items():
        c = classes.index(label)
        for w in range(n_win):
            lo, hi = w * WINDOW_SECONDS, (w + 1) * WINDOW_SECONDS
            overlap = sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in ev)
            y[w, c] = int(overlap >= 0.1)
    return y


def make_dataset(
    out: str | Path,
    n_classes: int = 12,
    seed: int = 0,
    files_per_class: int = 8,
    train_soundscapes: int = 20,
    test_soundscapes: int = 10,
    soundscape_seconds: float = 60.0,
    workers: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a complete BirdCLEF-format folder at `out` and return it.

    Writes train.csv, taxonomy.csv, train_audio/, train_soundscapes/, test_soundscapes/, sample_submission.csv and
    test_solution.csv (the true 0/1 label of every 5-s test window), plus synth.json with the class recipes.
    The folder is built beside `out` and moved into place when complete; an existing non-empty `out` is an error
    unless `overwrite`, and then it is replaced only once the new one is complete.
    """
    out = Path(out)
    # only a folder birdsed synth wrote (its marker, no file added since) is ever replaced, and only with overwrite
    check_dir_output(out, kind="synth", overwrite=overwrite, create=False)
    specs = make_classes(n_classes, seed)  # bad arguments fail before anything is written
    with staged_dir(out) as tmp:
        mark_output(tmp, "synth")
        _write_dataset(
            tmp, specs, seed, files_per_class, train_soundscapes, test_soundscapes, soundscape_seconds, workers
        )
    return out


def _write_dataset(
    out: Path,
    specs: list[ClassSpec],
    seed: int,
    files_per_class: int,
    train_soundscapes: int,
    test_soundscapes: int,
    soundscape_seconds: float,
    workers: int,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    classes = [s.label for s in specs]
    jobs_rec = [(str(out), specs, ci, k, seed) for ci in range(len(specs)) for k in range(files_per_class)]
    jobs_train = [
        (out / "train_soundscapes" / f"H0_SYN_{i:04d}.ogg", specs, seed, 10_000 + i, soundscape_seconds)
        for i in range(train_soundscapes)
    ]
    jobs_test = [
        (out / "test_soundscapes" / f"soundscape_{i:04d}.ogg", specs, seed, 20_000 + i, soundscape_seconds)
        for i in range(test_soundscapes)
    ]
    with ProcessPoolExecutor(max_workers=workers or None, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        rows = list(pool.map(make_recording, jobs_rec, chunksize=4))
        list(pool.map(make_soundscape, jobs_train))
        tests = list(pool.map(make_soundscape, jobs_test))

    pd.DataFrame(rows).to_csv(out / "train.csv", index=False)
    pd.DataFrame(
        {
            "primary_label": classes,
            "inat_taxon_id": [str(100 + i) for i in range(len(specs))],
            "scientific_name": [f"Synthetica {c}" for c in classes],
            "common_name": [f"Synthetic {s.group} {s.label}" for s in specs],
            "class_name": [s.group for s in specs],
        }
    ).to_csv(out / "taxonomy.csv", index=False)
    row_ids, labels = [], []
    for t in tests:
        y = window_labels(t["events"], classes, soundscape_seconds)
        stem = Path(t["file"]).stem
        row_ids += [f"{stem}_{(w + 1) * WINDOW_SECONDS}" for w in range(len(y))]
        labels.append(y)
    y_all = np.concatenate(labels) if labels else np.zeros((0, len(classes)), dtype=np.int64)
    solution = pd.DataFrame(y_all, columns=classes)
    solution.insert(0, "row_id", row_ids)
    solution.to_csv(out / "test_solution.csv", index=False)
    sample = pd.DataFrame(np.full(y_all.shape, round(1 / len(classes), 6)), columns=classes)
    sample.insert(0, "row_id", row_ids)
    sample.to_csv(out / "sample_submission.csv", index=False)
    (out / "synth.json").write_text(json.dumps({"seed": seed, "classes": [asdict(s) for s in specs]}, indent=1))
