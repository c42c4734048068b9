"""The test ledger: one line per look at the test set, by any stage.

The test set is meant to be looked at once. Every scoring of it appends a line to
``test_ledger.jsonl`` (time, stage, purpose, model hash, metrics); a second look for the
same purpose is allowed but warned about, and the report counts the looks.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

LEDGER = "test_ledger.jsonl"


def read_ledger(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / LEDGER
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            # A torn last line from a crash: keep what is whole, say so in the entry list.
            entries.append({"stage": "?", "purpose": "?", "corrupt": True})
    return entries


def record_test_look(run_dir: str | Path, stage: str, purpose: str, model_sha256: str,
                     metrics: dict, split_sha256: str | None = None, warn=None) -> dict:
    """Append one look at the test split; warn if this purpose looked before."""
    run_dir = Path(run_dir)
    previous = [e for e in read_ledger(run_dir) if e.get("purpose") == purpose]
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stage": stage,
        "purpose": purpose,
        "model_sha256": model_sha256,
        "test_sha256": split_sha256,
        "look": len(previous) + 1,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    if previous:
        message = (
            f"warning: the test split was already scored for '{purpose}' "
            f"{len(previous)} time(s) before; each further look makes its figures less of an "
            "unbiased estimate (see test_ledger.jsonl)"
        )
        (warn or (lambda m: print(m, file=sys.stderr)))(message)
        entry["warning"] = message
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LEDGER, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return entry
