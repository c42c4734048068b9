"""The README and docs/ stay true: the config table is what config.py generates, the README's
figures are what bench/results.json holds, and every path they name exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.core import config_docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PATH = re.compile(r"(?<![\w/.-])((?:pipeline|firmware_bridge|tests|bench|docs)/[\w./-]*)")


def _load_summary():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_summary", ROOT / "bench" / "summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_table_is_generated_from_config_py():
    stale = config_docs.stale_keys((ROOT / "docs" / "config.md").read_text(encoding="utf-8"))
    assert not stale, ("docs/config.md differs from pipeline/core/config.py for "
                       f"{', '.join(stale)}: run python -m pipeline.core.config_docs --write")


def test_a_changed_key_is_named(monkeypatch):
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    edited = text.replace("| `epochs` | int | `80` |", "| `epochs` | int | `81` |")
    assert edited != text
    assert config_docs.stale_keys(edited) == ["[train] epochs"]
    dropped = "\n".join(line for line in text.splitlines() if not line.startswith("| `lr_min`"))
    assert config_docs.stale_keys(dropped) == ["[train.search_space] lr_min"]
    assert config_docs.stale_keys("no table") == ["(the generated block is missing)"]


def test_readme_figures_are_quoted_from_the_committed_results_file():
    summary = _load_summary()
    results = json.loads((ROOT / "bench" / "results.json").read_text(encoding="utf-8"))
    block = summary.readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block == summary.render(results), "README figures differ from bench/results.json: run python bench/summary.py"
    for name, section in results["sections"].items():
        assert section["status"] in ("measured", summary.NOT_MEASURED), name
        if section["status"] == "measured":
            assert section.get("measured_at"), f"{name}: a measured figure says when"


def test_readme_is_short_and_starts_with_what_matters():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 210
    heads = [line for line in lines if line.startswith("## ")]
    assert heads.index("## A real board") < heads.index("## What to expect")
    assert "make train quantize flash" in text and "make test" in text
    for doc in DOCS:
        assert f"(docs/{doc.name})" in text, f"README does not point to docs/{doc.name}"


@pytest.mark.parametrize("doc", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_path_named_exists(doc):
    text = doc.read_text(encoding="utf-8")
    # A row of docs/layout.md's "before the regroup" table names the old path first.
    text = "\n".join(line.split("|", 2)[2] if line.startswith("| was ") else line for line in text.splitlines())
    missing = []
    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".,:;")
        if path.startswith("bench/results/") or any(c in path for c in "*<{"):
            continue  # benchmark output (ignored by git), and patterns
        if not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_docs_describe_the_stage_contract_and_layout():
    stages = (ROOT / "docs" / "stages.md").read_text(encoding="utf-8")
    assert "run(cfg, run_dir, *, out=print, **options) -> StageResult" in stages
    layout = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    for folder in ("core", "data", "audit", "ml", "train", "tflite", "quantize", "device", "report"):
        assert f"  {folder}/" in layout, folder
