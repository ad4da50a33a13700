import logging
import shutil
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from birdsed.cli import main
from birdsed.config import ConfigError, InferConfig
from birdsed.data.folder import DataError, row_ids
from birdsed.inference.ensemble import Member, combine, load_member, torch_runner
from birdsed.inference.export import export, openvino_model, runtime_runner
from birdsed.inference.infer import InMemoryAudio, StreamingAudio, WindowSpec, predict_group, read_audio, smooth
from birdsed.inference.submit import infer_folder, worker_count, write_submission
from birdsed.models import load_checkpoint
from birdsed.scoring.metrics import score_files
from birdsed.training.train import cpu_has_bf16


class Identity(torch.nn.Module):
    """A front-end that passes the waveform through as a (B, 1, 1, N) 'spectrogram'."""

    def forward(self, wave):
        return wave[:, None, None, :]


def mean_runner(frames: int):
    """A fake model: clip logit = mean of the chunk, frame logits = means of `frames` equal parts."""

    def run(mel):
        x = mel[:, 0, 0, :].numpy().astype(np.float64)
        b, n = x.shape
        return x.mean(1, keepdims=True), x.reshape(b, frames, n // frames).mean(-1)[..., None]

    return run


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def ramp(n=200):
    return np.arange(n, dtype=np.float32) / n


def test_windows_and_shift_tta_cut_where_they_should():
    wave = ramp()
    spec = WindowSpec(sample_rate=10, window_seconds=5, context_seconds=5, shifts=(0.0, -1.0, 1.0), batch_size=3)
    got = predict_group(InMemoryAudio(wave), spec, Identity(), [(mean_runner(5), "sigmoid")])[0]
    padded = np.concatenate([np.zeros(50), wave, np.zeros(50)])
    expect = np.mean(
        [[sigmoid(padded[50 + w * 50 + s : 50 + w * 50 + s + 50].mean()) for w in range(4)] for s in (0, -10, 10)],
        axis=0,
    )
    assert got.shape == (4, 1)
    np.testing.assert_allclose(got[:, 0], expect, rtol=1e-6)
    assert row_ids("soundscape_0001", 4, 5.0)[-1] == "soundscape_0001_20"


def test_max_over_shifts_and_smoothing():
    spec = WindowSpec(sample_rate=10, shifts=(0.0, 2.0), shift_reduce="max", smoothing=(1.0, 2.0, 1.0))
    got = predict_group(InMemoryAudio(ramp()), spec, Identity(), [(mean_runner(5), "sigmoid")])[0]
    plain = WindowSpec(sample_rate=10, shifts=(0.0, 2.0), shift_reduce="max")
    raw = predict_group(InMemoryAudio(ramp()), plain, Identity(), [(mean_runner(5), "sigmoid")])[0]
    np.testing.assert_allclose(got, smooth(raw, (1.0, 2.0, 1.0)))
    s = smooth(np.array([[0.0], [3.0], [6.0]]), (1.0, 2.0, 1.0))
    np.testing.assert_allclose(s[:, 0], [(0 * 2 + 3) / 3, (0 + 6 + 6) / 4, (3 + 12) / 3])


def test_longer_context_averages_overlapping_frames():
    """context 15 s around 5-s windows: a window's frame score is the max of its own frames' averages."""
    wave = ramp()
    spec = WindowSpec(sample_rate=10, window_seconds=5, context_seconds=15, clip_weight=0.0)
    got = predict_group(InMemoryAudio(wave), spec, Identity(), [(mean_runner(6), "sigmoid")])[0]
    # frames are 25 samples long; the ramp rises, so the max is the window's second half
    expect = [sigmoid(wave[w * 50 + 25 : w * 50 + 50].mean()) for w in range(4)]
    np.testing.assert_allclose(got[:, 0], expect, rtol=1e-6)


def test_zero_shift_equals_plain_inference(trained_run):
    _, _, run_dir = trained_run
    model, _cfg, _ = load_checkpoint(run_dir)
    wave = np.random.default_rng(0).standard_normal(32000 * 15).astype(np.float32) * 0.1
    member = load_member(run_dir, 1.0, "torch", "cpu")
    runners = [(member.runner, member.activation)]
    got = predict_group(InMemoryAudio(wave), WindowSpec(shifts=(0.0,), shared_stft=False), model.frontend, runners)[0]
    with torch.no_grad():
        direct = torch.sigmoid(model(torch.from_numpy(wave.reshape(-1, 160000)))["clip_logits"]).numpy()
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)
    # one STFT per file: windows snap to the nearest hop (<= 8 ms), chunk edges see real audio, not padding
    shared = predict_group(InMemoryAudio(wave), WindowSpec(shifts=(0.0,)), model.frontend, runners)[0]
    assert np.abs(shared - direct).max() < 0.05 and np.corrcoef(shared.ravel(), direct.ravel())[0, 1] > 0.99


def test_shared_stft_chunks_equal_their_own_stft_when_aligned(trained_run):
    """Away from the chunk edges, a chunk cut from the file's STFT is the chunk's own STFT."""
    model, _, _ = load_checkpoint(trained_run[2])
    front = model.frontend
    wave = np.random.default_rng(2).standard_normal(32000 * 12).astype(np.float32)
    from birdsed.inference.infer import _SharedMel

    shared = _SharedMel(InMemoryAudio(wave), front, 32000 * 5, "cpu")
    start = 512 * 100  # hop-aligned
    own = front.power_mel(torch.from_numpy(wave[start : start + 160000])[None])[0]
    index = torch.arange(shared.frames) + 100 + shared.pad
    cut = shared.power[:, index]
    inner = slice(4, -4)  # frames whose window lies inside the chunk
    torch.testing.assert_close(cut[:, inner], own[:, inner], rtol=1e-4, atol=1e-6)


def test_streaming_equals_decoding_whole(tmp_path):
    path = tmp_path / "s.flac"
    sf.write(str(path), np.random.default_rng(1).standard_normal(44100 * 23).astype(np.float32) * 0.1, 44100)
    spec = WindowSpec(shifts=(0.0, -1.5, 1.5), context_seconds=10, clip_weight=0.5, batch_size=2)
    runners = [(mean_runner(8), "sigmoid")]
    whole = read_audio(str(path), 32000, max_whole_seconds=1e9)
    stream = read_audio(str(path), 32000, max_whole_seconds=0)
    assert isinstance(whole, InMemoryAudio) and isinstance(stream, StreamingAudio)
    a = predict_group(whole, spec, Identity(), runners)[0]
    b = predict_group(stream, spec, Identity(), runners)[0]
    assert a.shape == (5, 1)  # 23 s → 4 full windows + a 3-s tail
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_two_hour_file_streams_with_bounded_memory(tmp_path):
    path = tmp_path / "long.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", 8000, 1, format="FLAC") as f:
        for _ in range(12):
            f.write((0.05 * rng.standard_normal(8000 * 600)).astype(np.float32))
    tracemalloc.start()
    audio = read_audio(str(path), 32000, max_whole_seconds=600)
    spec = WindowSpec(shifts=(0.0, 2.5), context_seconds=10, batch_size=32)
    out = predict_group(audio, spec, Identity(), [(mean_runner(10), "sigmoid")])[0]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.shape == (1440, 1)
    assert peak < 150e6, f"peak {peak / 1e6:.0f} MB; the decoded file alone would be 922 MB"


def fake_member(name, classes, weight=1.0):
    return Member(name, None, classes, weight, None, "sigmoid", None)  # type: ignore[arg-type]


def test_ensemble_aligns_classes_by_name_and_weights():
    m1, m2 = fake_member("m1", ["a", "b"], 1.0), fake_member("m2", ["c", "b"], 3.0)
    p1 = np.array([[0.1, 0.2], [0.3, 0.4]])
    p2 = np.array([[0.9, 0.6], [0.7, 0.8]])
    out = combine([p1, p2], [m1, m2], ["a", "b", "c", "d"])
    np.testing.assert_allclose(out[:, 0], [0.1, 0.3])
    np.testing.assert_allclose(out[:, 1], [(0.2 + 3 * 0.6) / 4, (0.4 + 3 * 0.8) / 4])
    np.testing.assert_allclose(out[:, 2], [0.9, 0.7])
    assert np.isnan(out[:, 3]).all()
    spec = combine([p1, p2], [m1, m2], ["a", "b", "c"], specialist=1, specialist_classes=["b"])
    np.testing.assert_allclose(spec[:, 1], [0.6, 0.8])
    ranks = combine([p1, p2], [m1, m2], ["a", "b", "c"], mode="rank")
    assert ranks.min() >= 0 and ranks.max() <= 1 and ranks[1, 0] > ranks[0, 0]


def test_export_matches_torch(trained_run, tmp_path):
    _, _, run_dir = trained_run
    model, _cfg, _ = load_checkpoint(run_dir)
    mel = model.frontend(torch.randn(3, 32000 * 5) * 0.1)
    with torch.no_grad():
        ref = model.forward_mel(mel)
    folder = export(run_dir, tmp_path / "onnx", "onnx")
    clip, frame = runtime_runner(folder, "onnx")(mel)
    np.testing.assert_allclose(clip, ref["clip_logits"].numpy(), atol=1e-4)
    np.testing.assert_allclose(frame, ref["frame_logits"].numpy(), atol=1e-4)
    pytest.importorskip("openvino")
    clip_ov, _ = runtime_runner(folder, "openvino")(mel)
    np.testing.assert_allclose(clip_ov, ref["clip_logits"].numpy(), atol=1e-4)
    longer = model.frontend(torch.randn(2, 32000 * 10) * 0.1)  # the time axis is dynamic too
    with torch.no_grad():
        np.testing.assert_allclose(
            runtime_runner(folder, "onnx")(longer)[0], model.forward_mel(longer)["clip_logits"].numpy(), atol=1e-4
        )


def test_infer_cli_fallback_and_score(trained_run, tiny_root, tmp_path, caplog):
    _, summary, run_dir = trained_run
    folder = tmp_path / "soundscapes"
    shutil.copytree(tiny_root / "test_soundscapes", folder)
    (folder / "broken.ogg").write_bytes(b"OggS" + bytes(100))
    (folder / "empty.wav").write_bytes(b"")
    out = tmp_path / "sub.csv"
    with caplog.at_level(logging.WARNING):
        rc = main(
            [
                "infer",
                "--checkpoint",
                str(run_dir),
                "--soundscapes",
                str(folder),
                "--out",
                str(out),
                "--sample-submission",
                str(tiny_root / "sample_submission.csv"),
                "--no-progress",
                "infer.shared_stft=false",
            ]
        )
    assert rc == 0
    sub = pd.read_csv(out, dtype={"row_id": str})
    assert len(sub) == 3 * 6 + 12 + 12  # 30-s soundscapes; unreadable files get a minute's rows
    assert list(sub.columns) == pd.read_csv(tiny_root / "sample_submission.csv", nrows=0).columns.tolist()
    broken = sub[sub["row_id"].str.startswith("broken_")].iloc[:, 1:].to_numpy()
    assert np.allclose(broken, broken[0]) and broken[0].sum() > 0  # the prior, the same on every row
    assert sum("fallback" in r.getMessage() for r in caplog.records) >= 2
    good = sub[sub["row_id"].str.startswith("soundscape_")]
    good.to_csv(tmp_path / "good.csv", index=False)
    score = score_files(tiny_root / "test_solution.csv", tmp_path / "good.csv")
    # the same windows (per-chunk STFT) the training run scored from its cache (float16) each epoch
    assert score.macro_auc == pytest.approx(summary["soundscape_auc"], abs=0.02)


def test_write_submission_refuses_bad_values(tmp_path):
    sub = pd.DataFrame({"row_id": ["a_5", "a_10"], "x": [0.2, np.nan]})
    with pytest.raises(ValueError, match="finite"):
        write_submission(sub, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_infer_folder_needs_audio(tmp_path, trained_run):
    member = load_member(trained_run[2], 1.0, "torch", "cpu")
    with pytest.raises(DataError, match="no audio files"):
        infer_folder(tmp_path, [member], InferConfig(), member.classes)


def test_budget_projects_from_measured_time(trained_run, capsys):
    _, _, run_dir = trained_run
    args = ["budget", "--checkpoint", str(run_dir), "--soundscapes", "700", "--cores", "4", "infer.tta_shifts=[0,2.5]"]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    projected = float(out[-1].split("=")[1])
    per_min = next(line for line in out if line.startswith("per minute"))
    decode, models = (float(x.split(" s")[0]) for x in per_min.split(": decode ")[1].split(" + models "))
    assert decode > 0 and models > 0 and projected > 0
    assert "fits" in out[-2]


def test_budget_measures_the_models_cost(trained_run, monkeypatch):
    """With the models' cost made known (a 0.3-s sleep per minute of audio), the measured model time holds it and
    the projection is at least what that cost alone gives for 700 files on 4 cores (a bound, not the formula
    re-typed: it holds however noisy the machine)."""
    import time

    import birdsed.inference.budget as budget

    real = budget.predict_file

    def slow(*args, **kw):
        time.sleep(0.3)
        return real(*args, **kw)

    monkeypatch.setattr(budget, "predict_file", slow)
    member = load_member(trained_run[2], 1.0, "torch", "cpu")
    b = budget.measure([member], InferConfig(), soundscapes=700, cores=4)
    assert b.model_s_per_min >= 0.3 and b.decode_s_per_min > 0
    assert b.projected_minutes >= 0.3 * 700 * b.local_threads / 4 / 60
    quick = budget.measure([member], InferConfig(), soundscapes=700, cores=4, limit_minutes=0.001)
    assert not quick.fits and b.fits == (b.projected_minutes <= 90)


def test_parallel_workers_equal_one_file_at_a_time(trained_run, tiny_root, tmp_path):
    """Files side by side (own ONNX sessions per worker) give the same rows, order, values and fallbacks."""
    folder = tmp_path / "soundscapes"
    shutil.copytree(tiny_root / "test_soundscapes", folder)
    shutil.copytree(tiny_root / "train_soundscapes", folder, dirs_exist_ok=True)
    (folder / "broken.ogg").write_bytes(b"OggS" + bytes(100))
    member = load_member(export(trained_run[2], tmp_path / "onnx", "onnx"), 1.0, "onnx", "cpu")
    assert member.factory is not None and member.with_threads(1).runner is not member.runner
    icfg = InferConfig(tta_shifts=[0.0, -2.5], workers=1)
    one = infer_folder(folder, [member], icfg, member.classes, progress=False)
    threads = torch.get_num_threads()
    icfg.workers = 3
    three = infer_folder(folder, [member], icfg, member.classes, progress=False)
    assert torch.get_num_threads() == threads  # restored
    assert three.submission["row_id"].tolist() == one.submission["row_id"].tolist()
    assert three.fallback_files == one.fallback_files and len(one.fallback_files) == 1
    np.testing.assert_allclose(three.submission.iloc[:, 1:], one.submission.iloc[:, 1:], atol=1e-5)
    assert worker_count(InferConfig(), [load_member(trained_run[2], 1.0, "torch", "cpu")], "cpu", 10) == 1


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_precision_is_explicit_on_every_cpu(trained_run, tmp_path, precision):
    """f32 unless asked, on CPUs with and without bf16 units (unasked, OpenVINO picks bf16 where it can, and the
    same model then gives other numbers on another machine). bf16 is forced here; where the CPU has no bf16 units
    OpenVINO runs f32, and the tolerance follows what it reports it used (an ``ov.Type``, named by its type name:
    its ``str`` is "<Type: 'bfloat16'>")."""
    _, _, run_dir = trained_run
    model, _cfg, _ = load_checkpoint(run_dir)
    mel = model.frontend(torch.randn(3, 32000 * 5) * 0.1)
    with torch.no_grad():
        ref = torch.sigmoid(model.forward_mel(mel)["clip_logits"]).numpy()
    got = 1 / (1 + np.exp(-torch_runner(model, "cpu", precision)(mel)[0]))
    if precision == "f32":
        np.testing.assert_allclose(got, ref, atol=1e-5)
    else:  # torch autocast really computes in bf16 on any CPU: close, and not equal
        assert 0 < np.abs(got - ref).max() < 0.05
    pytest.importorskip("openvino")
    folder = export(run_dir, tmp_path / "onnx", "onnx")
    compiled = openvino_model(folder, precision=precision)
    used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if precision == "f32":
        assert used == "f32", used  # explicit, whatever the CPU offers
    elif cpu_has_bf16():
        assert used == "bf16", used  # asked for, and the CPU has the units
    ov = 1 / (1 + np.exp(-np.asarray(compiled(mel.numpy())[0])))
    np.testing.assert_allclose(ov, ref, atol=0.05 if used == "bf16" else 1e-4)
    if precision == "bf16":
        with pytest.raises(ConfigError, match=r"infer\.precision"):
            runtime_runner(folder, "onnx", precision="bf16")
