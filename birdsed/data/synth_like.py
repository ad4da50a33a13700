"""A synthetic folder with BirdCLEF+ 2026's *shape* at a fraction of its size (``birdsed synth --like birdclef2026``).

For measuring cost, not accuracy (``benchmarks/bench_scale.py``). At scale S = 1 it has what the competition had:
234 classes — 162 birds with eBird-style codes, amphibians, mammals, a reptile and insects with numeric iNat ids,
25 ``47158sonNN`` insect sonotypes — of which 28 (the sonotypes and 3 others) have no focal recording; 35,549 focal
recordings over the other 206 with a long tail (the commonest class ~500, many with a handful), of realistic
lengths (log-normal, median 25 s, 2 s to 10 min), Xeno-canto and iNaturalist names; 10,658 one-minute training
soundscapes named like the real ones (``BC2026_Train_NNNN_SNN_YYYYMMDD_HHMMSS.ogg``), 66 of them labelled in a
``train_soundscapes_labels.csv`` with the real file's quirks (every row twice, ``HH:MM:SS`` times); ~600 one-minute
test soundscapes (the hidden test's size; the real folder ships none) and a 3-row sample submission. At scale S
every count is multiplied by S (at least one of each kind; every focal class keeps a recording). The audio is the
procedural vocalisations of :mod:`birdsed.data.synth`, so every class sounds different.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.data.synth import SR, WINDOW_SECONDS, ClassSpec, make_classes, pink_noise, place_track, write_audio
from birdsed.errors import ConfigError
from birdsed.outputs import die_with_parent, progress
from birdsed.ownership import check_dir_output, mark_output, staged_dir

# BirdCLEF+ 2026 at S = 1
RECORDINGS, TRAIN_SOUNDSCAPES, LABELLED, TEST_SOUNDSCAPES = 35_549, 10_658, 66, 600
GROUPS = (("Aves", 162), ("Amphibia", 35), ("Mammalia", 7), ("Reptilia", 1), ("Insecta", 4))
SONOTYPES, SOUNDSCAPE_ONLY_OTHERS, MAX_PER_CLASS = 25, 3, 500
LIKE = ("birdclef2026",)


def like_classes(seed: int) -> pd.DataFrame:
    """The 234 classes: primary_label, class_name, scientific_name, common_name, inat_taxon_id, focal (bool)."""
    rng = np.random.default_rng(seed)
    rows, used = [], set()
    for group, n in GROUPS:
        for _ in range(n):
            while True:  # eBird-style codes for birds (6 letters + 1), numeric iNat ids for the rest
                label = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) + "1"
                label = label if group == "Aves" else str(int(rng.integers(10_000, 2_000_000)))
                if label not in used:
                    break
            used.add(label)
            rows.append((label, group))
    rows += [(f"47158son{k:02d}", "Insecta") for k in range(1, SONOTYPES + 1)]
    table = pd.DataFrame(rows, columns=["primary_label", "class_name"])
    table["scientific_name"] = [f"Synthetica sp{i}" for i in range(len(table))]
    table["common_name"] = [f"Synthetic {g} {i}" for i, g in enumerate(table["class_name"])]
    table["inat_taxon_id"] = [
        lab if lab.isdigit() else str(100_000 + i) for i, lab in enumerate(table["primary_label"])
    ]
    others = rng.choice(np.flatnonzero(table["class_name"] != "Aves")[:-SONOTYPES], SOUNDSCAPE_ONLY_OTHERS, False)
    table["focal"] = True
    table.loc[table["primary_label"].str.startswith("47158son"), "focal"] = False
    table.loc[others, "focal"] = False
    return table


def per_class_counts(n_focal: int, scale: float, seed: int) -> np.ndarray:
    """Recordings per focal class: log-normal quantiles (σ = 1.5: a long tail of classes with a handful), the
    commonest capped at 500, summing to about 35,549 (then × `scale`, at least one each), in a seeded order."""
    from scipy.special import ndtri

    z = ndtri((np.arange(n_focal) + 0.5) / n_focal)
    lo, hi = 0.0, 10.0  # the median's log, by bisection, so that the capped counts sum to the competition's
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.minimum(np.exp(mid + 1.5 * z), MAX_PER_CLASS).sum() < RECORDINGS else (lo, mid)
    counts = np.minimum(np.exp(lo + 1.5 * z), MAX_PER_CLASS) * scale
    return np.random.default_rng(seed).permutation(np.maximum(1, np.round(counts)).astype(int))


def _recording(args: tuple) -> dict:
    """Write one focal recording; returns its train.csv row (worker entry point)."""
    out, spec, label, group, k, seed, lengths = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11, k]))
    seconds = float(np.clip(rng.lognormal(math.log(25.0), 0.9), 2.0, 600.0)) * lengths
    track, _ = place_track(spec, seconds, rng, bouts=1, density=1.0, whole=True)
    xc = rng.random() < 0.7
    name = f"{label}/{'XC' if xc else 'iNat'}{100_000 + k}.ogg"
    write_audio(Path(out) / "train_audio" / name, 0.5 * track + 0.01 * pink_noise(len(track), rng), SR)
    return {"primary_label": label, "secondary_labels": "['']", "type": "['song']" if group == "Aves" else "['']",
            "filename": name, "collection": "XC" if xc else "iNat", "rating": "4.0" if xc else "0.0",
            "seconds": round(seconds, 2)}  # fmt: skip


def _soundscape(args: tuple) -> dict:
    """Write one one-minute soundscape with 2-5 classes at low SNR; returns its name and per-class calls."""
    path, specs, labels, seed, salt = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, 12, salt]))
    wave = 0.02 * pink_noise(60 * SR, rng)
    events = {}
    for ci in rng.choice(len(specs), int(rng.integers(2, 6)), replace=False):
        track, ev = place_track(specs[ci], 60.0, rng, bouts=int(rng.integers(1, 4)), density=0.7)
        wave += 0.02 * 10 ** (rng.uniform(-2, 10) / 20) * track
        events[labels[ci]] = ev
    write_audio(Path(path), wave / max(1.0, float(np.abs(wave).max()) / 0.9), SR)
    return {"file": Path(path).name, "events": events}


def make_like(
    out: str | Path,
    like: str,
    scale: float,
    seed: int = 0,
    workers: int = 0,
    overwrite: bool = False,
    lengths: float = 1.0,
) -> Path:
    """Write the folder (see the module's text) at `out` and return it; built beside it and moved into place.

    Args:
        lengths: every focal recording's length × this (1: realistic; tests shorten them).

    Raises:
        ConfigError: an unknown `like` or a scale outside (0, 1].
    """
    if like not in LIKE:
        raise ConfigError(f"--like: one of {', '.join(LIKE)}, got {like!r}")
    if not 0 < scale <= 1:
        raise ConfigError(f"--scale: a fraction in (0, 1], got {scale}")
    out = Path(out)
    check_dir_output(out, kind="synth", overwrite=overwrite, create=False)
    with staged_dir(out) as tmp:
        mark_output(tmp, "synth")
        _write_like(tmp, scale, seed, workers, lengths)
    return out


def _write_like(out: Path, scale: float, seed: int, workers: int, lengths: float) -> None:
    taxonomy = like_classes(seed)
    labels = taxonomy["primary_label"].tolist()
    specs: list[ClassSpec] = make_classes(len(labels), seed)  # one sound recipe per class (their own labels unused)
    focal = np.flatnonzero(taxonomy["focal"].to_numpy())
    counts = per_class_counts(len(focal), scale, seed)
    which = np.repeat(focal, counts)  # the class of each recording
    groups = taxonomy["class_name"].to_numpy()
    jobs = [(str(out), specs[ci], labels[ci], groups[ci], k, seed, lengths) for k, ci in enumerate(which)]
    n_train, n_test = (max(1, round(n * scale)) for n in (TRAIN_SOUNDSCAPES, TEST_SOUNDSCAPES))
    rng = np.random.default_rng(seed)
    names = [f"BC2026_Train_{i + 1:04d}_S{int(rng.integers(1, 24)):02d}_2025{int(rng.integers(1, 13)):02d}"
             f"{int(rng.integers(1, 29)):02d}_{int(rng.integers(0, 24)):02d}{int(rng.integers(0, 60)):02d}00.ogg"
             for i in range(n_train)]  # fmt: skip
    scapes = [(out / "train_soundscapes" / n, specs, labels, seed, i) for i, n in enumerate(names)]
    tests = [(out / "test_soundscapes" / f"BC2026_Test_{i:04d}.ogg", specs, labels, seed, 10**6 + i)
             for i in range(n_test)]  # fmt: skip
    with ProcessPoolExecutor(workers or None, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        rows = list(progress(pool.map(_recording, jobs, chunksize=8), len(jobs), "synth recordings", "file"))
        scape_events = list(
            progress(pool.map(_soundscape, scapes, chunksize=4), len(scapes), "synth soundscapes", "file")
        )
        list(progress(pool.map(_soundscape, tests, chunksize=4), len(tests), "synth test soundscapes", "file"))
    train = pd.DataFrame(rows).merge(taxonomy.drop(columns="focal"), on="primary_label")
    train.drop(columns="seconds").to_csv(out / "train.csv", index=False)
    taxonomy.drop(columns="focal").to_csv(out / "taxonomy.csv", index=False)
    lines = []
    for s in scape_events[: max(1, round(LABELLED * scale))]:
        for w in range(60 // WINDOW_SECONDS):
            lo, hi = w * WINDOW_SECONDS, (w + 1) * WINDOW_SECONDS
            here = [c for c, ev in s["events"].items() if any(min(b, hi) - max(a, lo) >= 0.1 for a, b in ev)]
            if here:  # the real file lists every labelled window twice, times as HH:MM:SS
                lines += [f"{s['file']},00:00:{lo:02d},00:00:{hi:02d},{';'.join(here)}"] * 2
    (out / "train_soundscapes_labels.csv").write_text("filename,start,end,primary_label\n" + "\n".join(lines) + "\n")
    stem = Path(tests[0][0]).stem
    sample = pd.DataFrame(np.full((3, len(labels)), round(1 / len(labels), 6)), columns=labels)
    sample.insert(0, "row_id", [f"{stem}_{5 * (k + 1)}" for k in range(3)])
    sample.to_csv(out / "sample_submission.csv", index=False)
