"""One latency model: the instructions the compiled engine executes for an int8 model, and
so the milliseconds on a board, predicted from its ops.

Each op is given the kernel the compiler (firmware_bridge/compiler/ops.py) would call for it,
the "kind": CONV_2D/fast (tm_conv_fast.h, dilation 1; CONV_2D/pointwise when its window is
1x1) or CONV_2D/reference (tm_conv.c),
DEPTHWISE_CONV_2D/fast (tm_dwconv_fast.h: depth multiplier 1, dilation 1, at most
DW_MAX_TAPS taps) or /reference, ADD/SUB/MUL/table (one constant operand of at most
TABLE_MAX_VALUES values: tm_lut_s8) or /generic, and so on. A kind's instructions are a
linear sum of the op's features (MACs, output elements, output pixels, input elements,
pooling window work, one per call) with the coefficients of latency_table.json, fitted
(non-negative least squares) from per-op instruction counts MEASURED on QEMU's Cortex-M4
by `tinyml profile` (bench/bench_latency.py fits it and writes the table, its models, the
date and its error on models left out of the fit).

Instructions become board time with the board's clock and a stated CPI (1.0 on a
Cortex-M4: QEMU counts instructions, not cycles; a real M4 takes one cycle for most
instructions and more for loads after loads and taken branches, so the figure is a lower
bound of the same order). Only the compiled engine: where the firmware runs TFLM
(engine = "tflm") boards.py's MACs x cycles/MAC estimate is the one that applies.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.core.boards import get_board
from pipeline.tflite.flatbuffer import inspect_model, read_flatbuffer

TABLE_PATH = Path(__file__).with_name("latency_table.json")
# A Cortex-M4 retires most instructions in one cycle (Arm DDI 0439B, table 3-1); QEMU
# counts instructions only, so one cycle each: said wherever a time is given.
CPI = 1.0
LABEL_PREDICTED = "predicted from measured op costs"
LABEL_MEASURED = "measured on QEMU"

# The compiler's choices (firmware_bridge/compiler/ops.py; kept equal by tests/test_latency.py).
DW_MAX_TAPS = 64  # ops.DW_MAX_TAPS (tm_dwconv_fast.h TM_DW_MAX_TAPS)
TABLE_MAX_VALUES = 64  # ops.TABLE_MAX_VALUES
ALIAS_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE", "SHAPE", "STRIDED_SLICE", "PACK")  # no code
LUT_OPS = ("LOGISTIC", "TANH", "HARD_SWISH", "QUANTIZE")
BINARY_OPS = ("ADD", "SUB", "MUL")

# What each kind's cost is a sum of (the features of op_features).
FEATURES = {
    "CONV_2D/fast": ("macs", "out_elems", "window_bytes", "window_rows", "tail_macs", "border_taps", "border_bytes",
                     "call"),
    "CONV_2D/pointwise": ("macs", "out_elems", "window_bytes", "call"),
    "CONV_2D/reference": ("macs", "out_elems", "call"),
    "DEPTHWISE_CONV_2D/fast": ("macs", "out_elems", "border_bytes", "call"),
    "DEPTHWISE_CONV_2D/reference": ("macs", "out_elems", "call"),
    "FULLY_CONNECTED": ("macs", "out_elems", "call"),
    "MAX_POOL_2D": ("window", "out_elems", "out_pixels", "call"),
    "AVERAGE_POOL_2D": ("window", "out_elems", "out_pixels", "call"),
    "MEAN": ("in_elems", "out_elems", "call"),
    "SOFTMAX": ("in_elems", "rows", "call"),
    "ADD/table": ("out_elems", "call"),
    "ADD/generic": ("out_elems", "call"),
    "SUB/table": ("out_elems", "call"),
    "SUB/generic": ("out_elems", "call"),
    "MUL/table": ("out_elems", "call"),
    "MUL/generic": ("out_elems", "call"),
    "LUT": ("out_elems", "call"),
    "PAD": ("out_elems", "call"),
    "CONCATENATION": ("out_elems", "call"),
}


def _options(op_t):
    return op_t.builtinOptions


def op_kind(name: str, op_t, tensors, info_op) -> str | None:
    """The compiled kernel ``name`` runs on, or None for ops without code (views of a
    tensor, shapes folded at compile time)."""
    if name in ALIAS_OPS:
        return None
    o = _options(op_t)
    if name == "CONV_2D":
        if (o.dilationHFactor, o.dilationWFactor) != (1, 1):
            return "CONV_2D/reference"
        # The same fast kernel; a 1x1 window (MobileNet's, DS-CNN's pointwise layers) is
        # never at a border and spends its time otherwise: a kind of its own.
        w = tensors[info_op.inputs[1]].shape
        return "CONV_2D/pointwise" if w[1] == w[2] == 1 else "CONV_2D/fast"
    if name == "DEPTHWISE_CONV_2D":
        w = tensors[info_op.inputs[1]].shape
        x = tensors[info_op.inputs[0]].shape
        fast = w[-1] == x[-1] and (o.dilationHFactor, o.dilationWFactor) == (1, 1) and w[1] * w[2] <= DW_MAX_TAPS
        return "DEPTHWISE_CONV_2D/fast" if fast else "DEPTHWISE_CONV_2D/reference"
    if name in BINARY_OPS:
        a, b = (tensors[i] for i in info_op.inputs[:2])
        const = [t for t in (a, b) if t.constant]
        table = len(const) == 1 and int(np.prod(const[0].shape or (1,))) <= TABLE_MAX_VALUES
        return f"{name}/table" if table else f"{name}/generic"
    if name in LUT_OPS:
        return "LUT"
    if name == "PADV2":
        return "PAD"
    return name if name in FEATURES else f"unknown:{name}"


def op_features(info, op, op_t) -> dict:
    """The quantities an op's cost is a sum of."""
    t = info.tensors
    y = t[op.outputs[0]].shape
    x = t[op.inputs[0]].shape if op.inputs else ()
    out_elems = int(np.prod(y)) if y else 1
    in_elems = int(np.prod(x)) if x else 1
    f = {"macs": op.macs, "out_elems": out_elems, "in_elems": in_elems, "call": 1,
         "out_pixels": out_elems // max(1, y[-1]) if y else 1, "rows": in_elems // max(1, x[-1]) if x else 1}
    if op.name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        o = _options(op_t)
        f["window"] = out_elems * o.filterHeight * o.filterWidth
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        f.update(_conv_windows(t[op.inputs[0]].shape, t[op.inputs[1]].shape, y, _options(op_t), op.name))
    return f


def _border(n_out: int, n_in: int, k: int, stride: int) -> int:
    """Output positions along one axis whose window crosses the image's edge (SAME padding
    as TFLM computes it: kernels/padding.h ComputePaddingHeightWidth)."""
    pad = max(0, ((n_out - 1) * stride + k - n_in) // 2)
    return sum(1 for o in range(n_out) if o * stride - pad < 0 or o * stride - pad + k > n_in)


def _conv_windows(x, w, y, o, name: str) -> dict:
    """window_bytes: every output pixel's window (kh x kw x in_c bytes, what the fast path
    expands per pixel); window_rows: its rows, when the window is not one contiguous span;
    tail_macs: products of the last 1 or 2 bytes of a window past its last word (summed one
    by one); border_bytes and border_taps: the windows of the pixels that cross the edge,
    copied tap by tap with the zero point outside (tm_conv_fast.h tm_conv_window)."""
    _, ih, iw, ic = (1,) * (4 - len(x)) + tuple(x)
    _, oh, ow, _ = (1,) * (4 - len(y)) + tuple(y)
    kh, kw = w[1], w[2]
    win = kh * kw * (ic if name == "CONV_2D" else y[-1])
    inside = (oh - _border(oh, ih, kh, o.strideH)) * (ow - _border(ow, iw, kw, o.strideW))
    contiguous = kh == 1 or kw == iw  # else each window is gathered row by row
    tail = win % 4 if win % 4 in (1, 2) else 0  # bytes past the last word, summed one by one
    return {"window_bytes": oh * ow * win, "border_bytes": (oh * ow - inside) * win,
            "border_taps": (oh * ow - inside) * kh * kw, "window_rows": 0 if contiguous else oh * ow * kh,
            "tail_macs": oh * ow * y[-1] * tail}


def model_ops(data: bytes) -> list[dict]:
    """Every op of the model with its kind and features (ops without code left out)."""
    info = inspect_model(data)
    graph = read_flatbuffer(data).subgraphs[0]
    rows = []
    for op, op_t in zip(info.ops, graph.operators or [], strict=True):
        kind = op_kind(op.name, op_t, info.tensors, op)
        if kind is not None:
            rows.append({"index": op.index, "op": op.name, "layer": op.layer, "kind": kind,
                         "features": op_features(info, op, op_t)})
    return rows


@lru_cache(maxsize=4)
def load_table(path: str = str(TABLE_PATH)) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def op_instructions(kind: str, features: dict, table: dict) -> float:
    """One op's predicted instructions; an op of a kind the table lacks costs what the
    table's fallback (instructions per output element, the most any fitted kind costs)."""
    coefs = table["kinds"].get(kind)
    if coefs is None:
        return table["fallback_per_out_elem"] * features["out_elems"]
    return sum(c * features[k] for k, c in coefs.items())


def predict(data: bytes, table: dict | None = None) -> dict:
    """The predicted instructions per inference of the compiled model, per op and whole."""
    table = table or load_table()
    layers = []
    for r in model_ops(data):
        n = op_instructions(r["kind"], r["features"], table)
        layers.append({"index": r["index"], "op": r["op"], "layer": r["layer"], "kind": r["kind"],
                       "macs": r["features"]["macs"], "instructions": round(n)})
    total = round(sum(r["instructions"] for r in layers) + table["invoke_overhead"])
    unknown = sorted({r["kind"] for r in layers if r["kind"] not in table["kinds"]})
    return {"instructions_per_inference": total, "layers": layers, "unknown_kinds": unknown,
            "label": LABEL_PREDICTED, "table": table_source(table)}


def table_source(table: dict | None = None) -> str:
    table = table or load_table()
    return (f"pipeline/tflite/latency_table.json, fitted {table['fitted_on']} from per-op instructions "
            f"measured on QEMU ({table['machine']}) on {len(table['fit_models'])} models; "
            f"{table['holdout_error']}")


def board_ms(instructions: float, board: str) -> float:
    """Board time of ``instructions`` at CPI cycles each and the board's clock."""
    return instructions * CPI / get_board(board).clock_hz * 1000.0


def latency(data: bytes, board: str, table: dict | None = None) -> dict:
    """The compiled engine's predicted latency of ``data`` on ``board``."""
    p = predict(data, table)
    n = p["instructions_per_inference"]
    return {"board": get_board(board).name, "clock_hz": get_board(board).clock_hz,
            "instructions": n, "cpi": CPI, "ms": round(board_ms(n, board), 3),
            "label": LABEL_PREDICTED, "engine": "compiled", "source": p["table"],
            "unknown_kinds": p["unknown_kinds"]}


# --------------------------------------------------------------------------- the fit


def _nnls(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    return nnls(A, b)[0]


def fit(samples: list[dict]) -> dict:
    """The coefficients per kind from measured ops: samples of {kind, features, instructions}.
    Relative least squares (each row divided by its measurement), non-negative: a small
    layer's error counts as much as a big one's, and no feature costs less than nothing."""
    kinds: dict[str, dict] = {}
    for kind in sorted({s["kind"] for s in samples}):
        rows = [s for s in samples if s["kind"] == kind]
        names = FEATURES.get(kind, ("out_elems", "call"))
        A = np.array([[s["features"][k] for k in names] for s in rows], float)
        y = np.array([s["instructions"] for s in rows], float)
        w = 1.0 / np.maximum(y, 1.0)
        coef = _nnls(A * w[:, None], y * w)
        kinds[kind] = {k: round(float(c), 4) for k, c in zip(names, coef, strict=True) if c > 0}
    return kinds


def engine_latency(data: bytes, board: str, engine: str = "compiled", macs: int | None = None) -> dict:
    """The one latency figure of ``data`` on ``board`` for the engine the firmware runs:
    the compiled engine's prediction (this module), or for TFLM (engine = "tflm", whose
    kernels were not profiled here) boards.py's MACs x cycles/MAC estimate, labelled so."""
    if engine != "tflm":
        return latency(data, board)
    b = get_board(board)
    est = b.latency_estimate(inspect_model(data).total_macs if macs is None else macs)
    return {"board": b.name, "clock_hz": b.clock_hz, "ms": est["reference_kernels_ms"], "engine": "tflm",
            "label": est["label"], "source": est["source"]}
