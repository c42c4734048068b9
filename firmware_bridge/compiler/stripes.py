"""Patch-based inference of the first, high-resolution stage (as MCUNetV2 does), in rows.

The stage: the chain of convolutions and depthwise convolutions that starts at the model's
input (each output read only by the next layer). Its activations are the largest of the
model (MobileNetV1-0.25 at 96x96: 48x48x16 = 36,864 B after the first block, more than
the input); computed row by row they never exist whole. Each layer keeps a window of K
rows of its input (a line buffer: K-1 rows of halo carried from one output row to the
next, so no halo is computed twice); the last layer's rows go straight into the stage's
output, written over the input's rows that no later row reads (the shift is computed from
the receptive fields, ``StageRows.shift``). RAM: the input, the output written over it,
and the line buffers; instead of the input, the output and the whole intermediates.

Each row is an ordinary call of the layer's own kernel (``ops.KERNELS``) on a K-row image
(VALID in rows): rows outside the image hold the input's zero point, which adds
filter x (zero point - zero point) = 0, what SAME padding adds (the whole-tensor kernels
skip those taps: these are the only extra MACs, ``patches.executed_macs``). Columns keep
the layer's padding. Every output byte is the byte the whole-tensor kernels give.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_bridge.compiler.context import Emitter
from firmware_bridge.compiler.prepare import padding
from firmware_bridge.compiler.reader import COp, CTensor, Graph, shape4

STAGE_OP = "FUSED_STAGE_ROWS"
STAGE_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D")
MAX_STAGE_LAYERS = 6  # chains tried: 2..6 layers (each a whole plan: compile time)


@dataclass
class StageRows:
    """A fused stage: its layers in order, each layer's row geometry, the output shift."""

    layers: list[COp]
    geometry: list[dict]  # per layer: k, stride, pad, in_h, out_h, row_in, row_out
    shift: int  # bytes the output may start before the input (planner.overlap_shift)
    windows: list[int]  # scratch offset of each layer's input window (layer 0: the edge band)
    scratch_bytes: int


def _geometry(op: COp, tensors: list[CTensor]) -> dict:
    _, ih, iw, ic = shape4(tensors[op.inputs[0]].shape)
    _, oh, ow, oc = shape4(tensors[op.outputs[0]].shape)
    k = int(tensors[op.inputs[1]].shape[1])
    o = op.options
    return {"k": k, "stride": o.strideH, "pad": padding(o.padding, o.strideH, 1, ih, k, oh),
            "in_h": ih, "out_h": oh, "row_in": iw * ic, "row_out": ow * oc}


def stage_chain(graph: Graph) -> list[COp]:
    """The longest chain of row-computable layers from the model's input (at most
    MAX_STAGE_LAYERS): convolutions and depthwise convolutions without dilation, each
    output read by the next layer only."""
    readers: dict[int, list[COp]] = {}
    for op in graph.ops:
        for i in op.inputs:
            readers.setdefault(i, []).append(op)
    chain, t = [], graph.inputs[0]
    while len(chain) < MAX_STAGE_LAYERS and len(readers.get(t, [])) == 1:
        op = readers[t][0]
        o = op.options
        if (op.name not in STAGE_KINDS or op.inputs[0] != t or o.dilationHFactor != 1 or o.dilationWFactor != 1
                or len(shape4(graph.tensors[t].shape)) != 4 or op.outputs[0] in graph.outputs):
            break
        chain.append(op)
        t = op.outputs[0]
    return chain


def _first_input_row(geo: list[dict], row: int) -> int:
    """The first row of the stage's input that output row ``row`` of the last layer reads."""
    for g in reversed(geo):
        row = max(0, row * g["stride"] - g["pad"])
    return row


def fuse_stage(graph: Graph, layers: int) -> Graph:
    """The graph with the first ``layers`` layers of ``stage_chain`` as one op (STAGE_OP),
    whose outputs are the last layer's output and the scratch (line buffers); the graph
    itself when there is no such chain of that length."""
    chain = stage_chain(graph)[:layers]
    if len(chain) < 2 or len(chain) < layers:
        return graph
    tensors = list(graph.tensors)
    geo = [_geometry(op, tensors) for op in chain]
    last = geo[-1]
    # Output row r is written once it is computed; rows from r + 1 on read the input from
    # _first_input_row(r + 1): the output's first (r + 1) rows must end before that byte.
    shift = max([0] + [(r + 1) * last["row_out"] - _first_input_row(geo, r + 1) * geo[0]["row_in"]
                       for r in range(last["out_h"] - 1)])
    windows, at = [], 0
    for g in geo:  # layer 0: the band of the input at the edges; others: the K-row window
        windows.append(at)
        at += g["k"] * g["row_in"]
    s = CTensor(index=len(tensors), name=f"line buffers of {chain[0].layer or chain[0].index}..", shape=(at,),
                dtype="int8", scales=[], zero_points=[], data=None)
    tensors.append(s)
    fused = COp(index=chain[-1].index, name=STAGE_OP, inputs=[chain[0].inputs[0]],
                outputs=[chain[-1].outputs[0], s.index],
                options=StageRows(chain, geo, shift, windows, at), layer=chain[-1].layer)
    dropped = {op.index for op in chain}
    ops = [fused if op.index == fused.index else op for op in graph.ops
           if op.index not in dropped or op.index == fused.index]
    return Graph(tensors, ops, graph.inputs, graph.outputs)


def _row_function(name: str, layer: int, g: dict, call: str, src: str, zero_point: int, below: str) -> str:
    """C of ``name(r, tm_out)``: row r of one layer's output into tm_out."""
    k, row = g["k"], g["row_in"]
    first = f"const int tm_a = r * {g['stride']} - {g['pad']};"
    if layer == 0:  # the stage's input: read in place, or a band with zero-point rows at the edges
        return f"""static void {name}(int r, int8_t *tm_out) {{
  {first}
  const int8_t *tm_in;
  if (tm_a >= 0 && tm_a + {k} <= {g['in_h']}) tm_in = {src} + (long)tm_a * {row};
  else {{
    int8_t *const tm_band = {below};
    int tm_k;
    for (tm_k = 0; tm_k < {k}; ++tm_k) {{
      const int tm_row = tm_a + tm_k;
      if (tm_row < 0 || tm_row >= {g['in_h']}) memset(tm_band + tm_k * {row}, {zero_point}, {row});
      else memcpy(tm_band + tm_k * {row}, {src} + (long)tm_row * {row}, {row});
    }}
    tm_in = tm_band;
  }}
  {call}
}}
"""
    if k == 1:  # a 1x1 layer: the one row it reads, computed when it changes
        return f"""static int {name}_top, {name}_have;
static void {name}(int r, int8_t *tm_out) {{
  {first}
  int8_t *const tm_in = {src};
  if (!{name}_have || {name}_top != tm_a) {{
    {name}_top = tm_a;
    {name}_have = 1;
    if (tm_a < 0 || tm_a >= {g['in_h']}) memset(tm_in, {zero_point}, {row});
    else {below}(tm_a, tm_in);
  }}
  {call}
}}
"""
    # A window of k rows of this layer's input, rows tm_top.. in its slots 0..tm_have-1;
    # rows are asked for in increasing order, so it only slides down.
    return f"""static int {name}_top, {name}_have;
static void {name}(int r, int8_t *tm_out) {{
  {first}
  int8_t *const tm_in = {src};
  if ({name}_have == 0) {name}_top = tm_a;
  else if (tm_a > {name}_top) {{
    const int tm_d = tm_a - {name}_top;
    if (tm_d < {name}_have) {{
      memmove(tm_in, tm_in + tm_d * {row}, (size_t)({name}_have - tm_d) * {row});
      {name}_have -= tm_d;
    }} else {name}_have = 0;
    {name}_top = tm_a;
  }}
  while ({name}_have < {k}) {{
    const int tm_i = {name}_top + {name}_have;
    int8_t *const tm_slot = tm_in + {name}_have * {row};
    if (tm_i < 0 || tm_i >= {g['in_h']}) memset(tm_slot, {zero_point}, {row});
    else {below}(tm_i, tm_slot);
    ++{name}_have;
  }}
  {call}
}}
"""


def emit_stage_rows(em: Emitter, op: COp) -> None:
    from firmware_bridge.compiler.ops import KERNELS
    from firmware_bridge.compiler.patches import _band, _BandEmitter

    f: StageRows = op.options
    T = em.tensors
    scratch = em.ptr(op.outputs[1], True)
    band = list(T)
    names = {}
    functions = []
    for i, (layer, g) in enumerate(zip(f.layers, f.geometry, strict=True)):
        x, y = T[layer.inputs[0]], T[layer.outputs[0]]
        w_in, w_out = shape4(x.shape)[2], shape4(y.shape)[2]
        src, dst = len(band), len(band) + 1
        band += [_band(x, g["k"], w_in), _band(y, 1, w_out)]
        band[src].index, band[dst].index = src, dst
        names[src], names[dst] = "tm_in", "tm_out"
        be = _BandEmitter(em, band, names)
        fake = COp(index=layer.index, name=layer.name, inputs=[src, *layer.inputs[1:]], outputs=[dst],
                   options=layer.options, layer=layer.layer)
        em.kernels.add(KERNELS[layer.name].source)
        KERNELS[layer.name].emit(be, fake)
        (call,) = be.captured
        fn = f"tm_stage{op.index}_row{i}"
        if i == 0:
            text = _row_function(fn, 0, g, call, em.ptr(layer.inputs[0], True), x.zero_point,
                                 f"{scratch} + {f.windows[0]}")
        else:
            text = _row_function(fn, i, g, call, f"{scratch} + {f.windows[i]}", x.zero_point,
                                 f"tm_stage{op.index}_row{i - 1}")
        functions.append(text)
    em.decl("\n".join(functions))
    last = f"tm_stage{op.index}_row{len(f.layers) - 1}"
    resets = " ".join(f"tm_stage{op.index}_row{i}_have = 0;" for i in range(1, len(f.layers)))
    out, g = em.ptr(op.outputs[0], True), f.geometry[-1]
    em.call(op, f"{{ int tm_r; {resets} for (tm_r = 0; tm_r < {g['out_h']}; ++tm_r) "
                f"{last}(tm_r, {out} + (long)tm_r * {g['row_out']}); }}")
