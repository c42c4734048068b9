"""The layout's rules (docs/layout.md), checked on the code as it stands: module and function
sizes, imports that run one way, and no import circle. These read the source (ast); they run
nothing of it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "firmware_bridge")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_CLI_LINES = 350  # argument parsing and dispatch only
STAGES = ("audit", "train", "quantize", "device", "report")
# What each room may import of the project (besides itself). Stages sit above data/ml/tflite,
# which sit above core; firmware_bridge reads the model artifact (tflite) and data formats only.
ALLOWED = {
    "pipeline.core": set(),
    "pipeline.data": {"pipeline.core"},
    "pipeline.ml": {"pipeline.core", "pipeline.data", "pipeline.tflite"},
    "pipeline.tflite": {"pipeline.core"},
    "pipeline.dsp": {"pipeline.core", "pipeline.data", "firmware_bridge.sources"},
    "firmware_bridge": {"pipeline.core", "pipeline.tflite", "pipeline.data", "firmware_bridge"},
}
LOWER = {"pipeline.core", "pipeline.data", "pipeline.ml", "pipeline.tflite", "pipeline.dsp"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    found["tinyml_cli"] = ROOT / "tinyml_cli.py"
    return found


MODULES = _modules()


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The project modules a file imports (``from a.b import c`` counts a.b.c when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return {m for m in out if m.split(".")[0] in PACKAGES}


def _room(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "firmware_bridge":
        return "firmware_bridge"
    return ".".join(parts[:2]) if len(parts) > 1 else module


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_the_size_limit(name):
    limit = MAX_CLI_LINES if name == "tinyml_cli" else MAX_MODULE_LINES
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= limit, f"{MODULES[name].relative_to(ROOT)} has {lines} lines (limit {limit}): split it by meaning"


def test_no_function_is_over_the_size_limit():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over the limit: " + "; ".join(long)


def test_imports_run_one_way():
    wrong = []
    for name, path in MODULES.items():
        room = _room(name)
        for target in _imports(path):
            there = _room(target)
            if there == room or name == "tinyml_cli":
                continue
            if room in ALLOWED:
                ok = there in ALLOWED[room] or any(target.startswith(a) for a in ALLOWED[room])
            else:  # a stage: the layers below it, and firmware_bridge (the device stage)
                ok = there in LOWER or (room == "pipeline.device" and there == "firmware_bridge")
                # The audit's vocabulary (pipeline.audit.fixes) is data, which the report may read.
                ok = ok or (room == "pipeline.report" and target in ("pipeline.audit.fixes", "pipeline.device.scoring"))
            if not ok:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports that run the wrong way: " + "; ".join(sorted(wrong))


def test_no_import_circle():
    graph = {name: {t for t in _imports(path, top_level_only=True) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    # Importing a.b.c runs a/__init__ and a/b/__init__: not an edge of the design, left out.
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import circles: " + "; ".join(cycles)


def test_no_import_hidden_behind_type_checking():
    hidden = [str(p.relative_to(ROOT)) for p in MODULES.values() if "if TYPE_CHECKING:" in p.read_text(encoding="utf-8")]
    assert not hidden, f"an import behind TYPE_CHECKING hides a circle: {hidden}"
