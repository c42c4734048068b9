"""What is inside a .tflite file: its ops, the Keras layer each came from, MACs, TFLM support.

Read straight from the flatbuffer with the schema TFLM ships, so it works on any model,
including one no interpreter can load. The converter names tensors after the TensorFlow
graph ("functional_1/conv1_1/convolution"), which carries the Keras layer's name: that is
how an op is traced back to the layer it came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import GateFailed

# Builtin ops the TFLM interpreter can run, with the MicroMutableOpResolver method that
# registers each (tflite-micro python/tflite_micro/python_ops_resolver.cc, which adds every
# builtin kernel TFLM has; custom signal ops are left out: the converter never emits them).
TFLM_OPS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast",
    "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv", "ELU": "AddElu", "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill",
    "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOG_SOFTMAX": "AddLogSoftmax", "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D", "MAXIMUM": "AddMaximum", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2",
    "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_MAX": "AddReduceMax", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin",
    "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth", "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt", "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}

MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")
MACS_NOTE = (
    "multiply-accumulates of " + ", ".join(MAC_OPS) + "; element-wise ops, pooling and "
    "softmax are not counted"
)


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "int32", "float32", ...
    scales: list[float]
    zero_points: list[int]
    constant: bool


@dataclass
class Op:
    index: int
    name: str  # builtin name ("CONV_2D") or "CUSTOM:<code>"
    inputs: list[int]
    outputs: list[int]
    layer: str | None = None  # the Keras layer it came from, when the tensor names say
    macs: int = 0

    @property
    def tflm_method(self) -> str | None:
        return TFLM_OPS.get(self.name)


@dataclass
class ModelInfo:
    ops: list[Op]
    tensors: list[Tensor]
    inputs: list[int]
    outputs: list[int]

    @property
    def input(self) -> Tensor:
        return self.tensors[self.inputs[0]]

    @property
    def output(self) -> Tensor:
        return self.tensors[self.outputs[0]]

    @property
    def total_macs(self) -> int:
        return sum(op.macs for op in self.ops)

    def unsupported_ops(self) -> list[Op]:
        return [op for op in self.ops if op.tflm_method is None]

    def resolver_ops(self) -> list[str]:
        """MicroMutableOpResolver names (without ``Add``), each once, in graph order."""
        seen: list[str] = []
        for op in self.ops:
            method = op.tflm_method
            if method and method[3:] not in seen:
                seen.append(method[3:])
        return seen

    def macs_per_layer(self) -> list[dict]:
        """One entry per layer of origin, in graph order: its ops and their MACs."""
        rows: dict[str, dict] = {}
        for op in self.ops:
            key = op.layer or "(unknown layer)"
            row = rows.setdefault(key, {"layer": op.layer, "ops": [], "macs": 0})
            row["ops"].append(op.name)
            row["macs"] += op.macs
        return list(rows.values())

    def ops_table(self) -> list[dict]:
        return [
            {"index": op.index, "op": op.name, "layer": op.layer, "macs": op.macs,
             "tflm": op.tflm_method, "output_shape": list(self.tensors[op.outputs[0]].shape)
             if op.outputs else []}
            for op in self.ops
        ]


_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool",
           7: "int16", 9: "int8", 10: "float64"}


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return schema


def _builtin_names() -> dict[int, str]:
    schema = _schema()
    return {v: k for k, v in vars(schema.BuiltinOperator).items()
            if not k.startswith("_") and isinstance(v, int)}


def layer_of(name: str, layer_names: Iterable[str]) -> str | None:
    """The Keras layer a TensorFlow tensor name comes from, or None.

    Keras 3 puts each layer's ops under its name, uniquified by TensorFlow with a ``_<n>``
    suffix ("functional_1/conv1_1/convolution"). A fused tensor lists every op it absorbed
    ("convnet_1/relu1_1/Relu;convnet_1/conv1_1/BiasAdd;convnet_1/conv1_1/convolution"): the
    layer named most often wins (conv1 here, the activation being folded into it).
    """
    names = set(layer_names)
    counts: dict[str, int] = {}
    for part in name.split(";"):
        for comp in part.split("/")[1:]:  # the first component is the model itself
            base = comp if comp in names else re.sub(r"_\d+$", "", comp)
            if base in names:
                counts[base] = counts.get(base, 0) + 1
                break
    if not counts:
        return None
    return max(counts, key=lambda k: counts[k])  # first of the most frequent (dicts keep order)


def _op_layer(op: Op, tensors: list[Tensor], layer_names: list[str]) -> str | None:
    # Ops with weights are named by their weights; the others by their output, or, when
    # that has a generic name (the graph's final output, "StatefulPartitionedCall:0"),
    # by their activation inputs, then any constant input.
    activations = [i for i in op.inputs if i >= 0 and not tensors[i].constant]
    constants = [i for i in op.inputs if i >= 0 and tensors[i].constant]
    order = [*constants, *op.outputs, *activations] if op.name in MAC_OPS \
        else [*op.outputs, *activations, *constants]
    for i in order:
        layer = layer_of(tensors[i].name, layer_names)
        if layer:
            return layer
    return None


def _macs(op: Op, tensors: list[Tensor]) -> int:
    if op.name not in MAC_OPS or not op.outputs:
        return 0
    out = tensors[op.outputs[0]].shape
    out_elems = int(np.prod(out)) if out else 0
    if op.name == "CONV_2D":
        _, kh, kw, cin = tensors[op.inputs[1]].shape
        return out_elems * kh * kw * cin
    if op.name == "DEPTHWISE_CONV_2D":
        _, kh, kw, _ = tensors[op.inputs[1]].shape
        return out_elems * kh * kw
    if op.name == "FULLY_CONNECTED":
        return out_elems * tensors[op.inputs[1]].shape[-1]
    if op.name == "TRANSPOSE_CONV":
        cout, kh, kw, cin = tensors[op.inputs[1]].shape
        n, h, w, _ = tensors[op.inputs[2]].shape
        return n * h * w * cin * kh * kw * cout
    # BATCH_MATMUL: each output element sums over the inner dimension of the left operand.
    return out_elems * tensors[op.inputs[0]].shape[-1]


def read_flatbuffer(data: bytes):
    """The whole flatbuffer as TFLM's generated object API (``ModelT``): options, buffers."""
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))


def inspect_model(data: bytes, layer_names: Iterable[str] = ()) -> ModelInfo:
    """Ops, tensors, layer of origin and MACs of a .tflite flatbuffer (first subgraph)."""
    model = read_flatbuffer(data)
    builtins = _builtin_names()
    graph = model.subgraphs[0]
    layer_names = list(layer_names)
    tensors = []
    for i, t in enumerate(graph.tensors):
        q = t.quantization
        scales = [] if q is None or q.scale is None else [float(s) for s in q.scale]
        zps = [] if q is None or q.zeroPoint is None else [int(z) for z in q.zeroPoint]
        buf = model.buffers[t.buffer] if model.buffers and t.buffer < len(model.buffers) else None
        constant = bool(t.buffer) and buf is not None and (
            (buf.data is not None and len(buf.data) > 0) or bool(getattr(buf, "offset", 0)))
        tensors.append(Tensor(
            index=i, name=(t.name or b"").decode("utf-8", "replace"),
            shape=tuple(int(d) for d in (t.shape if t.shape is not None else [])),
            dtype=_DTYPES.get(t.type, f"type{t.type}"), scales=scales, zero_points=zps,
            constant=constant,
        ))
    ops = []
    for i, o in enumerate(graph.operators or []):
        code = model.operatorCodes[o.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = builtins.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(code.customCode or b'').decode('utf-8', 'replace')}"
        op = Op(index=i, name=name,
                inputs=[int(x) for x in (o.inputs if o.inputs is not None else [])],
                outputs=[int(x) for x in (o.outputs if o.outputs is not None else [])])
        op.layer = _op_layer(op, tensors, layer_names)
        op.macs = _macs(op, tensors)
        ops.append(op)
    return ModelInfo(ops=ops, tensors=tensors, inputs=[int(x) for x in graph.inputs],
                     outputs=[int(x) for x in graph.outputs])


def read_metadata(data: bytes) -> dict[str, bytes]:
    """The model's metadata entries (name -> bytes of their buffer)."""
    schema = _schema()
    try:
        model = schema.Model.GetRootAsModel(bytearray(data), 0)
        out = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            buf = model.Buffers(entry.Buffer())
            out[(entry.Name() or b"").decode("utf-8", "replace")] = bytes(buf.DataAsNumpy()) \
                if buf is not None and buf.DataLength() else b""
        return out
    except Exception as exc:  # a truncated or foreign flatbuffer raises many types
        raise GateFailed(f"not a readable .tflite flatbuffer ({type(exc).__name__}: {exc})") from None


def add_metadata(data: bytes, name: str, value: bytes) -> bytes:
    """``data`` with metadata entry ``name`` set to ``value`` (any old entry of that name
    replaced). Buffers are written 16-byte aligned, as the converter writes them (the schema's
    ``force_align: 16`` on Buffer.data, which the generated Python packer ignores)."""
    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    buf = schema.BufferT()
    buf.data = np.frombuffer(value, dtype=np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = name.encode("utf-8")
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != entry.name] + [entry]
    builder = _AlignedBuilder(len(data) + len(value) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def widen_logit_range(calibrated: bytes, headroom: float) -> bytes:
    """A calibrated (float) model with the recorded maximum of every SOFTMAX input raised by
    ``headroom`` x its recorded range (``pipeline.tflite.convert`` uses it between
    calibration and quantization)."""
    schema = _schema()
    names = _builtin_names()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(calibrated), 0))
    for graph in model.subgraphs:
        for op in graph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) != "SOFTMAX":
                continue
            q = graph.tensors[op.inputs[0]].quantization
            if q is None or q.min is None or q.max is None or len(q.min) != 1:
                continue
            lo, hi = float(q.min[0]), float(q.max[0])
            q.max = [hi + headroom * (hi - lo)]
    builder = _AlignedBuilder(len(calibrated) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _aligned_builder_class():
    import flatbuffers

    class Builder(flatbuffers.Builder):
        def CreateNumpyVector(self, x):  # noqa: N802 - flatbuffers' name
            if x.dtype != np.uint8:
                return super().CreateNumpyVector(x)
            payload = x.tobytes()
            self.StartVector(1, len(payload), 16)
            self.head = self.head - len(payload)
            self.Bytes[self.head:self.head + len(payload)] = payload
            return self.EndVector()

    return Builder


def _AlignedBuilder(size: int):  # noqa: N802 - reads as the class it builds
    return _aligned_builder_class()(size)


def require_tflm_ops(info: ModelInfo, layer_types: dict[str, str] | None = None) -> None:
    """GateFailed naming each op TFLM cannot run and the Keras layer it came from."""
    bad = info.unsupported_ops()
    if not bad:
        return
    layer_types = layer_types or {}

    def where(op: Op) -> str:
        if op.layer is None:
            return "from an unknown layer"
        kind = layer_types.get(op.layer)
        return f"from layer {op.layer!r}" + (f" ({kind})" if kind else "")

    seen = []
    for op in bad:
        text = f"{op.name} {where(op)}"
        if text not in seen:
            seen.append(text)
    raise GateFailed(
        f"the int8 model has op(s) TFLM cannot run: {'; '.join(seen)}",
        hint="replace that layer or activation with one TFLM supports (e.g. relu instead of gelu, "
        "Conv1D instead of a recurrent layer)",
    )
