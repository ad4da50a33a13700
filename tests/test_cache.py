import os
import tracemalloc

import numpy as np
import pytest

from birdsed.data.audio import load_audio
from birdsed.data.cache import WaveStore, prepare_cache
from birdsed.data.folder import DataError
from birdsed.data.synth import write_audio
from tests.conftest import tone, write


def test_prepare_is_idempotent_and_matches_decoding(tmp_path):
    a = write(tmp_path / "src" / "a.ogg", tone(700.0, 3.0, 44100), 44100)
    b = write(tmp_path / "src" / "b.flac", tone(1200.0, 2.0, 32000, channels=2), 32000)
    sources = [("x/a.ogg", a), ("x/b.flac", b)]
    s1 = prepare_cache(sources, tmp_path / "cache", 32000, workers=2, progress=False)
    assert (s1.cached, s1.skipped_current, s1.failed) == (2, 0, {})
    store = WaveStore(tmp_path / "cache")
    np.testing.assert_allclose(store.read("x/a.ogg"), load_audio(a), atol=1e-3)  # float16 storage
    assert store.num_samples("x/b.flac") == 64000
    s2 = prepare_cache(sources, tmp_path / "cache", 32000, workers=2, progress=False)
    assert (s2.cached, s2.skipped_current) == (0, 2)
    # a changed source is re-decoded; a cache at another rate is rebuilt
    write(b, tone(1200.0, 1.0, 32000), 32000)
    os.utime(b, ns=(1, 1))
    s3 = prepare_cache(sources, tmp_path / "cache", 32000, workers=1, progress=False)
    assert (s3.cached, s3.skipped_current) == (1, 1)
    assert WaveStore(tmp_path / "cache").num_samples("x/b.flac") == 32000
    s4 = prepare_cache(sources, tmp_path / "cache", 16000, workers=1, progress=False)
    assert s4.cached == 2 and WaveStore(tmp_path / "cache").num_samples("x/b.flac") == 16000


def test_cache_seconds_keeps_the_first_seconds_of_recordings_only(tmp_path):
    """data.cache_seconds: a recording's first N seconds, sample for sample as the whole decode has them; the
    soundscapes whole; another limit re-decodes, the same one reuses."""
    rng = np.random.default_rng(0)
    long, scape = tmp_path / "src" / "long.ogg", tmp_path / "src" / "scape.ogg"
    write_audio(long, 0.3 * rng.standard_normal(44100 * 70).astype(np.float32), 44100)  # long OGGs: in chunks
    write_audio(scape, tone(900.0, 40.0, 32000), 32000)
    sources = [("train_audio/a/long.ogg", long), ("train_soundscapes/scape.ogg", scape)]
    limits = {"train_audio/": 15 * 32000}
    s1 = prepare_cache(sources, tmp_path / "cache", 32000, workers=1, progress=False, limits=limits)
    store = WaveStore(tmp_path / "cache")
    assert s1.cached == 2 and store.num_samples("train_audio/a/long.ogg") == 15 * 32000
    assert store.num_samples("train_soundscapes/scape.ogg") == 40 * 32000
    whole = load_audio(long)
    np.testing.assert_allclose(store.read("train_audio/a/long.ogg"), whole[: 15 * 32000], atol=2e-3)
    again = prepare_cache(sources, tmp_path / "cache", 32000, workers=1, progress=False, limits=limits)
    assert (again.cached, again.skipped_current) == (0, 2)
    wider = prepare_cache(sources, tmp_path / "cache", 32000, workers=1, progress=False)
    assert (wider.cached, wider.skipped_current) == (1, 1)
    assert WaveStore(tmp_path / "cache").num_samples("train_audio/a/long.ogg") == len(whole)


def test_index_writes_grow_linearly_with_the_files(tmp_path, monkeypatch):
    """The cache index is saved by time, not every k files: the bytes of index written for 4x the files are about
    4x (saving every 100 files made it 16x at 46,000 files: quadratic)."""
    import birdsed.data.cache as cache

    written = []
    real = cache._write_index
    monkeypatch.setattr(
        cache, "_write_index", lambda root, sr, files: (written.append(len(files)), real(root, sr, files))
    )
    src = write(tmp_path / "t.wav", tone(500.0, 0.3, 8000), 8000)
    totals = []
    for n in (100, 400):
        written.clear()
        prepare_cache([(f"k{n}/{i}", src) for i in range(n)], tmp_path / f"c{n}", 8000, workers=1, progress=False)
        totals.append(sum(written))
    assert totals[0] >= 100 and totals[1] <= 4.5 * totals[0], totals


def test_bulk_caching_skips_bad_files_and_lists_them(tmp_path):
    good = write(tmp_path / "good.wav", tone(440.0, 1.0, 8000), 8000)
    silent = write(tmp_path / "silent.wav", np.zeros(8000, dtype=np.float32), 8000)
    nan = write(tmp_path / "nan.wav", np.full(100, np.nan, dtype=np.float32), 8000, subtype="FLOAT")
    junk = tmp_path / "junk.ogg"
    junk.write_bytes(os.urandom(2048))
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    sources = [(p.name, p) for p in (good, silent, nan, junk, empty)] + [("gone.ogg", tmp_path / "gone.ogg")]
    summary = prepare_cache(sources, tmp_path / "cache", 32000, workers=2, progress=False)
    assert summary.cached == 1
    assert set(summary.failed) == {"silent.wav", "nan.wav", "junk.ogg", "empty.mp3", "gone.ogg"}
    assert "silent" in summary.failed["silent.wav"] and "NaN" in summary.failed["nan.wav"]
    assert "not found" in summary.failed["gone.ogg"] and "empty" in summary.failed["empty.mp3"]
    assert summary.upsampled == ["good.wav"]
    text = "\n".join(summary.lines())
    assert "5 skipped" in text and "junk.ogg" in text
    store = WaveStore(tmp_path / "cache")
    assert "good.wav" in store and "junk.ogg" not in store
    with pytest.raises(KeyError, match=r"junk\.ogg"):
        store.read("junk.ogg")


def test_crops_from_the_store(tmp_path):
    x = np.linspace(-0.5, 0.5, 32000 * 3, dtype=np.float32)
    src = write(tmp_path / "ramp.wav", x, 32000, subtype="FLOAT")
    prepare_cache([("ramp", src)], tmp_path / "c", 32000, progress=False)
    store = WaveStore(tmp_path / "c")
    rng = np.random.default_rng(0)
    crop = store.crop("ramp", 32000, "center", rng)
    np.testing.assert_allclose(crop, x[32000:64000], atol=1e-3)
    long = store.crop("ramp", 32000 * 5, "random", rng, pad_mode="loop")
    assert len(long) == 32000 * 5
    np.testing.assert_allclose(long[32000 * 3 : 32000 * 4], x[:32000], atol=1e-3)
    assert len(store.crop("ramp", 10, "full", rng)) == len(x)


@pytest.mark.slow
def test_two_hour_file_caches_with_bounded_memory(tmp_path):
    sr, seconds = 8000, 2 * 3600
    path = tmp_path / "long.flac"
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", sr, 1, format="FLAC") as f:
        for _ in range(seconds // 600):
            f.write((0.05 * rng.standard_normal(sr * 600)).astype(np.float32))
    tracemalloc.start()
    summary = prepare_cache([("long", path)], tmp_path / "c", 32000, workers=1, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert summary.cached == 1
    assert WaveStore(tmp_path / "c").num_samples("long") == seconds * 32000
    whole = seconds * 32000 * 4  # the file as float32 at 32 kHz: 922 MB
    assert peak < whole / 20, f"peak {peak / 1e6:.0f} MB"


def test_a_truncated_cache_file_is_decoded_again_and_never_read_short(tmp_path):
    """A cached ``.f16`` cut short after a complete prepare (a disk that filled, a copy cut off): the store names it
    instead of reading past its end, and the next prepare decodes it again rather than calling it current."""
    a = write(tmp_path / "src" / "a.ogg", tone(700.0, 3.0, 32000), 32000)
    sources = [("x/a.ogg", a)]
    prepare_cache(sources, tmp_path / "cache", 32000, workers=1, progress=False)
    f16 = tmp_path / "cache" / "x" / "a.ogg.f16"
    whole = f16.read_bytes()
    f16.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"a\.ogg\.f16: the cached samples file is missing or shorter"):
        WaveStore(tmp_path / "cache").read("x/a.ogg")
    again = prepare_cache(sources, tmp_path / "cache", 32000, workers=1, progress=False)
    assert (again.cached, again.skipped_current) == (1, 0)
    assert f16.read_bytes() == whole
