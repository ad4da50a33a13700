"""A TFLite flatbuffer read into plain Python: tensors (name, shape, constant data) and operators (type, inputs,
outputs, options), through the ``tflite`` package's generated schema. Nothing is executed here; the port that
rebuilds a network from it is :mod:`birdsed.models.birdnet_port`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from birdsed.errors import BirdsedError

DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}  # tflite ActivationFunctionType
PADDINGS = {0: "same", 1: "valid"}
# (options class in the tflite package, the fields read from it)
OPTIONS = {
    "CONV_2D": ("Conv2DOptions", ("Padding", "StrideH", "StrideW", "DilationHFactor", "DilationWFactor")),
    "DEPTHWISE_CONV_2D": (
        "DepthwiseConv2DOptions",
        ("Padding", "StrideH", "StrideW", "DilationHFactor", "DilationWFactor", "DepthMultiplier"),
    ),
    "AVERAGE_POOL_2D": ("Pool2DOptions", ("Padding", "StrideH", "StrideW", "FilterHeight", "FilterWidth")),
    "MAX_POOL_2D": ("Pool2DOptions", ("Padding", "StrideH", "StrideW", "FilterHeight", "FilterWidth")),
    "FULLY_CONNECTED": ("FullyConnectedOptions", ()),
    "ADD": ("AddOptions", ()),
    "MUL": ("MulOptions", ()),
    "CONCATENATION": ("ConcatenationOptions", ("Axis",)),
}


class GraphError(BirdsedError, ValueError):
    """A TFLite file cannot be read, or does not hold the network expected; the message names the file."""


@dataclass
class Op:
    """One operator: its builtin type name, input/output tensor indices (-1: absent) and options."""

    index: int
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def activation(self) -> str:
        """The fused activation (``none`` / ``relu`` / ``relu6``)."""
        return self.options.get("activation", "none")


@dataclass
class Graph:
    """The main subgraph of a TFLite model."""

    path: Path
    names: list[str]
    shapes: list[tuple[int, ...]]
    constants: dict[int, np.ndarray]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]

    def const(self, index: int) -> np.ndarray:
        """The constant data of tensor `index` (a copy, writable)."""
        if index not in self.constants:
            raise GraphError(f"{self.path}: tensor {index} ({self.names[index]}) is not a constant")
        return self.constants[index].copy()

    def producer(self) -> dict[int, Op]:
        """Tensor index → the op that writes it."""
        return {t: op for op in self.ops for t in op.outputs}


def read_graph(path: str | Path) -> Graph:
    """Parse `path` (a ``.tflite`` file) into a :class:`Graph`.

    Raises:
        GraphError: the ``tflite`` package is missing or the file is not a readable TFLite model.
    """
    path = Path(path)
    try:
        import tflite
        from tflite.BuiltinOperator import BuiltinOperator
    except ImportError:
        raise GraphError("reading BirdNET's weights needs the tflite package: pip install -e '.[teacher]'") from None
    try:
        buf = path.read_bytes()
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
        op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
        names, shapes, constants = [], [], {}
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            names.append(t.Name().decode())
            shapes.append(tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ())
            data = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() else 0
            if isinstance(data, np.ndarray) and data.size:
                dtype = DTYPES.get(t.Type())
                if dtype is None:
                    raise GraphError(f"{path}: tensor {names[-1]} has an unsupported type {t.Type()}")
                constants[i] = data.view(dtype).reshape(shapes[-1])
        ops = []
        for k in range(graph.OperatorsLength()):
            raw = graph.Operators(k)
            code = model.OperatorCodes(raw.OpcodeIndex())
            kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            op = Op(k, kind, [int(i) for i in raw.InputsAsNumpy()], [int(i) for i in raw.OutputsAsNumpy()])
            op.options = _options(tflite, raw, kind)
            ops.append(op)
        inputs = [int(i) for i in graph.InputsAsNumpy()]
        outputs = [int(i) for i in graph.OutputsAsNumpy()]
    except GraphError:
        raise
    except Exception as err:  # a damaged flatbuffer raises whatever its reader trips over
        raise GraphError(f"{path}: not a readable TFLite model ({type(err).__name__}: {err})") from None
    return Graph(path, names, shapes, constants, ops, inputs, outputs)


def _options(tflite: Any, raw: Any, kind: str) -> dict[str, Any]:
    if kind not in OPTIONS:
        return {}
    cls_name, fields = OPTIONS[kind]
    table = raw.BuiltinOptions()
    if table is None:
        return {}
    opts = getattr(tflite, cls_name)()
    opts.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    for f in fields:
        value = getattr(opts, f)()
        out[f] = PADDINGS[value] if f == "Padding" else int(value)
    if hasattr(opts, "FusedActivationFunction"):
        act = int(opts.FusedActivationFunction())
        if act not in ACTIVATIONS:
            raise GraphError(f"op {raw}: fused activation {act} is not supported")
        out["activation"] = ACTIVATIONS[act]
    return out
