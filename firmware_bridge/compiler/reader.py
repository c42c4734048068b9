"""The .tflite read into the compiler's records: tensors (with constant data), ops (with
their options and the Keras layer they came from), graph input and output.

The flatbuffer itself is parsed by ``pipeline.tflite.flatbuffer`` (the model artifact); this
module keeps what the planner and the emitter need, and the errors they share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import BridgeError
from pipeline.tflite import flatbuffer

# Ops that only view their input in another shape: no code, no storage of their own.
ALIAS_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")

# Ops on shapes, computed at compile time (shapes are static at batch 1): the converter
# writes SHAPE -> STRIDED_SLICE -> PACK for the target shape of a Flatten's RESHAPE.
FOLDED_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")

# tflite schema enums (schema.fbs): Padding, ActivationFunctionType.
PADDING_SAME, PADDING_VALID = 0, 1
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3

_DTYPES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}


class CompileError(BridgeError):
    """The model cannot be compiled to C (the TFLM path is unaffected)."""


@dataclass
class CTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: list[float]
    zero_points: list[int]
    data: np.ndarray | None  # constants only

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def scale(self) -> float:
        return float(self.scales[0]) if self.scales else 0.0

    @property
    def zero_point(self) -> int:
        return int(self.zero_points[0]) if self.zero_points else 0

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class COp:
    index: int
    name: str
    inputs: list[int]
    outputs: list[int]
    options: object
    layer: str | None


@dataclass
class Graph:
    """The one subgraph of a model: what the planner and the emitter take."""

    tensors: list[CTensor]
    ops: list[COp]
    inputs: list[int]
    outputs: list[int]


def shape4(shape: tuple[int, ...]) -> list[int]:
    """A shape of up to 4 dimensions padded in front to 4 (the kernels' NHWC)."""
    s = list(shape)
    if len(s) > 4:
        raise CompileError(f"a {len(s)}-D tensor; the compiled kernels take up to 4-D")
    return [1] * (4 - len(s)) + s


def where(op: COp, tensors: list[CTensor]) -> str:
    """The op and the layer it came from, for an error message."""
    layer = f"layer {op.layer!r}" if op.layer else \
        f"the layer of tensor {tensors[op.outputs[0]].name!r}" if op.outputs else "an unknown layer"
    return f"op {op.index} ({op.name}) from {layer}"


def _layer_names(names: list[str]) -> list[str]:
    # The converter names tensors "model/layer_1/op;..."; the layers are the second
    # components without TensorFlow's "_<n>" suffix.
    out = []
    for name in names:
        for part in name.split(";"):
            comps = part.split("/")
            if len(comps) > 1:
                base = re.sub(r"_\d+$", "", comps[1])
                if base and base not in out:
                    out.append(base)
    return out


def _constant(t, meta, buf) -> np.ndarray:
    """A constant tensor's data, in its shape."""
    if buf is None or buf.data is None:
        raise CompileError(f"tensor {meta.name!r}: its data lies outside the flatbuffer")
    raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
    dtype = _DTYPES.get(t.type)
    if dtype is None:
        raise CompileError(f"tensor {meta.name!r}: type {t.type} is not supported")
    array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    return array.reshape(meta.shape) if meta.shape else array


def read_graph(data: bytes) -> Graph:
    """Tensors (with constant data), ops (with options and layer), graph inputs and outputs."""
    try:
        model = flatbuffer.read_flatbuffer(data)
    except Exception as exc:  # a flatbuffer that does not parse
        raise CompileError(f"not a .tflite flatbuffer ({type(exc).__name__}: {exc})") from exc
    if not model.subgraphs:
        raise CompileError("the .tflite has no subgraph")
    if len(model.subgraphs) > 1:
        raise CompileError(f"the .tflite has {len(model.subgraphs)} subgraphs; only one is supported")
    graph = model.subgraphs[0]
    tensor_names = [(t.name or b"").decode("utf-8", "replace") for t in graph.tensors]
    info = flatbuffer.inspect_model(data, _layer_names(tensor_names))
    tensors = []
    for t, meta in zip(graph.tensors, info.tensors, strict=True):
        buf = model.buffers[t.buffer] if model.buffers and t.buffer < len(model.buffers) else None
        array = _constant(t, meta, buf) if meta.constant else None
        tensors.append(CTensor(index=meta.index, name=meta.name, shape=meta.shape,
                               dtype=_DTYPES.get(t.type, f"type{t.type}"), scales=meta.scales,
                               zero_points=meta.zero_points, data=array))
    ops = [COp(index=o.index, name=o.name, inputs=o.inputs, outputs=o.outputs,
               options=graph.operators[o.index].builtinOptions, layer=o.layer)
           for o in info.ops]
    return fold_constants(Graph(tensors, ops, list(info.inputs), list(info.outputs)))


def fold_constants(graph: Graph) -> Graph:
    """SHAPE, and STRIDED_SLICE / PACK of constants, computed now: their outputs become
    constants and the ops leave the graph (their results only feed RESHAPE's shape input,
    which the compiled RESHAPE does not read: the output shape is in the flatbuffer)."""
    tensors = graph.tensors
    kept = []
    for op in graph.ops:
        value = _fold(op, tensors) if op.name in FOLDED_OPS else None
        if value is None:
            kept.append(op)
            continue
        out = tensors[op.outputs[0]]
        out.data = np.asarray(value, dtype=out.dtype).reshape(out.shape)
    return Graph(tensors, kept, graph.inputs, graph.outputs)


def _fold(op: COp, tensors: list[CTensor]) -> np.ndarray | None:
    """The value of a shape op, or None when it cannot be computed at compile time."""
    ins = [tensors[i] for i in op.inputs if i >= 0]
    if op.name == "SHAPE":
        return np.asarray(ins[0].shape, dtype=np.int64)
    if any(t.data is None for t in ins):
        return None
    o = op.options
    if op.name == "PACK":
        return np.stack([np.asarray(t.data).reshape(t.shape) for t in ins], axis=o.axis)
    # STRIDED_SLICE: tflite-micro kernels/strided_slice.cc with
    # kernels/internal/strided_slice_logic.h (masks as numpy slices; ellipsis and new axes
    # are left to the interpreter).
    if o.ellipsisMask or o.newAxisMask:
        return None
    x = np.asarray(ins[0].data)
    begin, end, strides = (np.asarray(t.data).reshape(-1) for t in ins[1:4])
    index = []
    for d in range(len(begin)):
        b = None if o.beginMask >> d & 1 else int(begin[d])
        e = None if o.endMask >> d & 1 else int(end[d])
        if o.shrinkAxisMask >> d & 1:
            index.append(int(begin[d]))
        else:
            index.append(slice(b, e, int(strides[d])))
    return np.asarray(x[tuple(index)])
