"""The test ledger: one line per look at the test set, by any stage.

The test set is meant to be looked at once. Every scoring of it appends a line to
``test_ledger.jsonl`` (time, stage, purpose, model hash, metrics); a second look for the
same purpose is allowed but warned about, and the report counts the looks.

The ledger is appended in place, never rewritten (``pipeline.core.artifacts.append_line``):
a look, once made, cannot be written away. A line torn by a kill is the last one; it is
dropped with a warning (``read_json_lines``), any other damaged line is an error.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from pipeline.core.artifacts import append_line, read_json_lines

LEDGER = "test_ledger.jsonl"


def read_ledger(run_dir: str | Path, warn=None, cut: bool = False) -> list[dict]:
    """Every whole entry of ``test_ledger.jsonl``; a torn last line is dropped and said
    (to ``warn``, else stderr), a damaged line elsewhere is a PipelineError naming it."""
    path = Path(run_dir) / LEDGER
    found = read_json_lines(path, warn=warn or _stderr, cut=cut,
                            hint="the ledger is the record of every look at the test set: restore that line or "
                                 "delete it knowing a look goes unrecorded")
    return [e if isinstance(e, dict) else {"stage": "?", "purpose": "?", "corrupt": True} for _, e in found.records]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def record_test_look(run_dir: str | Path, stage: str, purpose: str, model_sha256: str,
                     metrics: dict, split_sha256: str | None = None, warn=None) -> dict:
    """Append one look at the test split; warn if this purpose looked before."""
    run_dir = Path(run_dir)
    say = warn or _stderr
    previous = [e for e in read_ledger(run_dir, say, cut=True) if e.get("purpose") == purpose]
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stage": stage,
        "purpose": purpose,
        "model_sha256": model_sha256,
        "test_sha256": split_sha256,
        "look": len(previous) + 1,
        # A metric that is not finite (undefined on this split) is null: JSON has no NaN.
        "metrics": {k: v if math.isfinite(v) else None for k, v in metrics.items()
                    if isinstance(v, (int, float))},
    }
    if previous:
        message = (
            f"warning: the test split was already scored for '{purpose}' "
            f"{len(previous)} time(s) before; each further look makes its figures less of an "
            "unbiased estimate (see test_ledger.jsonl)"
        )
        say(message)
        entry["warning"] = message
    append_line(run_dir / LEDGER, entry, "the earlier looks in it are kept", warn=say)
    return entry
