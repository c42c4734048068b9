"""``[compile] memory``: which memory plan a model is compiled with, and why.

- "fast": every op on whole tensors (no row loops, no row copies);
- "min": residual blocks (``patches.fuse_residual_rows``) and the first, high-resolution
  stage (``stripes.fuse_stage``, 2 to 6 layers) computed row by row, whichever of those
  makes the plan smallest: less RAM, row copies and edge bands' MACs (docs/compiler.md has
  the measured cost);
- "auto" (the default): "fast" when its total RAM fits the board's RAM budget (the rule the
  quantize stage gates on: ``pipeline.core.boards.model_budgets``, the board's RAM less
  ``[quantize] ram_reserve``, or ``[quantize] ram_budget_bytes``), else "min".
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_bridge.compiler.patches import fuse_residual_rows
from firmware_bridge.compiler.planner import Plan, plan_memory
from firmware_bridge.compiler.reader import CompileError, Graph
from firmware_bridge.compiler.stripes import fuse_stage, stage_chain

MEMORY_MODES = ("auto", "min", "fast")


@dataclass
class Budget:
    """The RAM the model may use, and where that figure comes from (for the message)."""

    ram_bytes: int
    source: str

    @classmethod
    def of(cls, quantize=None) -> Budget:
        """The quantize stage's RAM budget (``[quantize]`` of a config; default: the default board's)."""
        from pipeline.core.boards import model_budgets
        from pipeline.core.config import QuantizeConfig

        q = quantize if quantize is not None else QuantizeConfig()
        ram = model_budgets(q)[1]
        source = ("[quantize] ram_budget_bytes" if q.ram_budget_bytes else
                  f"{q.board}'s RAM less [quantize] ram_reserve = {q.ram_reserve:g}")
        return cls(ram, source)


@dataclass
class Choice:
    graph: Graph
    plan: Plan
    mode: str  # "min" or "fast": the plan compiled
    reason: str


def choose_plan(graph: Graph, memory: str = "auto", budget: Budget | None = None) -> Choice:
    """The graph to emit (fused row blocks or not) and its plan, for ``memory``."""
    if memory not in MEMORY_MODES:
        raise CompileError(f"[compile] memory = {memory!r}: expected one of {', '.join(MEMORY_MODES)}")
    plan = plan_memory(graph)
    if memory == "fast":
        return Choice(graph, plan, "fast", "[compile] memory = \"fast\"")
    if memory == "auto":
        budget = budget or Budget.of()
        if plan.arena_bytes <= budget.ram_bytes:
            return Choice(graph, plan, "fast", f"[compile] memory = \"auto\": the fast plan's {plan.arena_bytes:,} B "
                          f"fit the RAM budget of {budget.ram_bytes:,} B ({budget.source})")
    fused, fused_plan = smallest_rows_plan(graph, plan)
    smaller = fused is not graph
    if memory == "min":
        why = (f"[compile] memory = \"min\": {plan.arena_bytes:,} B -> {fused_plan.arena_bytes:,} B" if smaller
               else "[compile] memory = \"min\": nothing computed row by row would need less RAM (the fast plan)")
        return Choice(fused, fused_plan, "min", why) if smaller else Choice(graph, plan, "min", why)
    over = f"the fast plan's {plan.arena_bytes:,} B exceed the RAM budget of {budget.ram_bytes:,} B ({budget.source})"
    if not smaller:
        return Choice(graph, plan, "fast", f"[compile] memory = \"auto\": {over}, and nothing computed row by "
                      "row would need less: the fast plan (it does not fit)")
    fits = "fits" if fused_plan.arena_bytes <= budget.ram_bytes else "does not fit either"
    return Choice(fused, fused_plan, "min", f"[compile] memory = \"auto\": {over}: the min plan, "
                  f"{fused_plan.arena_bytes:,} B ({fits})")


def smallest_rows_plan(graph: Graph, plan: Plan) -> tuple[Graph, Plan]:
    """The graph with row-by-row residual blocks and/or a row-by-row first stage whose plan
    is smallest, and that plan (``graph, plan`` themselves when none is smaller)."""
    best = (graph, plan)
    candidates = [fuse_residual_rows(graph)]
    for layers in range(2, len(stage_chain(graph)) + 1):
        candidates.append(fuse_residual_rows(fuse_stage(graph, layers)))
    for cand in candidates:
        if cand is not graph:
            p = plan_memory(cand)
            if p.arena_bytes < best[1].arena_bytes:
                best = (cand, p)
    return best


def run_options(run_dir) -> tuple[str, Budget]:
    """``[compile] memory`` and the RAM budget a run was quantized with (its config.toml);
    the defaults where the run has none."""
    from pathlib import Path

    from pipeline.core.config import load_config

    path = Path(run_dir) / "config.toml"
    cfg = load_config(path) if path.is_file() else None
    return (cfg.compile.memory, Budget.of(cfg.quantize)) if cfg else ("auto", Budget.of())
