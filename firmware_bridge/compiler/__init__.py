"""int8.tflite -> plain C: the model without an interpreter, byte for byte what TFLM computes.

``compile_model`` reads the flatbuffer (pipeline.tflite.flatbuffer), computes every constant
TFLM's Prepare functions would compute (multipliers, shifts, activation ranges, padding)
exactly as they do, plans memory at compile time, and writes ``RUN/firmware/compiled/``:

- ``model_compiled.h``: ``int tinyml_model_invoke(const int8_t *input, int8_t *output);``
  and ``TINYML_MODEL_INPUT_BYTES``, ``TINYML_MODEL_OUTPUT_BYTES``, ``TINYML_MODEL_RAM_BYTES``;
- ``model_compiled.c``: weights, biases and requantization constants as ``const`` arrays,
  one static buffer for every intermediate tensor, and the kernel calls in graph order;
- the kernels it calls (``tm_*.c``, ``tm_kernels.h``, from firmware/kernels/).

Memory plan: RESHAPE / EXPAND_DIMS / SQUEEZE are aliases (no copy); element-wise ops and
softmax run in place when their input dies there, unpadded pooling and mean too where that
makes the buffer smaller; the graph input is read where the caller keeps it and the graph
output is written where the caller wants it; every other tensor gets an offset in the one
buffer by first fit (the lowest offset no tensor alive at the same op holds), the best of
several orders (TFLM's GreedyMemoryPlanner uses one: largest first).

A debug build (``-DTINYML_MODEL_DEBUG``) calls ``tinyml_model_debug(op, data, bytes)``
after every op, so a test can name the first layer that differs from TFLM.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import BridgeError
from pipeline.tflite import flatbuffer as tflite_model

from firmware_bridge.sources import KERNEL_DIR  # noqa: E402
COMPILED_DIR = Path("firmware") / "compiled"
HEADER = "model_compiled.h"
SOURCE = "model_compiled.c"
ALIAS_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")
# Op -> the kernel source it needs (besides tm_common.c).
KERNEL_FILES = {
    "CONV_2D": "tm_conv.c", "DEPTHWISE_CONV_2D": "tm_conv.c",
    "FULLY_CONNECTED": "tm_fully_connected.c",
    "MAX_POOL_2D": "tm_pooling.c", "AVERAGE_POOL_2D": "tm_pooling.c",
    "ADD": "tm_elementwise.c", "SUB": "tm_elementwise.c", "MUL": "tm_elementwise.c",
    "MEAN": "tm_mean.c", "SOFTMAX": "tm_softmax.c",
}
SUPPORTED_OPS = tuple(KERNEL_FILES) + ALIAS_OPS

# tflite schema enums (schema.fbs): Padding, ActivationFunctionType.
_PADDING_SAME, _PADDING_VALID = 0, 1
_ACT_NONE, _ACT_RELU, _ACT_RELU_N1_TO_1, _ACT_RELU6 = 0, 1, 2, 3


class CompileError(BridgeError):
    """The model cannot be compiled to C (the TFLM path is unaffected)."""


# --------------------------------------------------------------------------- TFLM's constants
# Each must give the integer TFLM's Prepare gives; the source is cited where it is computed.


def _round_half_away(x: float) -> int:
    """std::round / TfLiteRound on a double."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """tflite-micro kernels/internal/quantization_util.cc QuantizeMultiplier (default build)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = _round_half_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return int(q_fixed), int(shift)


def quantize_multiplier_smaller_than_one(real: float) -> tuple[int, int]:
    if not 0.0 < real < 1.0:
        raise CompileError(f"a multiplier {real} outside (0, 1): TFLM would refuse this model")
    return quantize_multiplier(real)


def quantize_multiplier_greater_than_one(real: float) -> tuple[int, int]:
    if not real > 1.0:
        raise CompileError(f"a multiplier {real} not above 1: TFLM would refuse this model")
    return quantize_multiplier(real)


def activation_range(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """tflite-micro kernels/kernel_util.cc CalculateActivationRangeQuantized for int8; the
    quantized bound is zero_point + round(f / scale) computed in float32 (Quantize)."""

    def q(f: float) -> int:
        return int(zero_point) + _round_half_away(float(np.float32(f) / np.float32(scale)))

    if activation == _ACT_NONE:
        return -128, 127
    if activation == _ACT_RELU:
        return max(-128, q(0.0)), 127
    if activation == _ACT_RELU6:
        return max(-128, q(0.0)), min(127, q(6.0))
    if activation == _ACT_RELU_N1_TO_1:
        return max(-128, q(-1.0)), min(127, q(1.0))
    raise CompileError(f"fused activation {activation} is not one TFLM's int8 kernels support")


def _padding(kind: int, stride: int, dilation: int, in_size: int, filt: int, out_size: int) -> int:
    """tflite-micro kernels/padding.h ComputePadding."""
    if kind == _PADDING_VALID:
        return 0
    effective = (filt - 1) * dilation + 1
    return max(0, ((out_size - 1) * stride + effective - in_size) // 2)


# --------------------------------------------------------------------------- the graph


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
    in_place: int | None = None  # the input position whose storage the output reuses


@dataclass
class Plan:
    """Where every tensor lives: 'input', 'output', 'const', or an arena offset."""

    location: dict[int, str | int] = field(default_factory=dict)
    ram_bytes: int = 0
    lower_bound_bytes: int = 0
    buffers: list[dict] = field(default_factory=list)


_DTYPES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}


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


def read_graph(data: bytes) -> tuple[list[CTensor], list[COp], list[int], list[int]]:
    """Tensors (with constant data), ops (with options and layer), graph inputs and outputs."""
    try:
        model = tflite_model.read_flatbuffer(data)
    except Exception as exc:  # a flatbuffer that does not parse
        raise CompileError(f"not a .tflite flatbuffer ({type(exc).__name__}: {exc})") from exc
    if not model.subgraphs:
        raise CompileError("the .tflite has no subgraph")
    if len(model.subgraphs) > 1:
        raise CompileError(f"the .tflite has {len(model.subgraphs)} subgraphs; only one is supported")
    graph = model.subgraphs[0]
    tensor_names = [(t.name or b"").decode("utf-8", "replace") for t in graph.tensors]
    info = tflite_model.inspect_model(data, _layer_names(tensor_names))
    tensors = []
    for t, meta in zip(graph.tensors, info.tensors, strict=True):
        buf = model.buffers[t.buffer] if model.buffers and t.buffer < len(model.buffers) else None
        array = None
        if meta.constant:
            if buf is None or buf.data is None:
                raise CompileError(f"tensor {meta.name!r}: its data lies outside the flatbuffer")
            raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
            dtype = _DTYPES.get(t.type)
            if dtype is None:
                raise CompileError(f"tensor {meta.name!r}: type {t.type} is not supported")
            array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
            array = array.reshape(meta.shape) if meta.shape else array
        tensors.append(CTensor(index=meta.index, name=meta.name, shape=meta.shape,
                               dtype=_DTYPES.get(t.type, f"type{t.type}"), scales=meta.scales,
                               zero_points=meta.zero_points, data=array))
    ops = [COp(index=o.index, name=o.name, inputs=o.inputs, outputs=o.outputs,
               options=graph.operators[o.index].builtinOptions, layer=o.layer)
           for o in info.ops]
    return tensors, ops, list(info.inputs), list(info.outputs)


def _where(op: COp, tensors: list[CTensor]) -> str:
    layer = f"layer {op.layer!r}" if op.layer else \
        f"the layer of tensor {tensors[op.outputs[0]].name!r}" if op.outputs else "an unknown layer"
    return f"op {op.index} ({op.name}) from {layer}"


def check_supported(tensors: list[CTensor], ops: list[COp], inputs: list[int], outputs: list[int]) -> None:
    """CompileError (one line) naming the first op and layer the compiler cannot take."""
    for op in ops:
        if op.name not in SUPPORTED_OPS:
            raise CompileError(
                f"cannot compile {_where(op, tensors)}: {op.name} has no compiled kernel "
                f"(supported: {', '.join(sorted(SUPPORTED_OPS))})",
                hint="the TFLM engine still runs this model: [device] engine = \"tflm\"")
    if len(inputs) != 1 or len(outputs) != 1:
        raise CompileError(f"the model has {len(inputs)} inputs and {len(outputs)} outputs; expected one of each")
    for i in (*inputs, *outputs):
        if tensors[i].dtype != "int8":
            raise CompileError(f"graph tensor {tensors[i].name!r} is {tensors[i].dtype}; expected int8 "
                               "(convert with int8 input and output)")
    for op in ops:
        if op.name in ALIAS_OPS:
            continue
        for i in [op.inputs[0], *op.outputs]:
            if tensors[i].dtype != "int8":
                raise CompileError(f"cannot compile {_where(op, tensors)}: tensor {tensors[i].name!r} is "
                                   f"{tensors[i].dtype}, the compiled kernels take int8")
        if tensors[op.inputs[0]].shape[:1] not in ((1,), ()) and op.name != "FULLY_CONNECTED":
            raise CompileError(f"cannot compile {_where(op, tensors)}: batch {tensors[op.inputs[0]].shape[0]}, expected 1")


# --------------------------------------------------------------------------- memory plan


def _shape4(shape: tuple[int, ...]) -> list[int]:
    s = list(shape)
    if len(s) > 4:
        raise CompileError(f"a {len(s)}-D tensor; the compiled kernels take up to 4-D")
    return [1] * (4 - len(s)) + s


def _in_place_candidates(op: COp, tensors: list[CTensor]) -> list[int]:
    """Input positions whose storage the output may reuse, given how the kernel reads."""
    out = tensors[op.outputs[0]]
    if op.name in ("ADD", "SUB", "MUL"):
        return [k for k in (0, 1) if _shape4(tensors[op.inputs[k]].shape) == _shape4(out.shape)
                and tensors[op.inputs[k]].data is None]
    if op.name == "SOFTMAX":
        return [0]
    # Unpadded pooling writes output pixel q after its last read of input pixel q, and
    # later outputs read only pixels after q (see tm_pooling.c).
    if op.name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return [0] if op.options.padding == _PADDING_VALID else []
    # MEAN writes output k after summing it, over input element k, which belongs to an
    # output <= k: dropping dimensions from a row-major index never increases it.
    if op.name == "MEAN":
        return [0]
    return []


def plan_memory(tensors: list[CTensor], ops: list[COp], inputs: list[int], outputs: list[int]) -> Plan:
    """The smallest plan found: every op that can run in place does, except the shrinking
    ones (pooling, mean) left out where that makes the buffer smaller (an output pinned to
    the start of its input can block a better offset for the next big tensor). The lower
    bound is that of running everything in place: in place never adds live bytes."""
    shrinking = [op.index for op in ops if op.name not in ALIAS_OPS and _in_place_candidates(op, tensors)
                 and tensors[op.outputs[0]].nbytes < tensors[op.inputs[0]].nbytes]
    best_off: frozenset[int] = frozenset()
    best = _plan(tensors, ops, inputs, outputs, best_off)
    lower_bound = best.lower_bound_bytes
    for i in shrinking:  # greedy descent, one op at a time
        trial = _plan(tensors, ops, inputs, outputs, best_off | {i})
        if trial.ram_bytes < best.ram_bytes:
            best, best_off = trial, best_off | {i}
    best = _plan(tensors, ops, inputs, outputs, best_off)  # sets each op's in_place again
    best.lower_bound_bytes = lower_bound
    return best


def _plan(tensors: list[CTensor], ops: list[COp], inputs: list[int], outputs: list[int],
          not_in_place: frozenset[int]) -> Plan:
    """Aliases, in-place ops, lifetimes and offsets in one static buffer."""
    parent = {t.index: t.index for t in tensors}
    for op in ops:
        op.in_place = None

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(keep: int, other: int) -> None:
        parent[find(other)] = find(keep)

    for op in ops:
        if op.name in ALIAS_OPS:
            union(op.inputs[0], op.outputs[0])

    consumers: dict[int, list[int]] = {}
    for op in ops:
        for i in op.inputs:
            if i >= 0 and tensors[i].data is None:
                consumers.setdefault(i, []).append(op.index)

    def members(root: int) -> list[int]:
        return [t.index for t in tensors if t.data is None and find(t.index) == root]

    graph_in, graph_out = find(inputs[0]), find(outputs[0])
    for op in ops:
        if op.name in ALIAS_OPS:
            continue
        for k in [] if op.index in not_in_place else _in_place_candidates(op, tensors):
            src = op.inputs[k]
            root = find(src)
            if root in (graph_in, graph_out):
                continue
            # Another input viewing the same bytes in another shape would read overwritten ones.
            if any(i != src and i >= 0 and tensors[i].data is None and find(i) == root for i in op.inputs):
                continue
            last = max((c for m in members(root) for c in consumers.get(m, [])), default=-1)
            if last == op.index and tensors[src].nbytes >= tensors[op.outputs[0]].nbytes:
                op.in_place = k
                union(src, op.outputs[0])
                break
        graph_in, graph_out = find(inputs[0]), find(outputs[0])

    if find(inputs[0]) == find(outputs[0]):
        raise CompileError("the model's output is its input reshaped: nothing to compile")

    producer = {o: op.index for op in ops for o in op.outputs}
    buffers: dict[int, dict] = {}
    for t in tensors:
        if t.data is not None:
            continue
        used = t.index in producer or t.index in consumers or t.index in inputs
        if not used:
            continue
        root = find(t.index)
        b = buffers.setdefault(root, {"tensors": [], "size": 0, "first": len(ops), "last": -1})
        b["tensors"].append(t.index)
        b["size"] = max(b["size"], t.nbytes)
        first = producer.get(t.index, -1)
        last = max([first, *consumers.get(t.index, [])] + ([len(ops)] if t.index in outputs else []))
        # A buffer is the tensors that share its storage (aliases, in-place outputs); each
        # is a segment of its lifetime with its own size, so a pooled output in place of
        # its input holds only its own bytes once the input is dead.
        b.setdefault("segments", []).append((first, last, t.nbytes))
        b["first"], b["last"] = min(b["first"], first), max(b["last"], last)

    plan = Plan()
    arena = [b for r, b in buffers.items() if r not in (find(inputs[0]), find(outputs[0]))]
    offsets, plan.ram_bytes = _place(arena)
    for b, offset in zip(arena, offsets, strict=True):
        b["offset"] = offset
    for root, b in buffers.items():
        where = "input" if root == find(inputs[0]) else "output" if root == find(outputs[0]) else b["offset"]
        for t in b["tensors"]:
            plan.location[t] = where
        plan.buffers.append({"tensors": b["tensors"], "bytes": b["size"], "first_op": b["first"],
                             "last_op": b["last"], "location": where})
    for t in tensors:
        if t.data is not None:
            plan.location[t.index] = "const"
    # The lower bound: at each op, the bytes of every arena buffer alive across it.
    plan.lower_bound_bytes = int(sum((_bytes_at(b, len(ops) + 1) for b in arena),
                                     np.zeros(len(ops) + 2, dtype=np.int64)).max())
    return plan


# Orders tried by the placer beyond the classic ones: seeded, so a model always compiles
# to the same plan. 100 shuffles take ~0.1 s on a 40-buffer graph.
PLACEMENT_SHUFFLES = 100


def _bytes_at(b: dict, span: int) -> np.ndarray:
    """The bytes buffer ``b`` holds at each op (index op + 1; the caller's input is op -1)."""
    out = np.zeros(span + 1, dtype=np.int64)
    for first, last, size in b["segments"]:
        seg = out[first + 1:last + 2]
        np.maximum(seg, size, out=seg)
    return out


def _place_in_order(order: list[dict], bytes_at: dict[int, np.ndarray]) -> tuple[dict[int, int], int]:
    """First fit: each buffer at the lowest offset where it overlaps no placed buffer at
    any op both are alive at (``bytes_at``: each buffer's bytes at each op)."""
    placed: list[tuple[int, dict]] = []
    where: dict[int, int] = {}
    top = 0
    for b in order:
        clashes = []  # (offset, its bytes, b's bytes), at the ops both are alive at
        mine_all = bytes_at[id(b)]
        for off, other in placed:
            theirs_all = bytes_at[id(other)]
            shared = (mine_all > 0) & (theirs_all > 0)
            if shared.any():
                clashes.append((off, int(theirs_all[shared].max()), int(mine_all[shared].max())))
        offset = 0
        # Below a placed buffer at every shared op, or above it at every one: being below
        # at one op and above at another would need offset >= off + theirs > off >= offset + mine.
        for cand in sorted({0, *(off + theirs for off, theirs, _ in clashes)}):
            if all(cand + mine <= off or cand >= off + theirs for off, theirs, mine in clashes):
                offset = cand
                break
        placed.append((offset, b))
        where[id(b)] = offset
        top = max(top, offset + b["size"])
    return where, top


def _place(buffers: list[dict]) -> tuple[list[int], int]:
    """Offsets for buffers with lifetimes [first, last]: the best first-fit over a few
    orders (TFLM's GreedyMemoryPlanner uses one: largest first) and seeded shuffles."""
    orders = [
        sorted(buffers, key=lambda b: (-b["size"], b["first"])),
        sorted(buffers, key=lambda b: (b["first"], -b["size"])),
        sorted(buffers, key=lambda b: (-(b["last"] - b["first"]), -b["size"])),
        sorted(buffers, key=lambda b: (-b["size"] * (b["last"] - b["first"] + 1), b["first"])),
    ]
    rng = np.random.default_rng(0)
    for _ in range(PLACEMENT_SHUFFLES if len(buffers) > 2 else 0):
        orders.append([buffers[i] for i in rng.permutation(len(buffers))])
    span = max((b["last"] for b in buffers), default=0) + 2
    bytes_at = {id(b): _bytes_at(b, span) for b in buffers}
    best_where, best_top = _place_in_order(orders[0], bytes_at)
    for order in orders[1:]:
        where, top = _place_in_order(order, bytes_at)
        if top < best_top:
            best_where, best_top = where, top
    return [best_where[id(b)] for b in buffers], best_top


# --------------------------------------------------------------------------- C emission


def _c_array(ctype: str, name: str, values, per_line: int = 16) -> str:
    vals = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    if not vals:
        vals = ["0"]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(vals)}] = {{\n    {body}}};\n"


def _c_int(v: int) -> str:
    # INT32_MIN has no literal; write it as an expression.
    return "(-2147483647 - 1)" if int(v) == -(1 << 31) else str(int(v))


def _struct(ctype: str, name: str, fields: dict) -> str:
    body = ", ".join(f".{k} = {_fmt(v)}" for k, v in fields.items())
    return f"static const {ctype} {name} = {{{body}}};\n"


def _fmt(v) -> str:
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(_c_int(x) for x in v) + "}"
    return _c_int(v)


@dataclass
class Emitted:
    decls: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    kernels: set[str] = field(default_factory=set)


class _Emitter:
    def __init__(self, tensors: list[CTensor], plan: Plan):
        self.t = tensors
        self.plan = plan
        self.out = Emitted()
        self.consts: dict[int, str] = {}

    def ptr(self, index: int, writable: bool = False) -> str:
        where = self.plan.location[index]
        if where == "input":
            if writable:
                raise CompileError("internal: an op would write into the caller's input")
            return "input"
        if where == "output":
            return "output"
        if where == "const":
            return self.const(index)
        return f"(tm_arena + {where})"

    def const(self, index: int) -> str:
        if index not in self.consts:
            t = self.t[index]
            ctype = {"int8": "int8_t", "int32": "int32_t", "int16": "int16_t"}.get(t.dtype)
            if ctype is None:
                raise CompileError(f"constant {t.name!r} is {t.dtype}; the kernels take int8/int32")
            name = f"tensor{index}"
            self.out.decls.append(f"/* {t.name} {list(t.shape)} */\n" + _c_array(ctype, name, t.data))
            self.consts[index] = name
        return self.consts[index]

    def emit(self, op: COp) -> None:
        if op.name in ALIAS_OPS:
            self.out.calls.append(f"  /* op {op.index} {op.name}: an alias, no code */")
            return
        self.out.kernels.add(KERNEL_FILES[op.name])
        getattr(self, f"_op_{op.name.lower()}")(op)
        out = op.outputs[0]
        self.out.calls.append(f"  TM_DEBUG({op.index}, {self.ptr(out)}, {self.t[out].nbytes});")

    def _call(self, op: COp, text: str) -> None:
        where = f"from {op.layer}" if op.layer else ""
        self.out.calls.append(f"  /* op {op.index} {op.name} {where}"
                              f"{' (in place)' if op.in_place is not None else ''} */")
        self.out.calls.append(f"  {text}")

    def _conv(self, op: COp, depthwise: bool) -> None:
        x, w = self.t[op.inputs[0]], self.t[op.inputs[1]]
        bias = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        y = self.t[op.outputs[0]]
        o = op.options
        _, ih, iw, ic = _shape4(x.shape)
        _, oh, ow, oc = _shape4(y.shape)
        kh, kw = w.shape[1], w.shape[2]
        if any(z != 0 for z in w.zero_points):
            raise CompileError(f"cannot compile {_where(op, self.t)}: filter zero point is not 0")
        scales = w.scales if len(w.scales) == oc else [w.scales[0]] * oc
        mults, shifts = zip(*(quantize_multiplier(float(x.scale) * float(s) / float(y.scale))
                              for s in scales), strict=True)
        act_min, act_max = activation_range(o.fusedActivationFunction, y.scale, y.zero_point)
        n = f"op{op.index}"
        fields = {
            "in_h": ih, "in_w": iw, "in_c": ic, "out_h": oh, "out_w": ow, "out_c": oc,
            "filter_h": kh, "filter_w": kw, "stride_h": o.strideH, "stride_w": o.strideW,
            "dilation_h": o.dilationHFactor, "dilation_w": o.dilationWFactor,
            "pad_h": _padding(o.padding, o.strideH, o.dilationHFactor, ih, kh, oh),
            "pad_w": _padding(o.padding, o.strideW, o.dilationWFactor, iw, kw, ow),
            "depth_multiplier": oc // ic if depthwise else 1,
            "input_offset": -x.zero_point, "output_offset": y.zero_point,
            "act_min": act_min, "act_max": act_max,
        }
        self.out.decls.append(_struct("tm_conv_params", f"{n}_params", fields)
                              + _c_array("int32_t", f"{n}_multiplier", mults)
                              + _c_array("int32_t", f"{n}_shift", shifts))
        fn = "tm_depthwise_conv2d_s8" if depthwise else "tm_conv2d_s8"
        self._call(op, f"{fn}(&{n}_params, {self.ptr(x.index)}, {self.const(w.index)}, "
                       f"{self.const(bias) if bias is not None else 'NULL'}, {n}_multiplier, "
                       f"{n}_shift, {self.ptr(y.index, True)});")

    def _op_conv_2d(self, op: COp) -> None:
        self._conv(op, depthwise=False)

    def _op_depthwise_conv_2d(self, op: COp) -> None:
        self._conv(op, depthwise=True)

    def _op_fully_connected(self, op: COp) -> None:
        x, w = self.t[op.inputs[0]], self.t[op.inputs[1]]
        bias = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        y = self.t[op.outputs[0]]
        out_depth, in_depth = w.shape[0], w.shape[-1]
        per_channel = len(w.scales) > 1
        # tflite-micro kernels/kernel_util.cc GetQuantizedConvolutionMultipler (double product).
        mults, shifts = zip(*(quantize_multiplier(float(x.scale) * float(s) / float(y.scale))
                              for s in w.scales), strict=True)
        act_min, act_max = activation_range(op.options.fusedActivationFunction, y.scale, y.zero_point)
        n = f"op{op.index}"
        fields = {"batches": x.size // in_depth, "in_depth": in_depth, "out_depth": out_depth,
                  "input_offset": -x.zero_point, "filter_offset": -w.zero_point,
                  "output_offset": y.zero_point, "act_min": act_min, "act_max": act_max,
                  "per_channel": int(per_channel)}
        self.out.decls.append(_struct("tm_fc_params", f"{n}_params", fields)
                              + _c_array("int32_t", f"{n}_multiplier", mults)
                              + _c_array("int32_t", f"{n}_shift", shifts))
        self._call(op, f"tm_fully_connected_s8(&{n}_params, {self.ptr(x.index)}, {self.const(w.index)}, "
                       f"{self.const(bias) if bias is not None else 'NULL'}, {n}_multiplier, "
                       f"{n}_shift, {self.ptr(y.index, True)});")

    def _pool(self, op: COp, fn: str) -> None:
        x, y, o = self.t[op.inputs[0]], self.t[op.outputs[0]], op.options
        _, ih, iw, c = _shape4(x.shape)
        _, oh, ow, _ = _shape4(y.shape)
        act_min, act_max = activation_range(o.fusedActivationFunction, y.scale, y.zero_point)
        fields = {"in_h": ih, "in_w": iw, "channels": c, "out_h": oh, "out_w": ow,
                  "filter_h": o.filterHeight, "filter_w": o.filterWidth,
                  "stride_h": o.strideH, "stride_w": o.strideW,
                  "pad_h": _padding(o.padding, o.strideH, 1, ih, o.filterHeight, oh),
                  "pad_w": _padding(o.padding, o.strideW, 1, iw, o.filterWidth, ow),
                  "act_min": act_min, "act_max": act_max}
        n = f"op{op.index}"
        self.out.decls.append(_struct("tm_pool_params", f"{n}_params", fields))
        call = f"{fn}(&{n}_params, {self.ptr(x.index)}, {self.ptr(y.index, True)})"
        if fn == "tm_average_pool_s8":
            call = f"if ({call} != 0) return -1;"
        else:
            call += ";"
        self._call(op, call)

    def _op_max_pool_2d(self, op: COp) -> None:
        self._pool(op, "tm_max_pool_s8")

    def _op_average_pool_2d(self, op: COp) -> None:
        self._pool(op, "tm_average_pool_s8")

    def _binary(self, op: COp) -> None:
        a, b, y = self.t[op.inputs[0]], self.t[op.inputs[1]], self.t[op.outputs[0]]
        out4 = _shape4(y.shape)

        def strides(t: CTensor) -> list[int]:
            s4 = _shape4(t.shape)
            if any(d not in (1, o) for d, o in zip(s4, out4, strict=True)):
                raise CompileError(f"cannot compile {_where(op, self.t)}: shapes {t.shape} and {y.shape} do not broadcast")
            contiguous = [int(np.prod(s4[k + 1:])) for k in range(4)]
            return [0 if d == 1 and o > 1 else c for d, o, c in zip(s4, out4, contiguous, strict=True)]

        act = getattr(op.options, "fusedActivationFunction", _ACT_NONE)
        act_min, act_max = activation_range(act, y.scale, y.zero_point)
        fields = {"out_shape": out4, "in1_strides": strides(a), "in2_strides": strides(b),
                  "input1_offset": -a.zero_point, "input2_offset": -b.zero_point,
                  "output_offset": y.zero_point, "left_shift": 0,
                  "input1_multiplier": 0, "input2_multiplier": 0, "output_multiplier": 0,
                  "input1_shift": 0, "input2_shift": 0, "output_shift": 0,
                  "act_min": act_min, "act_max": act_max}
        if op.name == "MUL":
            # tflite-micro kernels/mul_common.cc CalculateOpDataMul.
            fields["output_multiplier"], fields["output_shift"] = quantize_multiplier(
                float(a.scale) * float(b.scale) / float(y.scale))
        else:
            fields["left_shift"] = 20
            if op.name == "ADD":
                # tflite-micro kernels/add_common.cc CalculateOpDataAdd: in double.
                twice = 2 * max(float(a.scale), float(b.scale))
                m1, m2 = float(a.scale) / twice, float(b.scale) / twice
                mo = twice / ((1 << 20) * float(y.scale))
            else:
                # tflite-micro kernels/sub_common.cc CalculateOpDataSub: in float32.
                f32 = np.float32
                twice = f32(2) * max(f32(a.scale), f32(b.scale))
                m1, m2 = float(f32(a.scale) / twice), float(f32(b.scale) / twice)
                mo = float(twice / (f32(1 << 20) * f32(y.scale)))
            fields["input1_multiplier"], fields["input1_shift"] = quantize_multiplier_smaller_than_one(m1)
            fields["input2_multiplier"], fields["input2_shift"] = quantize_multiplier_smaller_than_one(m2)
            fields["output_multiplier"], fields["output_shift"] = quantize_multiplier_smaller_than_one(mo)
        n = f"op{op.index}"
        self.out.decls.append(_struct("tm_binary_params", f"{n}_params", fields))
        fn = {"ADD": "tm_add_s8", "SUB": "tm_sub_s8", "MUL": "tm_mul_s8"}[op.name]
        self._call(op, f"{fn}(&{n}_params, {self.ptr(a.index)}, {self.ptr(b.index)}, {self.ptr(y.index, True)});")

    _op_add = _op_sub = _op_mul = _binary

    def _op_mean(self, op: COp) -> None:
        x, axis_t, y = self.t[op.inputs[0]], self.t[op.inputs[1]], self.t[op.outputs[0]]
        if axis_t.data is None:
            raise CompileError(f"cannot compile {_where(op, self.t)}: its axes are not constant")
        nd = len(x.shape)
        axes = {int(a) + nd if int(a) < 0 else int(a) for a in np.asarray(axis_t.data).reshape(-1)}
        pad = 4 - nd
        in4 = _shape4(x.shape)
        reduce = [int(d - pad in axes) if d >= pad else 0 for d in range(4)]
        count = int(np.prod([in4[d] for d in range(4) if reduce[d]]))
        same = x.zero_point == y.zero_point and np.float32(x.scale) == np.float32(y.scale)
        mult, shift = 0, 0
        if not same:
            # tflite-micro kernels/reduce_common.cc PrepareMeanOrSumHelper, then the 1/count
            # folding of kernels/internal/reference/reduce.h QuantizedMeanOrSum.
            mult, shift = quantize_multiplier(float(x.scale) / float(y.scale))
            if count > 0:
                s = min(count.bit_length() - 1, 32, 31 + shift)
                mult = int((mult << s) // count) if s >= 0 else int((mult >> -s) // count)
                shift -= s
        fields = {"in_shape": in4, "reduce": reduce, "count": count, "same_quant": int(same),
                  "input_zero_point": x.zero_point, "output_zero_point": y.zero_point,
                  "multiplier": mult, "shift": shift}
        n = f"op{op.index}"
        self.out.decls.append(_struct("tm_mean_params", f"{n}_params", fields))
        self._call(op, f"tm_mean_s8(&{n}_params, {self.ptr(x.index)}, {self.ptr(y.index, True)});")

    def _op_softmax(self, op: COp) -> None:
        x, y = self.t[op.inputs[0]], self.t[op.outputs[0]]
        if y.zero_point != -128 or abs(y.scale - 1.0 / 256) > 1e-3 / 256:
            raise CompileError(f"cannot compile {_where(op, self.t)}: int8 softmax output must have "
                               f"scale 1/256 and zero point -128 (has {y.scale}, {y.zero_point})")
        beta = float(op.options.beta)
        # tflite-micro kernels/softmax_common.cc CalculateSoftmaxParams and
        # kernels/internal/quantization_util.cc PreprocessSoftmaxScaling, CalculateInputRadius.
        integer_bits = 5
        real = min(beta * float(x.scale) * float(1 << (31 - integer_bits)), float((1 << 31) - 1))
        mult, left_shift = quantize_multiplier_greater_than_one(real)
        radius = math.floor(1.0 * ((1 << integer_bits) - 1) * float(1 << (31 - integer_bits))
                            / float(1 << left_shift))
        depth = _shape4(x.shape)[3]
        fields = {"outer": x.size // depth, "depth": depth, "input_multiplier": mult,
                  "input_left_shift": left_shift, "diff_min": -radius}
        n = f"op{op.index}"
        self.out.decls.append(_struct("tm_softmax_params", f"{n}_params", fields))
        self._call(op, f"tm_softmax_s8(&{n}_params, {self.ptr(x.index)}, {self.ptr(y.index, True)});")


# --------------------------------------------------------------------------- the whole


@dataclass
class CompiledModel:
    files: dict[str, str]  # name -> text
    input_bytes: int
    output_bytes: int
    ram_bytes: int
    lower_bound_bytes: int
    ops: list[dict]
    plan: Plan
    sha256: str


def compile_bytes(data: bytes, source: str = "int8.tflite") -> CompiledModel:
    """The C sources of a model (not written anywhere)."""
    tensors, ops, inputs, outputs = read_graph(data)
    check_supported(tensors, ops, inputs, outputs)
    plan = plan_memory(tensors, ops, inputs, outputs)
    em = _Emitter(tensors, plan)
    for op in ops:
        em.emit(op)
    sha = hashlib.sha256(data).hexdigest()
    x, y = tensors[inputs[0]], tensors[outputs[0]]
    ram = plan.ram_bytes
    header = f"""\
/* The int8 model compiled to C. Generated by `tinyml compile` from {source}
 * (sha256 {sha}); do not edit. Byte for byte the int8 outputs TFLM gives. */
#ifndef TINYML_MODEL_COMPILED_H_
#define TINYML_MODEL_COMPILED_H_

#include <stdint.h>

/* int8 values in, in TFLite's layout: shape {list(x.shape)}, scale {x.scale!r}, zero point {x.zero_point}. */
#define TINYML_MODEL_INPUT_BYTES {x.nbytes}
/* int8 values out: shape {list(y.shape)}, scale {y.scale!r}, zero point {y.zero_point}. */
#define TINYML_MODEL_OUTPUT_BYTES {y.nbytes}
/* The one static buffer that holds every intermediate tensor. */
#define TINYML_MODEL_RAM_BYTES {ram}

#ifdef __cplusplus
extern "C" {{
#endif

/* Runs the model once: 0 on success. Not reentrant (one static buffer). */
int tinyml_model_invoke(const int8_t *input, int8_t *output);

#ifdef __cplusplus
}}
#endif

#endif /* TINYML_MODEL_COMPILED_H_ */
"""
    plan_lines = [f" *   tensors {b['tensors']}: {b['bytes']} bytes, ops {b['first_op']}..{b['last_op']}, "
                  f"{'offset ' + str(b['location']) if isinstance(b['location'], int) else 'in the caller' + chr(39) + 's ' + b['location']}"
                  for b in sorted(plan.buffers, key=lambda b: b["first_op"])]
    source_text = "\n".join([
        f"/* Generated by `tinyml compile` from {source} (sha256 {sha}); do not edit.",
        " *",
        f" * Memory plan: {ram} bytes in one static buffer (lower bound {plan.lower_bound_bytes}).",
        *plan_lines,
        " */",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        f'#include "{HEADER}"',
        '#include "tm_kernels.h"',
        "",
        "#ifdef TINYML_MODEL_DEBUG",
        "/* Defined by the test harness: called with each op's output as soon as it is written. */",
        "void tinyml_model_debug(int op, const int8_t *data, int bytes);",
        "#define TM_DEBUG(op, data, bytes) tinyml_model_debug((op), (data), (bytes))",
        "#else",
        "#define TM_DEBUG(op, data, bytes) ((void)0)",
        "#endif",
        "",
        f"static int8_t tm_arena[{max(ram, 1)}];",
        "",
        *em.out.decls,
        "int tinyml_model_invoke(const int8_t *input, int8_t *output) {",
        "  if (input == NULL || output == NULL) return -1;",
        *em.out.calls,
        "  (void)tm_arena;",
        "  return 0;",
        "}",
        "",
    ])
    files = {HEADER: header, SOURCE: source_text}
    for name in ["tm_kernels.h", "tm_common.c", *sorted(em.out.kernels)]:
        files[name] = (KERNEL_DIR / name).read_text()
    op_rows = [{"index": op.index, "op": op.name, "layer": op.layer,
                "in_place": op.in_place is not None, "alias": op.name in ALIAS_OPS} for op in ops]
    return CompiledModel(files=files, input_bytes=x.nbytes, output_bytes=y.nbytes, ram_bytes=ram,
                         lower_bound_bytes=plan.lower_bound_bytes, ops=op_rows, plan=plan, sha256=sha)


def write_compiled(compiled: CompiledModel, out_dir: str | os.PathLike) -> Path:
    """Write the sources into ``out_dir`` as a whole: a temp folder renamed over it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, text in compiled.files.items():
            (tmp / name).write_text(text)
            os.chmod(tmp / name, 0o644)
        os.chmod(tmp, 0o755)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def compile_model(model_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> CompiledModel:
    """Compile ``int8.tflite`` into ``out_dir`` (default: RUN/firmware/compiled beside it)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise CompileError(f"{model_path}: not found", hint="run `tinyml quantize` first")
    compiled = compile_bytes(model_path.read_bytes(), source=model_path.name)
    write_compiled(compiled, out_dir if out_dir is not None else model_path.parent / COMPILED_DIR)
    return compiled


# --------------------------------------------------------------------------- host runner
# The compiled model built with the host's C compiler, for the byte-identity tests and the
# bench: windows in on stdin, outputs out on stdout. Built with -DTINYML_MODEL_DEBUG it
# also writes each op's output (op index, byte count, bytes) before the model's output.

RUNNER_MAIN = r"""
#include <stdio.h>
#include <stdint.h>
#include "model_compiled.h"

#ifdef TINYML_MODEL_DEBUG
void tinyml_model_debug(int op, const int8_t *data, int bytes) {
  int32_t head[2];
  head[0] = op;
  head[1] = bytes;
  fwrite(head, sizeof head, 1, stdout);
  fwrite(data, 1, (size_t)bytes, stdout);
}
#endif

int main(void) {
  static int8_t in[TINYML_MODEL_INPUT_BYTES], out[TINYML_MODEL_OUTPUT_BYTES];
  while (fread(in, 1, sizeof in, stdin) == sizeof in) {
#ifdef TINYML_MODEL_DEBUG
    int32_t head[2] = {-1, TINYML_MODEL_OUTPUT_BYTES};
#endif
    if (tinyml_model_invoke(in, out) != 0) return 3;
#ifdef TINYML_MODEL_DEBUG
    fwrite(head, sizeof head, 1, stdout);
#endif
    fwrite(out, 1, sizeof out, stdout);
  }
  return 0;
}
"""

CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")


def build_runner(compiled_dir: str | os.PathLike, exe: str | os.PathLike, debug: bool = False,
                 cc: str = "cc") -> Path:
    """Build the compiled model with a host main (stdin -> stdout); the executable's path."""
    import subprocess

    compiled_dir, exe = Path(compiled_dir), Path(exe)
    main_c = exe.with_suffix(".main.c")
    main_c.write_text(RUNNER_MAIN)
    sources = sorted(str(p) for p in compiled_dir.glob("*.c"))
    cmd = [cc, *CFLAGS, *(["-DTINYML_MODEL_DEBUG"] if debug else []), "-I", str(compiled_dir),
           *sources, str(main_c), "-o", str(exe), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"{cc} could not build {compiled_dir}: {proc.stderr.strip()[-800:]}")
    return exe


def run_runner(exe: str | os.PathLike, x_q: np.ndarray, output_bytes: int) -> np.ndarray:
    """Outputs (n, output_bytes) int8 of the built model for int8 inputs (n, ...)."""
    import subprocess

    x_q = np.ascontiguousarray(x_q, dtype=np.int8)
    proc = subprocess.run([str(exe)], input=x_q.tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise CompileError(f"{exe} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}")
    out = np.frombuffer(proc.stdout, dtype=np.int8)
    return out.reshape(len(x_q), output_bytes)


def run_runner_debug(exe: str | os.PathLike, x_q: np.ndarray) -> dict[int, np.ndarray]:
    """Every op's output (op index -> int8 bytes) for one input, from a debug build; the
    model's output under key -1."""
    import subprocess

    proc = subprocess.run([str(exe)], input=np.ascontiguousarray(x_q, dtype=np.int8).tobytes(),
                          capture_output=True)
    if proc.returncode != 0:
        raise CompileError(f"{exe} exited {proc.returncode}")
    raw, pos, dumps = proc.stdout, 0, {}
    while pos < len(raw):
        op, n = np.frombuffer(raw[pos:pos + 8], dtype=np.int32)
        pos += 8
        dumps[int(op)] = np.frombuffer(raw[pos:pos + int(n)], dtype=np.int8).copy()
        pos += int(n)
    return dumps
