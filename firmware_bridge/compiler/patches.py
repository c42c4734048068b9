"""Patch-based inference of a residual block, row by row (as MCUNetV2 computes its first
stage in patches): its two intermediate activations never exist whole in RAM.

The block: ``y1 = conv_a(x)``, ``y2 = conv_b(y1)`` (both 3x3 or any odd KxK, stride 1, SAME,
no dilation), ``z = ADD(x, y2)``, with x read by nothing else. Output row r needs y2 row r,
which needs y1 rows r-1..r+1 (K rows), which need x rows r-2..r+2. Computed in that order
(a window of K rows of y1, slid down one row at a time), output row r is written over x's
row r, which no later row reads. RAM: x, K rows of y1, one row of y2, K rows of x for the
bands at the top and bottom edges; instead of x, y1 and y2 whole. No value is computed twice
(the window slides); the cost is the row copies and the edge bands' zero-point taps, which
docs/compiler.md measures against the whole-tensor ops (on ResNet-8 the bands are fewer
instructions: their edge rows take the kernels' two-pixel path).

Each band is an ordinary call of the layer's own kernel (``ops.KERNELS``) on a K-row image
with VALID rows: the rows outside the image are filled with the input's zero point, which
adds filter x (zero point - zero point) = 0 to every sum, what SAME padding adds; the
columns keep SAME padding. Every output byte is the byte the whole-tensor kernels give.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from firmware_bridge.compiler.context import Emitter
from firmware_bridge.compiler.prepare import padding
from firmware_bridge.compiler.reader import PADDING_SAME, COp, CTensor, Graph, shape4

FUSED_OP = "FUSED_RESIDUAL_ROWS"


@dataclass
class ResidualRows:
    """The options of a fused block: its three ops, the tensors between them."""

    conv_a: COp
    conv_b: COp
    add: COp
    x: int
    y1: int
    y2: int
    scratch_bytes: int


def _is_row_conv(op: COp, tensors: list[CTensor]) -> bool:
    if op.name != "CONV_2D":
        return False
    o = op.options
    kh = tensors[op.inputs[1]].shape[1]
    return (o.strideH == o.strideW == 1 and o.dilationHFactor == o.dilationWFactor == 1
            and o.padding == PADDING_SAME and kh % 2 == 1
            and shape4(tensors[op.inputs[0]].shape)[1] >= kh)


def fuse_residual_rows(graph: Graph) -> Graph:
    """The graph with every such block replaced by one op (FUSED_OP), whose output is the
    ADD's and whose second output is its scratch (K rows of y1 and of x, one row of y2)."""
    tensors = list(graph.tensors)
    readers: dict[int, list[COp]] = {}
    for op in graph.ops:
        for i in op.inputs:
            if i >= 0:
                readers.setdefault(i, []).append(op)
    fused: dict[int, COp] = {}  # ADD index -> the fused op
    dropped: set[int] = set()
    for add in graph.ops:
        if add.name != "ADD" or len(add.inputs) != 2:
            continue
        for k in (0, 1):
            x, y2 = add.inputs[k], add.inputs[1 - k]
            b = next((op for op in graph.ops if y2 in op.outputs), None)
            if b is None or not _is_row_conv(b, tensors) or len(readers.get(y2, [])) != 1:
                continue
            y1 = b.inputs[0]
            a = next((op for op in graph.ops if y1 in op.outputs), None)
            if a is None or not _is_row_conv(a, tensors) or a.inputs[0] != x or len(readers.get(y1, [])) != 1:
                continue
            # Output row r is written over x's row r once y1's row r + kb/2 is computed,
            # from x rows from r + kb/2 - ka/2 on: those must not be above row r.
            if tensors[a.inputs[1]].shape[1] > tensors[b.inputs[1]].shape[1]:
                continue
            if {op.index for op in readers.get(x, [])} != {a.index, add.index} or x in graph.inputs:
                continue
            if shape4(tensors[x].shape) != shape4(tensors[add.outputs[0]].shape):
                continue
            _, h, w, c = shape4(tensors[x].shape)
            kh = max(tensors[a.inputs[1]].shape[1], tensors[b.inputs[1]].shape[1])
            c1 = shape4(tensors[y1].shape)[3]
            scratch = kh * w * c1 + w * shape4(tensors[y2].shape)[3] + kh * w * c
            s = CTensor(index=len(tensors), name=f"scratch of {a.layer or a.index}..{add.layer or add.index}",
                        shape=(scratch,), dtype="int8", scales=[], zero_points=[], data=None)
            tensors.append(s)
            fused[add.index] = COp(index=add.index, name=FUSED_OP, inputs=[x], outputs=[add.outputs[0], s.index],
                                   options=ResidualRows(a, b, add, x, y1, y2, scratch), layer=add.layer)
            dropped |= {a.index, b.index}
            break
    if not fused:
        return graph
    ops = [fused.get(op.index, op) for op in graph.ops if op.index not in dropped]
    return Graph(tensors, ops, graph.inputs, graph.outputs)


class _BandEmitter(Emitter):
    """The real emitter's declarations and kernels, with band tensors of its own whose
    pointers are C variables of the row loop; calls captured, not appended."""

    def __init__(self, em: Emitter, tensors: list[CTensor], names: dict[int, str]):
        super().__init__(tensors, em.plan)
        self.decls, self.kernels, self.consts = em.decls, em.kernels, em.consts
        self.names = names
        self.captured: list[str] = []

    def ptr(self, index: int, writable: bool = False) -> str:
        if index in self.names:
            return self.names[index]
        return super().ptr(index, writable)

    def call(self, op: COp, text: str) -> None:
        self.captured.append(text)


def _band(t: CTensor, rows: int, w: int) -> CTensor:
    return replace(t, shape=(1, rows, w, shape4(t.shape)[3]), data=None)


def emit_fused_residual(em: Emitter, op: COp) -> None:
    from firmware_bridge.compiler.ops import KERNELS

    f: ResidualRows = op.options
    T = em.tensors
    x, y1, y2, z = T[f.x], T[f.y1], T[f.y2], T[op.outputs[0]]
    _, h, w, c = shape4(x.shape)
    c1, c2 = shape4(y1.shape)[3], shape4(y2.shape)[3]
    ka, kb = T[f.conv_a.inputs[1]].shape[1], T[f.conv_b.inputs[1]].shape[1]
    # Band tensors: K rows in, one row out (indices past the graph's).
    band = list(T)
    n = len(band)
    xa, y1r, y1b, y2r, xr, zr = range(n, n + 6)
    band += [_band(x, ka, w), _band(y1, 1, w), _band(y1, kb, w), _band(y2, 1, w), _band(x, 1, w), _band(z, 1, w)]
    for i, t in enumerate(band[n:]):
        t.index = n + i
    names = {xa: "tm_xa", y1r: "tm_y1r", y1b: "tm_win", y2r: "tm_y2r", xr: "tm_xr", zr: "tm_xr"}
    be = _BandEmitter(em, band, names)
    for kernel_op, src, dst in ((f.conv_a, xa, y1r), (f.conv_b, y1b, y2r)):
        fake = COp(index=kernel_op.index, name=kernel_op.name, inputs=[src, *kernel_op.inputs[1:]],
                   outputs=[dst], options=kernel_op.options, layer=kernel_op.layer)
        em.kernels.add(KERNELS[kernel_op.name].source)
        KERNELS[kernel_op.name].emit(be, fake)
    add_inputs = [xr if i == f.x else y2r for i in f.add.inputs]
    fake_add = COp(index=f.add.index, name="ADD", inputs=add_inputs, outputs=[zr], options=f.add.options,
                   layer=f.add.layer)
    em.kernels.add(KERNELS["ADD"].source)
    KERNELS["ADD"].emit(be, fake_add)
    conv_a_call, conv_b_call, add_call = be.captured
    ra, rb = ka // 2, kb // 2
    row_x, row_y1, row_y2 = w * c, w * c1, w * c2
    scratch = em.ptr(op.outputs[1], True)
    xp = em.ptr(f.x, True)
    zx, z1 = x.zero_point, y1.zero_point
    # y1 row j into the last window slot: x rows j-ra..j+ra, from x itself inside the image,
    # else copied with zero-point rows around them.
    em.call(op, f"""{{
    int8_t *const tm_win = {scratch}, *const tm_y2r = tm_win + {kb * row_y1}, *const tm_band = tm_y2r + {row_y2};
    int8_t *tm_y1r, *tm_xr;
    const int8_t *tm_xa;
    int tm_r, tm_j, tm_k;
    for (tm_j = -{rb}; tm_j < {rb}; ++tm_j) {{  /* the window's first rows: y1 rows -{rb}..{rb - 1} */
      tm_y1r = tm_win + (tm_j + {rb}) * {row_y1};
      if (tm_j < 0) {{ memset(tm_y1r, {z1}, {row_y1}); continue; }}
      TM_Y1_ROW
    }}
    for (tm_r = 0; tm_r < {h}; ++tm_r) {{
      tm_j = tm_r + {rb};  /* y1 row completing the window of output row tm_r */
      tm_y1r = tm_win + {(kb - 1) * row_y1};
      if (tm_j >= {h}) memset(tm_y1r, {z1}, {row_y1});
      else {{ TM_Y1_ROW }}
      {conv_b_call}
      tm_xr = {xp} + (long)tm_r * {row_x};
      {add_call}
      memmove(tm_win, tm_win + {row_y1}, {(kb - 1) * row_y1});
    }}
    (void)tm_k;
  }}""".replace("TM_Y1_ROW", f"""if (tm_j - {ra} >= 0 && tm_j + {ra} < {h}) tm_xa = {xp} + (long)(tm_j - {ra}) * {row_x};
      else {{
        for (tm_k = 0; tm_k < {ka}; ++tm_k) {{
          const int tm_row = tm_j - {ra} + tm_k;
          if (tm_row < 0 || tm_row >= {h}) memset(tm_band + tm_k * {row_x}, {zx}, {row_x});
          else memcpy(tm_band + tm_k * {row_x}, {xp} + (long)tm_row * {row_x}, {row_x});
        }}
        tm_xa = tm_band;
      }}
      {conv_a_call}"""))


# --------------------------------------------------------------------------- cost


def _valid_taps(n_out: int, n_in: int, k: int, stride: int, dilation: int, pad: int) -> int:
    """Kernel taps inside the image, summed over the output positions of one axis."""
    o = np.arange(n_out)[:, None] * stride - pad + np.arange(k)[None, :] * dilation
    return int(((o >= 0) & (o < n_in)).sum())


def _conv_macs(op: COp, tensors: list[CTensor], rows_whole: bool = False) -> int:
    """The MACs a convolution kernel executes: taps outside the image are skipped (TFLM's
    reference kernels, tm_conv.c); ``rows_whole``: every row tap counted (a band whose rows
    outside the image hold the zero point, as the row-by-row block computes them)."""
    _, ih, iw, ic = shape4(tensors[op.inputs[0]].shape)
    _, oh, ow, oc = shape4(tensors[op.outputs[0]].shape)
    kh, kw = (int(d) for d in tensors[op.inputs[1]].shape[1:3])
    o = op.options
    pad_h = padding(o.padding, o.strideH, o.dilationHFactor, ih, kh, oh)
    pad_w = padding(o.padding, o.strideW, o.dilationWFactor, iw, kw, ow)
    rows = oh * kh if rows_whole else _valid_taps(oh, ih, kh, o.strideH, o.dilationHFactor, pad_h)
    cols = _valid_taps(ow, iw, kw, o.strideW, o.dilationWFactor, pad_w)
    per_tap = oc * (ic if op.name == "CONV_2D" else 1)  # depthwise: one input channel per output
    return rows * cols * per_tap


def executed_macs(graph: Graph) -> int:
    """The multiply-accumulates the compiled model executes (convolutions, depthwise
    convolutions and fully connected layers): the row-by-row blocks' and stages' extra MACs
    are those of their edge bands' zero-point rows, which the whole-tensor kernels skip."""
    T = graph.tensors
    total = 0
    for op in graph.ops:
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            total += _conv_macs(op, T)
        elif op.name == "FULLY_CONNECTED":
            total += T[op.outputs[0]].size * int(T[op.inputs[1]].shape[-1])
        elif op.name == FUSED_OP:
            total += sum(_conv_macs(c, T, rows_whole=True) for c in (op.options.conv_a, op.options.conv_b))
        elif op.name == "FUSED_STAGE_ROWS":  # stripes.py: every layer on K-row bands
            total += sum(_conv_macs(c, T, rows_whole=True) for c in op.options.layers)
    return total
