import hashlib

import numpy as np
import pandas as pd
import torch

from birdsed.data.audio import load_audio
from birdsed.data.folder import load_birdclef
from birdsed.data.synth import make_classes, make_dataset
from birdsed.models.frontend import MelFrontend


def digest(root):
    """Hash of every table's bytes and every audio file's decoded samples (Ogg streams carry a random serial)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(load_audio(p).tobytes() if p.suffix in (".ogg", ".mp3", ".flac", ".wav") else p.read_bytes())
    return h.hexdigest()


def test_folder_is_complete_and_valid(tiny_root):
    data = load_birdclef(tiny_root)
    assert len(data.classes) == 6 and len(data.train) == 24
    assert len(data.train_soundscapes) == 3 and len(data.test_soundscapes) == 3
    groups = dict(zip(data.taxonomy["primary_label"], data.taxonomy["class_name"], strict=True))
    non_birds = [c for c, g in groups.items() if g != "Aves"]
    assert non_birds and all(c.isdigit() for c in non_birds)
    sol = pd.read_csv(tiny_root / "test_solution.csv", dtype={"row_id": str})
    sub = pd.read_csv(tiny_root / "sample_submission.csv", dtype={"row_id": str})
    assert list(sol.columns) == ["row_id", *data.classes] == list(sub.columns)
    assert len(sol) == 3 * 6 and sol["row_id"].iat[0] == "soundscape_0000_5"
    assert sol.iloc[:, 1:].to_numpy().sum() > 0
    assert any(data.train["secondary"].map(len) > 0) or len(data.train) < 30
    rates = {p.suffix for p in (tiny_root / "train_audio").rglob("*.*")}
    assert len(rates) >= 2  # mixed formats


def test_deterministic_per_seed(tmp_path):
    kw = dict(n_classes=3, files_per_class=2, train_soundscapes=1, test_soundscapes=1, soundscape_seconds=10.0)
    a = make_dataset(tmp_path / "a", seed=7, **kw)
    b = make_dataset(tmp_path / "b", seed=7, **kw)
    c = make_dataset(tmp_path / "c", seed=8, **kw)
    assert digest(a) == digest(b) != digest(c)


def test_classes_are_distinguishable_from_their_spectra(tiny_root):
    """Nearest-centroid on mean log-mel spectra separates held-out focal recordings far above chance."""
    data = load_birdclef(tiny_root)
    front = MelFrontend(n_mels=64, normalize="none")
    feats = []
    for f in data.train["filename"]:
        mel = front(torch.from_numpy(load_audio(tiny_root / "train_audio" / f))[None])[0, 0]  # (64, T)
        mel = mel - mel.median(dim=1, keepdim=True).values  # remove the stationary background
        v = torch.quantile(mel, 0.9, dim=1).numpy()  # per-band level of the calls
        feats.append(v / np.linalg.norm(v))
    feats = np.stack(feats)
    labels = data.train["primary_label"].to_numpy()
    correct = 0
    for i in range(len(labels)):
        others = np.arange(len(labels)) != i
        cents = {c: feats[others & (labels == c)].mean(0) for c in data.classes}
        pred = min(cents, key=lambda c: np.linalg.norm(feats[i] - cents[c]))
        correct += pred == labels[i]
    assert correct / len(labels) > 0.75  # chance is 1/6


def test_soundscape_labels_follow_the_calls(tiny_root):
    """Labelled windows carry more energy in their species' band than unlabelled ones."""
    specs = {s.label: s for s in make_classes(6, 3)}
    sol = pd.read_csv(tiny_root / "test_solution.csv", dtype={"row_id": str})
    x = load_audio(tiny_root / "test_soundscapes" / "soundscape_0000.ogg")
    rows = sol[sol["row_id"].str.startswith("soundscape_0000_")]
    checked = 0
    for label, spec in specs.items():
        if spec.group != "Aves" or rows[label].nunique() < 2:
            continue
        energy = []
        for w in range(len(rows)):
            seg = x[w * 160000 : (w + 1) * 160000]
            spec_mag = np.abs(np.fft.rfft(seg))
            f = np.fft.rfftfreq(len(seg), 1 / 32000)
            band = (f > spec.f0 * 0.7) & (f < spec.f0 * 1.3)
            energy.append(spec_mag[band].mean())
        energy = np.array(energy)
        pos = rows[label].to_numpy() == 1
        assert energy[pos].mean() > energy[~pos].mean()
        checked += 1
    assert checked >= 1
