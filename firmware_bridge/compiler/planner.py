"""The memory plan: where every tensor of the graph lives while the model runs.

``plan_memory(graph) -> Plan`` is the whole interface: ``Plan.location`` says for every
tensor 'input' (read where the caller keeps it), 'output' (written where the caller wants
it), 'const' (a weight) or its byte offset in the one static buffer, whose size is
``Plan.arena_bytes``; ``Plan.in_place`` names the ops whose output reuses an input's storage.

How: RESHAPE / EXPAND_DIMS / SQUEEZE are aliases (no copy); element-wise ops and softmax run
in place when their input dies there, unpadded pooling and mean too where that makes the
buffer smaller; the tensors sharing one storage make a buffer, alive over the ops from its
first producer to its last consumer; every buffer gets an offset by first fit (the lowest
offset no buffer alive at the same op holds), the best of several orders (TFLM's
GreedyMemoryPlanner uses one: largest first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.compiler.reader import (
    ALIAS_OPS,
    PADDING_VALID,
    CompileError,
    COp,
    CTensor,
    Graph,
    shape4,
)

# Orders tried by the placer beyond the classic ones: seeded, so a model always compiles
# to the same plan. 100 shuffles take ~0.1 s on a 40-buffer graph.
PLACEMENT_SHUFFLES = 100


@dataclass
class Plan:
    """Where every tensor lives: 'input', 'output', 'const', or an arena offset."""

    location: dict[int, str | int] = field(default_factory=dict)
    arena_bytes: int = 0  # the size of the one static buffer
    lower_bound_bytes: int = 0  # the most bytes alive at any op: no placement needs less
    buffers: list[dict] = field(default_factory=list)  # tensors sharing storage, lifetime, place
    in_place: dict[int, int] = field(default_factory=dict)  # op index -> the input position reused

    @property
    def offsets(self) -> dict[int, int]:
        """Tensor index -> its byte offset in the arena (tensors that live in it only)."""
        return {t: w for t, w in self.location.items() if isinstance(w, int)}


def plan_memory(graph: Graph) -> Plan:
    """The smallest plan found: every op that can run in place does, except the shrinking
    ones (pooling, mean) left out where that makes the buffer smaller (an output pinned to
    the start of its input can block a better offset for the next big tensor). The lower
    bound is that of running everything in place: in place never adds live bytes."""
    tensors = graph.tensors
    shrinking = [op.index for op in graph.ops if op.name not in ALIAS_OPS and in_place_candidates(op, tensors)
                 and tensors[op.outputs[0]].nbytes < tensors[op.inputs[0]].nbytes]
    best_off: frozenset[int] = frozenset()
    best = _plan(graph, best_off)
    lower_bound = best.lower_bound_bytes
    for i in shrinking:  # greedy descent, one op at a time
        trial = _plan(graph, best_off | {i})
        if trial.arena_bytes < best.arena_bytes:
            best, best_off = trial, best_off | {i}
    best.lower_bound_bytes = lower_bound
    return best


def in_place_candidates(op: COp, tensors: list[CTensor]) -> list[int]:
    """Input positions whose storage the output may reuse, given how the kernel reads."""
    out = tensors[op.outputs[0]]
    if op.name in ("ADD", "SUB", "MUL"):
        return [k for k in (0, 1) if shape4(tensors[op.inputs[k]].shape) == shape4(out.shape)
                and tensors[op.inputs[k]].data is None]
    if op.name == "SOFTMAX":
        return [0]
    # Unpadded pooling writes output pixel q after its last read of input pixel q, and
    # later outputs read only pixels after q (see tm_pooling.c).
    if op.name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return [0] if op.options.padding == PADDING_VALID else []
    # MEAN writes output k after summing it, over input element k, which belongs to an
    # output <= k: dropping dimensions from a row-major index never increases it.
    if op.name == "MEAN":
        return [0]
    return []


class _Storage:
    """Union-find over tensor indices: the tensors that share one storage."""

    def __init__(self, tensors: list[CTensor]):
        self.parent = {t.index: t.index for t in tensors}

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, keep: int, other: int) -> None:
        self.parent[self.find(other)] = self.find(keep)


def _consumers(graph: Graph) -> dict[int, list[int]]:
    """Non-constant tensor -> the ops that read it, in graph order."""
    consumers: dict[int, list[int]] = {}
    for op in graph.ops:
        for i in op.inputs:
            if i >= 0 and graph.tensors[i].data is None:
                consumers.setdefault(i, []).append(op.index)
    return consumers


def _share_in_place(graph: Graph, storage: _Storage, consumers: dict[int, list[int]],
                    not_in_place: frozenset[int]) -> dict[int, int]:
    """Let every op that can write over an input dying there do so: op -> input position."""
    tensors, inputs, outputs = graph.tensors, graph.inputs, graph.outputs
    find = storage.find

    def members(root: int) -> list[int]:
        return [t.index for t in tensors if t.data is None and find(t.index) == root]

    in_place: dict[int, int] = {}
    for op in graph.ops:
        if op.name in ALIAS_OPS:
            continue
        graph_in, graph_out = find(inputs[0]), find(outputs[0])
        for k in [] if op.index in not_in_place else in_place_candidates(op, tensors):
            src = op.inputs[k]
            root = find(src)
            if root in (graph_in, graph_out):
                continue
            # Another input viewing the same bytes in another shape would read overwritten ones.
            if any(i != src and i >= 0 and tensors[i].data is None and find(i) == root for i in op.inputs):
                continue
            last = max((c for m in members(root) for c in consumers.get(m, [])), default=-1)
            if last == op.index and tensors[src].nbytes >= tensors[op.outputs[0]].nbytes:
                in_place[op.index] = k
                storage.union(src, op.outputs[0])
                break
    return in_place


def _buffers(graph: Graph, storage: _Storage, consumers: dict[int, list[int]]) -> dict[int, dict]:
    """Storage root -> its buffer: tensors, size, first and last op, lifetime segments."""
    n_ops = len(graph.ops)
    producer = {o: op.index for op in graph.ops for o in op.outputs}
    buffers: dict[int, dict] = {}
    for t in graph.tensors:
        if t.data is not None:
            continue
        used = t.index in producer or t.index in consumers or t.index in graph.inputs
        if not used:
            continue
        b = buffers.setdefault(storage.find(t.index), {"tensors": [], "size": 0, "first": n_ops, "last": -1})
        b["tensors"].append(t.index)
        b["size"] = max(b["size"], t.nbytes)
        first = producer.get(t.index, -1)
        last = max([first, *consumers.get(t.index, [])] + ([n_ops] if t.index in graph.outputs else []))
        # A buffer is the tensors that share its storage (aliases, in-place outputs); each
        # is a segment of its lifetime with its own size, so a pooled output in place of
        # its input holds only its own bytes once the input is dead.
        b.setdefault("segments", []).append((first, last, t.nbytes))
        b["first"], b["last"] = min(b["first"], first), max(b["last"], last)
    return buffers


def _plan(graph: Graph, not_in_place: frozenset[int]) -> Plan:
    """Aliases, in-place ops, lifetimes and offsets in one static buffer."""
    storage = _Storage(graph.tensors)
    for op in graph.ops:
        if op.name in ALIAS_OPS:
            storage.union(op.inputs[0], op.outputs[0])
    consumers = _consumers(graph)
    in_place = _share_in_place(graph, storage, consumers, not_in_place)
    graph_in, graph_out = storage.find(graph.inputs[0]), storage.find(graph.outputs[0])
    if graph_in == graph_out:
        raise CompileError("the model's output is its input reshaped: nothing to compile")

    buffers = _buffers(graph, storage, consumers)
    plan = Plan(in_place=in_place)
    arena = [b for r, b in buffers.items() if r not in (graph_in, graph_out)]
    offsets, plan.arena_bytes = place(arena)
    for b, offset in zip(arena, offsets, strict=True):
        b["offset"] = offset
    for root, b in buffers.items():
        where = "input" if root == graph_in else "output" if root == graph_out else b["offset"]
        for t in b["tensors"]:
            plan.location[t] = where
        plan.buffers.append({"tensors": b["tensors"], "bytes": b["size"], "first_op": b["first"],
                             "last_op": b["last"], "location": where})
    for t in graph.tensors:
        if t.data is not None:
            plan.location[t.index] = "const"
    # The lower bound: at each op, the bytes of every arena buffer alive across it.
    n_ops = len(graph.ops)
    plan.lower_bound_bytes = int(sum((bytes_at(b, n_ops + 1) for b in arena),
                                     np.zeros(n_ops + 2, dtype=np.int64)).max())
    return plan


# --------------------------------------------------------------------------- placement


def bytes_at(b: dict, span: int) -> np.ndarray:
    """The bytes buffer ``b`` holds at each op (index op + 1; the caller's input is op -1)."""
    out = np.zeros(span + 1, dtype=np.int64)
    for first, last, size in b["segments"]:
        seg = out[first + 1:last + 2]
        np.maximum(seg, size, out=seg)
    return out


def _place_in_order(order: list[dict], live: dict[int, np.ndarray]) -> tuple[dict[int, int], int]:
    """First fit: each buffer at the lowest offset where it overlaps no placed buffer at
    any op both are alive at (``live``: each buffer's bytes at each op)."""
    placed: list[tuple[int, dict]] = []
    where: dict[int, int] = {}
    top = 0
    for b in order:
        clashes = []  # (offset, its bytes, b's bytes), at the ops both are alive at
        mine_all = live[id(b)]
        for off, other in placed:
            theirs_all = live[id(other)]
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


def place(buffers: list[dict]) -> tuple[list[int], int]:
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
    live = {id(b): bytes_at(b, span) for b in buffers}
    best_where, best_top = _place_in_order(orders[0], live)
    for order in orders[1:]:
        where, top = _place_in_order(order, live)
        if top < best_top:
            best_where, best_top = where, top
    return [best_where[id(b)] for b in buffers], best_top
