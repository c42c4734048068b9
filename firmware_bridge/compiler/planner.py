"""The memory plan: where every tensor of the graph lives while the model runs.

``plan_memory(graph) -> Plan`` is the whole interface: ``Plan.location`` says for every
tensor 'const' (a weight) or its byte offset in the one static buffer, whose size is
``Plan.arena_bytes``: every byte the model needs, the model's input and output included
(the caller writes the input into the buffer and reads the output from it);
``Plan.in_place`` names the ops whose output reuses an input's storage; ``Plan.order`` is
the order the ops run in.

How:
- RESHAPE / EXPAND_DIMS / SQUEEZE are aliases (no copy);
- an op may write its output over an input that dies there. Element-wise ops, softmax,
  unpadded pooling and mean write at the input's own offset (each output element is written
  after the last read of the input bytes under it). Convolutions, depthwise convolutions
  and padded pooling write in raster order, so their output can start ``shift`` bytes before
  their input: the smallest shift for which no output byte lands on an input byte still to
  be read (``overlap_shift``): a 3x3 stride-1 depthwise needs two rows of its output
  instead of a whole second tensor, a 1x1 convolution one pixel;
- the tensors sharing one storage make a buffer, alive from its first producer to its last
  consumer (the model's input from before the first op, its output after the last);
- the op order: the graph's own, or, on graphs with branches, the one that runs first the
  ready op that adds the fewest live bytes, whichever plan is smaller;
- offsets by first fit (the lowest offset no buffer alive at the same op holds) over a
  few orders of the buffers (TFLM's GreedyMemoryPlanner uses one: largest first). Each
  buffer is checked only against the buffers alive during its own lifetime (an index per
  op), so a chain of n ops costs O(n log n) per order (the sort), not O(n^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.compiler.prepare import padding
from firmware_bridge.compiler.reader import (
    ALIAS_OPS,
    PADDING_VALID,
    CompileError,
    COp,
    CTensor,
    Graph,
    shape4,
)

# Orders of the buffers tried by the placer beyond the classic four: seeded shuffles, so a
# model always compiles to the same plan. Their number shrinks with the graph so that
# placement stays O(n log n) overall: PLACEMENT_WORK / n shuffles of n buffers (a 40-op
# graph gets 50, ~0.05 s).
PLACEMENT_SHUFFLES = 50
PLACEMENT_WORK = 2000

# How many output pixels past the one being computed a windowed kernel may write before it
# has read that pixel's window. tm_conv_fast.h computes two pixels at once (tm_conv_pair):
# it writes pixel q+1 while pixel q's window is still being read. A kernel that computes
# more pixels at once must raise this, or in-place convolutions overwrite unread input.
WRITE_AHEAD_PIXELS = 1

# A chain of in-place ops may span this fraction more than one op's input and output take
# together (a raster shift of a few pixels); more, and the chain starts a new buffer. On
# MobileNetV1 at 96x96 a strided depthwise adds 32 bytes (0.1%) where its input chain is
# 36,888 B; the depthwise after the first conv would add 784 B of drift to a buffer whose
# span is mostly the dead 27,648-byte input (4%). 1/32 tells the two apart.
DRIFT_SLACK = 1 / 32
# Which span the slack is measured against (plan_memory tries both, and no stop at all):
# the op's own input and output, or the most the chain's buffer already holds at one op. The
# second lets a chain go on through ops smaller than its largest (after MobileNetV1's
# row-by-row first stage, a pointwise conv of 18,432 B after a depthwise that needed 19,296:
# without it, the pointwise starts a new buffer and the peak is 36,864 B instead of 32,352).
DRIFT_OP, DRIFT_MOST = 1, 2

SHUFFLED_DESCENT_OPS = 48

# The greedy descent's trials (each a whole plan): bounded so compile time stays linear.
MAX_DESCENT = 40

WINDOWED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D")


@dataclass
class Plan:
    """Where every tensor lives: 'const' or an offset in the one static buffer."""

    location: dict[int, str | int] = field(default_factory=dict)
    arena_bytes: int = 0  # the size of the one static buffer: every byte, input and output included
    lower_bound_bytes: int = 0  # the most bytes alive at any op: no placement needs less
    buffers: list[dict] = field(default_factory=list)  # tensors sharing storage, lifetime, place
    in_place: dict[int, int] = field(default_factory=dict)  # op index -> the input position reused
    order: list[int] = field(default_factory=list)  # op indices in the order they run
    input_offset: int = 0
    output_offset: int = 0
    live: list[dict] = field(default_factory=list)  # per op in order: tensors alive, bytes

    @property
    def offsets(self) -> dict[int, int]:
        """Tensor index -> its byte offset in the arena (every non-constant tensor)."""
        return {t: w for t, w in self.location.items() if isinstance(w, int)}


def plan_memory(graph: Graph) -> Plan:
    """The smallest plan found over the op orders and in-place choices tried. Ops that can
    run in place do, except where that makes the buffer larger: chains stopped where their
    buffer would drift (``stop_drift``: against the op's own input and output, against the
    most the chain's buffer already holds at one op, or never), then a greedy descent that runs
    out of place, one at a time, the ops that shrink or shift their tensor (an output pinned
    to its input can block a better offset for the next big tensor)."""
    ops = {op.index: op for op in graph.ops}
    windowed = frozenset(op.index for op in graph.ops if op.name in WINDOWED_OPS)
    # Each op's shift and each tensor's size, computed once for every plan tried.
    cache = {"shift": {}, "nbytes": [t.nbytes for t in graph.tensors]}
    nbytes = cache["nbytes"]
    # On a large graph the descent's trials place with the four classic orders only (no
    # shuffles) and the shuffles refine the end of each descent: the cost stays linear in
    # the ops (MAX_DESCENT trials of O(n log n)). Below SHUFFLED_DESCENT_OPS ops every trial
    # is shuffled (the streaming wakeword: 4,864 B instead of 4,944 B; < 0.2 s).
    small = len(graph.ops) <= SHUFFLED_DESCENT_OPS
    best = None
    for order in op_orders(graph):
        for stop_drift, off in ((DRIFT_OP, frozenset()), (DRIFT_MOST, frozenset()), (0, frozenset()),
                                (DRIFT_OP, windowed)):
            plan = _plan(graph, order, off, stop_drift, cache, shuffle=small)
            shrinking = [i for i, k in plan.in_place.items()
                         if nbytes[ops[i].outputs[0]] < nbytes[ops[i].inputs[k]] or ops[i].name in WINDOWED_OPS]
            for i in shrinking[:MAX_DESCENT]:  # greedy descent, one op at a time
                trial = _plan(graph, order, off | {i}, stop_drift, cache, shuffle=small)
                if trial.arena_bytes < plan.arena_bytes:
                    plan, off = trial, off | {i}
            shuffled = _plan(graph, order, off, stop_drift, cache, shuffle=True)
            plan = shuffled if shuffled.arena_bytes <= plan.arena_bytes else plan
            if best is None or plan.arena_bytes < best.arena_bytes:
                best = plan
    return best


# --------------------------------------------------------------------------- op order


def op_orders(graph: Graph) -> list[list[int]]:
    """The graph's op order, and on a graph with branches the greedy one: among the ops
    whose inputs are ready, the one whose output adds the fewest bytes net of the inputs it
    frees (ties: the graph's order)."""
    ops = graph.ops
    natural = [op.index for op in ops]
    producer = {o: op.index for op in ops for o in op.outputs}
    deps = {op.index: {producer[i] for i in op.inputs if i in producer} for op in ops}
    users: dict[int, set[int]] = {}
    for op in ops:
        for d in deps[op.index]:
            users.setdefault(d, set()).add(op.index)
    if all(len(u) <= 1 for u in users.values()):
        return [natural]  # a chain: one order
    readers: dict[int, set[int]] = {}
    for op in ops:
        for i in op.inputs:
            if i >= 0 and graph.tensors[i].data is None:
                readers.setdefault(i, set()).add(op.index)
    done: set[int] = set()
    pending = {i: set(r) for i, r in readers.items()}
    order = []
    while len(order) < len(ops):
        ready = [op for op in ops if op.index not in done and deps[op.index] <= done]

        def net(op: COp) -> int:
            freed = sum(graph.tensors[i].nbytes for i in set(op.inputs)
                        if i in pending and pending[i] == {op.index} and i not in graph.outputs)
            return sum(graph.tensors[o].nbytes for o in op.outputs) - freed

        pick = min(ready, key=lambda op: (net(op), op.index))
        order.append(pick.index)
        done.add(pick.index)
        for i in pick.inputs:
            if i in pending:
                pending[i].discard(pick.index)
    return [natural] if order == natural else [natural, order]


# --------------------------------------------------------------------------- in place


def overlap_shift(op: COp, k: int, tensors: list[CTensor]) -> int | None:
    """How many bytes before input ``k`` the output of ``op`` may start so that the kernel,
    writing in its own order, never overwrites an input byte it has still to read; None
    when the output may not overlap that input at all."""
    out = tensors[op.outputs[0]]
    src = tensors[op.inputs[k]]
    if op.name in ("ADD", "SUB", "MUL"):
        # Each output element is computed from the elements at its own index, read first.
        ok = shape4(src.shape) == shape4(out.shape) and src.data is None
        return 0 if ok else None
    if op.name in ("SOFTMAX", "MEAN") and k == 0:
        # SOFTMAX reads a row before writing it; MEAN writes output k after summing it, over
        # input element k, which belongs to an output <= k (see tm_mean.c).
        return 0
    if op.name in UNARY_TABLE_OPS and k == 0:
        return 0  # a table lookup per element
    if op.name == "FUSED_RESIDUAL_ROWS" and k == 0:
        return 0  # output row r written over input row r, read by no later row (patches.py)
    if op.name == "FUSED_STAGE_ROWS" and k == 0:
        return op.options.shift  # from the stage's receptive fields (stripes.py)
    if op.name in ("MAX_POOL_2D", "AVERAGE_POOL_2D") and k == 0 and op.options.padding == PADDING_VALID:
        # Unpadded pooling writes output pixel q after its last read of input pixel q, and
        # later outputs read only pixels after q (see tm_pooling.c).
        return 0
    if op.name in WINDOWED_OPS and k == 0:
        return _raster_shift(op, src, out, tensors)
    return None


UNARY_TABLE_OPS = ("QUANTIZE", "LOGISTIC", "TANH", "HARD_SWISH")


def _raster_shift(op: COp, x: CTensor, y: CTensor, tensors: list[CTensor]) -> int:
    """The shift for a kernel that computes output pixels in raster order (every channel of
    a pixel, WRITE_AHEAD_PIXELS more at most) and reads, for output pixel (oy, ox), input
    rows from oy * stride - pad on: the output byte written last when pixel q is computed
    must lie below the first input byte any pixel from q on still reads."""
    _, ih, iw, ic = shape4(x.shape)
    _, oh, ow, oc = shape4(y.shape)
    o = op.options
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        kh, kw = (int(d) for d in tensors[op.inputs[1]].shape[1:3])
        pad_h = padding(o.padding, o.strideH, o.dilationHFactor, ih, kh, oh)
        pad_w = padding(o.padding, o.strideW, o.dilationWFactor, iw, kw, ow)
    else:
        pad_h = padding(o.padding, o.strideH, 1, ih, o.filterHeight, oh)
        pad_w = padding(o.padding, o.strideW, 1, iw, o.filterWidth, ow)
    rows = np.maximum(np.arange(oh) * o.strideH - pad_h, 0)
    cols = np.maximum(np.arange(ow) * o.strideW - pad_w, 0)
    start = ((rows[:, None] * iw + cols[None, :]) * ic).reshape(-1)
    first_read = np.minimum.accumulate(start[::-1])[::-1]  # the least any pixel from q on reads
    q = np.arange(oh * ow)
    last_write = np.minimum(q + 1 + WRITE_AHEAD_PIXELS, oh * ow) * oc
    return int(max(0, (last_write - first_read).max()))


class _Storage:
    """Union-find over tensor indices with offsets: the tensors that share one storage, and
    where each lies relative to its root."""

    def __init__(self, tensors: list[CTensor]):
        self.parent = {t.index: t.index for t in tensors}
        self.offset = {t.index: 0 for t in tensors}  # bytes from the parent

    def find(self, i: int) -> int:
        return self.locate(i)[0]

    def locate(self, i: int) -> tuple[int, int]:
        """The root of i and i's offset from it."""
        path, off = [], 0
        while self.parent[i] != i:
            path.append(i)
            i = self.parent[i]
        root = i
        # Path compression, keeping offsets relative to the root.
        total = 0
        for node in reversed(path):
            total += self.offset[node]
            self.offset[node] = total
            self.parent[node] = root
        off = self.offset[path[0]] if path else 0
        return root, off

    def union(self, keep: int, other: int, shift: int = 0) -> None:
        """Put ``other`` at ``shift`` bytes after ``keep`` (negative: before)."""
        rk, ok = self.locate(keep)
        ro, oo = self.locate(other)
        if rk == ro:
            return
        self.parent[ro] = rk
        self.offset[ro] = ok + shift - oo


def _consumers(graph: Graph, pos: dict[int, int]) -> dict[int, list[int]]:
    """Non-constant tensor -> the positions (in the run order) of the ops that read it."""
    consumers: dict[int, list[int]] = {}
    for op in graph.ops:
        for i in op.inputs:
            if i >= 0 and graph.tensors[i].data is None:
                consumers.setdefault(i, []).append(pos[op.index])
    return consumers


def _share_in_place(graph: Graph, order: list[int], storage: _Storage, consumers: dict[int, list[int]],
                    not_in_place: frozenset[int], stop_drift: int, cache: dict) -> dict[int, int]:
    """Let every op that can write over an input dying there do so: op -> input position."""
    tensors = graph.tensors
    size = cache["nbytes"]
    n = len(order)
    last: dict[int, int] = {}  # root -> the last position any of its tensors is read
    for t in tensors:
        if t.data is None:
            r = storage.find(t.index)
            end = max(consumers.get(t.index, [-1]) + ([n] if t.index in graph.outputs else []))
            last[r] = max(last.get(r, -1), end)
    ops = {op.index: op for op in graph.ops}
    extent: dict[int, list[int]] = {}  # root -> [lowest byte, end, most bytes alive at one op]
    for t in tensors:
        if t.data is None:
            r, off = storage.locate(t.index)
            e = extent.setdefault(r, [off, off + size[t.index], 0])
            e[0], e[1] = min(e[0], off), max(e[1], off + size[t.index])
            e[2] = max(e[2], e[1] - e[0])
    in_place: dict[int, int] = {}
    for p, i in enumerate(order):
        op = ops[i]
        if op.name in ALIAS_OPS or i in not_in_place:
            continue
        for k in range(len(op.inputs)):
            src = op.inputs[k]
            if src < 0 or tensors[src].data is not None:
                continue
            key = (op.index, k)
            if key not in cache["shift"]:
                cache["shift"][key] = overlap_shift(op, k, tensors)
            shift = cache["shift"][key]
            if shift is None:
                continue
            root = storage.find(src)
            # Another input viewing the same bytes in another shape would read overwritten ones.
            if any(j != src and j >= 0 and tensors[j].data is None and storage.find(j) == root for j in op.inputs):
                continue
            out = tensors[op.outputs[0]]
            if last.get(root, -1) != p or shift >= size[out.index]:
                continue  # the input is read later, or the overlap saves nothing
            if op.name not in WINDOWED_OPS and size[src] < size[out.index]:
                continue
            # A chain of outputs each written below its input drifts down its buffer, whose
            # bytes stay reserved from the first tensor's to the last's: stop the chain where
            # the buffer would span more than the op's input and output take together
            # (DRIFT_SLACK more): the output then starts a new buffer, placed on its own.
            rel = storage.locate(src)[1]
            lo, end, most = extent[root]
            new_lo, new_end = min(lo, rel - shift), max(end, rel - shift + size[out.index])
            together = max(size[out.index], shift + size[src])
            allowed = together if stop_drift == DRIFT_OP else max(together, most)
            if stop_drift and new_end - new_lo > allowed * (1 + DRIFT_SLACK):
                continue
            out_root = storage.find(out.index)
            oe = extent.pop(out_root, None)
            storage.union(src, out.index, -shift)
            extent[root] = [new_lo, new_end, max(most, together, oe[2] if oe else 0)]
            last[storage.find(src)] = max(last.pop(root, -1), last.pop(out_root, -1))
            in_place[i] = k
            break
    return in_place


def _buffers(graph: Graph, order: list[int], storage: _Storage,
             consumers: dict[int, list[int]]) -> dict[int, dict]:
    """Storage root -> its buffer: tensors (with their offsets in it), size, first and last
    position, lifetime segments (first, last, bytes from the buffer's start)."""
    n_ops = len(order)
    pos = {i: p for p, i in enumerate(order)}
    producer = {o: pos[op.index] for op in graph.ops for o in op.outputs}
    buffers: dict[int, dict] = {}
    for t in graph.tensors:
        if t.data is not None:
            continue
        used = t.index in producer or t.index in consumers or t.index in graph.inputs
        if not used:
            continue
        root, off = storage.locate(t.index)
        b = buffers.setdefault(root, {"tensors": [], "rel": {}, "first": n_ops, "last": -1, "members": []})
        b["tensors"].append(t.index)
        first = producer.get(t.index, -1)
        last = max([first, *consumers.get(t.index, [])] + ([n_ops] if t.index in graph.outputs else []))
        b["members"].append((t.index, first, last, off, t.nbytes))
        b["first"], b["last"] = min(b["first"], first), max(b["last"], last)
    for b in buffers.values():
        low = min(m[3] for m in b["members"])
        b["rel"] = {m[0]: m[3] - low for m in b["members"]}
        # Each tensor is a segment of the buffer's lifetime, at its bytes [start, end) in
        # the buffer: the placer and the lower bound count those alive at each op.
        b["extents"] = [(first, last, off - low, off - low + size) for _, first, last, off, size in b["members"]]
        b["segments"] = [(first, last, end) for first, last, _, end in b["extents"]]
        b["size"] = max(s[2] for s in b["segments"])
    return buffers


def _plan(graph: Graph, order: list[int], not_in_place: frozenset[int], stop_drift: int = 1,
          cache: dict | None = None, shuffle: bool = True) -> Plan:
    """Aliases, in-place ops, lifetimes and offsets in one static buffer, for one op order."""
    pos = {i: p for p, i in enumerate(order)}
    storage = _Storage(graph.tensors)
    for op in graph.ops:
        if op.name in ALIAS_OPS:
            storage.union(op.inputs[0], op.outputs[0])
    if storage.find(graph.inputs[0]) == storage.find(graph.outputs[0]):
        raise CompileError("the model's output is its input reshaped: nothing to compile")
    consumers = _consumers(graph, pos)
    in_place = _share_in_place(graph, order, storage, consumers, not_in_place, stop_drift,
                               cache or {"shift": {}, "nbytes": [t.nbytes for t in graph.tensors]})
    buffers = list(_buffers(graph, order, storage, consumers).values())
    plan = Plan(in_place=in_place, order=list(order))
    offsets, plan.arena_bytes = place(buffers, shuffle)
    for b, offset in zip(buffers, offsets, strict=True):
        for t in b["tensors"]:
            plan.location[t] = offset + b["rel"][t]
        plan.buffers.append({"tensors": b["tensors"], "bytes": b["size"], "first_op": b["first"],
                             "last_op": b["last"], "location": offset})
    for t in graph.tensors:
        if t.data is not None:
            plan.location[t.index] = "const"
    plan.input_offset = plan.location[graph.inputs[0]]
    plan.output_offset = plan.location[graph.outputs[0]]
    plan.live, plan.lower_bound_bytes = _liveness(buffers, len(order))
    return plan


def _liveness(buffers: list[dict], n_ops: int) -> tuple[list[dict], int]:
    """Per position (-1: the caller's input, before the first op): the tensors alive and the
    bytes they truly occupy; the most of those is the lower bound of any placement."""
    rows = [{"tensors": [], "bytes": 0} for _ in range(n_ops + 2)]
    for b in buffers:
        spans: dict[int, list[int]] = {}
        for (first, last, lo, hi), t in zip(b["extents"], b["tensors"], strict=True):
            for p in range(first, last + 1):
                rows[p + 1]["tensors"].append(t)
                s = spans.setdefault(p, [lo, hi])
                s[0], s[1] = min(s[0], lo), max(s[1], hi)
        for p, (lo, hi) in spans.items():
            rows[p + 1]["bytes"] += hi - lo
    return rows, max(r["bytes"] for r in rows)


# --------------------------------------------------------------------------- placement


def bytes_at(b: dict, span: int) -> np.ndarray:
    """The bytes buffer ``b`` holds at each op (index op + 1; the caller's input is op -1)."""
    out = np.zeros(span + 1, dtype=np.int64)
    for first, last, size in b["segments"]:
        seg = out[first + 1:last + 2]
        np.maximum(seg, size, out=seg)
    return out


def _profile(b: dict) -> dict[int, tuple[int, int]]:
    """Position -> the bytes [lo, hi) of the buffer in use there (``extents``, when the
    buffer has them: tensors sharing it at offsets; else ``segments``, from its start)."""
    prof: dict[int, tuple[int, int]] = {}
    parts = b.get("extents") or [(first, last, 0, size) for first, last, size in b["segments"]]
    for first, last, lo, hi in parts:
        for p in range(first, last + 1):
            old = prof.get(p)
            prof[p] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return prof


def _place_in_order(order: list[int], buffers: list[dict], profiles: list[dict]) -> tuple[list[int], int]:
    """First fit: each buffer at the lowest offset where, at every op it shares with a
    placed buffer, the bytes each uses there do not meet. The placed buffers alive at each
    op are indexed, so a buffer meets only those alive during its own lifetime."""
    alive_at: dict[int, list[int]] = {}
    where = [0] * len(buffers)
    top = 0
    for j in order:
        mine = profiles[j]
        # Offsets c at which mine meets another at op p: lo_o - hi_j < c - w_o < hi_o - lo_j.
        forbidden = []
        for p, (lo, hi) in mine.items():
            for o in alive_at.get(p, ()):
                olo, ohi = profiles[o][p]
                forbidden.append((where[o] + olo - hi, where[o] + ohi - lo))
        forbidden.sort()
        offset = 0
        for a, b in forbidden:
            if a >= offset:
                break
            offset = max(offset, b)
        where[j] = offset
        top = max(top, offset + max(hi for _, hi in mine.values()))
        for p in mine:
            alive_at.setdefault(p, []).append(j)
    return where, top


def place(buffers: list[dict], shuffle: bool = True) -> tuple[list[int], int]:
    """Offsets for buffers with lifetimes [first, last]: the best first-fit over a few
    orders (TFLM's GreedyMemoryPlanner uses one: largest first) and seeded shuffles."""
    idx = list(range(len(buffers)))
    orders = [
        sorted(idx, key=lambda i: (-buffers[i]["size"], buffers[i]["first"])),
        sorted(idx, key=lambda i: (buffers[i]["first"], -buffers[i]["size"])),
        sorted(idx, key=lambda i: (-(buffers[i]["last"] - buffers[i]["first"]), -buffers[i]["size"])),
        sorted(idx, key=lambda i: (-buffers[i]["size"] * (buffers[i]["last"] - buffers[i]["first"] + 1),
                                   buffers[i]["first"])),
    ]
    rng = np.random.default_rng(0)
    shuffles = min(PLACEMENT_SHUFFLES, PLACEMENT_WORK // max(len(buffers), 1)) if len(buffers) > 2 and shuffle else 0
    for _ in range(shuffles):
        orders.append([int(i) for i in rng.permutation(len(buffers))])
    profiles = [_profile(b) for b in buffers]
    best_where, best_top = _place_in_order(orders[0], buffers, profiles)
    for order in orders[1:]:
        where, top = _place_in_order(order, buffers, profiles)
        if top < best_top:
            best_where, best_top = where, top
    return best_where, best_top
