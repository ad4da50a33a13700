import numpy as np
import pytest
import soundfile as sf
import torch

from birdsed.data.audio import AudioError, crop_start, iter_blocks, load_audio, pad_to
from birdsed.models.frontend import MelFrontend
from tests.conftest import tone, write


def dominant_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


@pytest.mark.parametrize(
    ("sr", "fmt"), [(8000, "wav"), (22050, "flac"), (44100, "ogg"), (96000, "wav"), (48000, "mp3")]
)
def test_any_rate_and_format_becomes_32k_with_the_right_pitch_and_length(tmp_path, sr, fmt):
    path = write(tmp_path / f"t.{fmt}", tone(1000.0, 2.0, sr), sr)
    x = load_audio(path, 32000)
    assert x.dtype == np.float32
    # mp3 adds encoder delay/padding of a few ms; everything else is sample exact after resampling
    assert abs(len(x) - 64000) <= (3000 if fmt == "mp3" else 1)
    assert dominant_freq(x[4000:60000], 32000) == pytest.approx(1000.0, abs=2.0)


def test_multichannel_is_downmixed(tmp_path):
    left = tone(500.0, 1.0, 32000)
    six = np.zeros((32000, 6), dtype=np.float32)
    six[:, 0] = left  # 5.1 file with signal on one channel only
    path = write(tmp_path / "surround.wav", six, 32000)
    x = load_audio(path, 32000)
    np.testing.assert_allclose(x, left / 6, atol=1e-5)  # 16-bit PCM quantisation / 6


def test_stream_equals_whole_file(tmp_path):
    rng = np.random.default_rng(0)
    data = (0.1 * rng.standard_normal(44100 * 7)).astype(np.float32)
    path = write(tmp_path / "n.flac", data, 44100)
    whole = np.concatenate(list(iter_blocks(path, 32000, block_seconds=100)))
    blocks = np.concatenate(list(iter_blocks(path, 32000, block_seconds=0.37)))
    assert len(whole) == len(blocks) == 7 * 32000
    np.testing.assert_allclose(whole, blocks, atol=1e-4)


def test_bad_files_give_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 100)
    missing = tmp_path / "missing.ogg"
    nan = write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2] * 1000, dtype=np.float32), 32000, subtype="FLOAT")
    for path, reason in [(empty, "empty"), (text, "not a readable audio"), (missing, "not found"), (nan, "NaN")]:
        with pytest.raises(AudioError, match=reason) as err:
            load_audio(path)
        assert str(path) in str(err.value)


def test_truncated_file_is_an_error_naming_it(tmp_path):
    """A FLAC cut in half: libsndfile loses sync part-way; that is an AudioError naming the file, never a short or
    garbage waveform passed on silently."""
    path = write(tmp_path / "full.flac", tone(800.0, 4.0, 32000), 32000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioError, match=r"cut\.flac: decoding failed part-way, file truncated or corrupt"):
        load_audio(cut)


def test_crop_modes():
    rng = np.random.default_rng(0)
    assert crop_start(100, 200, "random", rng) == 0
    assert crop_start(1000, 200, "center", rng) == 400
    assert crop_start(1000, 200, "first", rng) == 0
    starts = {crop_start(1000, 200, "first_random", rng, first=300) for _ in range(200)}
    assert min(starts) == 0 and max(starts) == 100
    starts = {crop_start(1000, 200, "random", rng) for _ in range(500)}
    assert max(starts) <= 800 and len(starts) > 100


def test_padding_loops_or_zeros():
    x = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_array_equal(pad_to(x, 8, "loop"), [1, 2, 3, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(pad_to(x, 5, "zero"), [1, 2, 3, 0, 0])
    np.testing.assert_array_equal(pad_to(x, 2, "loop"), [1, 2])


def _librosa_db(x: np.ndarray, **kw) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=x, sr=32000, n_fft=2048, hop_length=512, n_mels=128, fmin=40, fmax=15000)
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)


def test_mel_matches_librosa_on_real_audio(real_root):
    path = next((real_root / "train_audio").rglob("*.ogg"))
    x = load_audio(path)[: 32000 * 5]
    front = MelFrontend(normalize="none")
    ours = front(torch.from_numpy(x)[None])[0, 0].numpy()  # (128, T)
    ref = _librosa_db(x)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3


def test_mel_matches_librosa_on_a_chirp_batch_and_normalises():
    t = np.arange(32000 * 3) / 32000
    chirp = (0.3 * np.sin(2 * np.pi * (500 * t + 1500 * t**2))).astype(np.float32)
    noise = (0.05 * np.random.default_rng(1).standard_normal(len(t))).astype(np.float32)
    batch = torch.from_numpy(np.stack([chirp, noise]))
    ours = MelFrontend(normalize="none")(batch)  # (2, 1, 128, T)
    for i, x in enumerate((chirp, noise)):
        assert np.abs(ours[i, 0].numpy() - _librosa_db(x)).max() < 1e-3
    std = MelFrontend(normalize="standard")(batch)
    assert torch.allclose(std.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4)
    assert torch.allclose(std.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-3)
    mm = MelFrontend(normalize="minmax")(batch)
    assert mm.min() >= 0 and mm.max() <= 1 and mm.amax(dim=(1, 2, 3)).min() > 0.99


def test_mel_buffers_travel_in_the_state_dict():
    front = MelFrontend(n_mels=64)
    assert set(front.state_dict()) == {"mel_fb", "window"}
    assert front.state_dict()["mel_fb"].shape == (1025, 64)


def test_read_sample_rate_is_never_silently_wrong(tmp_path):
    # a file whose header says 96 kHz is resampled by that rate: 1 s in, 1 s out
    path = write(tmp_path / "hi.wav", tone(3000.0, 1.0, 96000), 96000)
    x = load_audio(path, 32000)
    assert len(x) == 32000 and sf.info(str(path)).samplerate == 96000
    assert dominant_freq(x, 32000) == pytest.approx(3000.0, abs=2.0)
