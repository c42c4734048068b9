"""int8.tflite -> plain C: the model without an interpreter, byte for byte what TFLM computes.

``compile_model`` reads the flatbuffer into the compiler's graph (``reader``), plans memory
at compile time (``planner``: lifetimes, aliases, in-place ops, offsets in one static
buffer), computes every constant TFLM's Prepare functions would compute exactly as they do
(``prepare``), and writes ``RUN/firmware/compiled/`` (``emitter``, each op through the table
``ops.KERNELS``):

- ``model_compiled.h``: ``int tinyml_model_invoke(const int8_t *input, int8_t *output);``
  and ``TINYML_MODEL_INPUT_BYTES``, ``TINYML_MODEL_OUTPUT_BYTES``, ``TINYML_MODEL_RAM_BYTES``;
- ``model_compiled.c``: weights, biases and requantization constants as ``const`` arrays,
  one static buffer for every intermediate tensor, and the kernel calls in graph order;
- the kernels it calls (``tm_*.c``, ``tm_kernels.h``, from firmware/kernels/).

A debug build (``-DTINYML_MODEL_DEBUG``) calls ``tinyml_model_debug(op, data, bytes)``
after every op, so a test can name the first layer that differs from TFLM (``runner``
builds and runs it on the host).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from firmware_bridge.compiler.emitter import (
    COMPILED_DIR,
    HEADER,
    SOURCE,
    CompiledModel,
    emit_model,
    write_compiled,
)
from firmware_bridge.compiler.modes import MEMORY_MODES, Budget, choose_plan
from firmware_bridge.compiler.ops import KERNELS, SUPPORTED_OPS, check_supported
from firmware_bridge.compiler.patches import fuse_residual_rows
from firmware_bridge.compiler.planner import Plan, plan_memory
from firmware_bridge.compiler.reader import ALIAS_OPS, CompileError, Graph, read_graph
from firmware_bridge.compiler.runner import CFLAGS, build_runner, run_runner, run_runner_debug

__all__ = [
    "ALIAS_OPS", "Budget", "CFLAGS", "COMPILED_DIR", "HEADER", "KERNELS", "SOURCE", "SUPPORTED_OPS", "CompileError",
    "MEMORY_MODES", "CompiledModel", "Graph", "Plan", "build_runner", "check_supported", "compile_bytes", "compile_model",
    "emit_model", "fuse_residual_rows", "plan_memory", "read_graph", "run_runner", "run_runner_debug", "write_compiled",
]


def compile_bytes(data: bytes, source: str = "int8.tflite", memory: str = "auto",
                  budget: Budget | None = None) -> CompiledModel:
    """The C sources of a model (not written anywhere). ``memory`` (modes.py): "min" computes
    residual blocks row by row where that needs less RAM, "fast" never does, "auto" takes
    "fast" when it fits ``budget`` (default: the default board's, as the quantize stage
    budgets) and "min" otherwise; ``CompiledModel.memory`` / ``memory_reason`` say which and why."""
    graph = read_graph(data)
    check_supported(graph)
    choice = choose_plan(graph, memory, budget)
    compiled = emit_model(choice.graph, choice.plan, source, hashlib.sha256(data).hexdigest())
    compiled.memory, compiled.memory_reason = choice.mode, choice.reason
    return compiled


def compile_model(model_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  memory: str = "auto", budget: Budget | None = None) -> CompiledModel:
    """Compile ``int8.tflite`` into ``out_dir`` (default: RUN/firmware/compiled beside it)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise CompileError(f"{model_path}: not found", hint="run `tinyml quantize` first")
    compiled = compile_bytes(model_path.read_bytes(), source=model_path.name, memory=memory,
                             budget=budget)
    write_compiled(compiled, out_dir if out_dir is not None else model_path.parent / COMPILED_DIR)
    return compiled
