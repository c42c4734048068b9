"""The one stage contract: every stage is ``run(cfg, run_dir, *, out=print, **options) -> StageResult``.

What every stage promises (tests/test_stage_contract.py checks each of them for every stage,
as scikit-learn's ``check_estimator`` does for every estimator):

- its report (``StageResult.report``) is written atomically (``pipeline.core.artifacts``);
- the run's report document is refreshed after a failure as after a success;
- the artifacts downstream of it that it makes stale are removed before it writes;
- every look at the test set is recorded in the ledger (``pipeline.core.ledger``).

A stage that fails raises ``PipelineError`` (exit 2: bad input) or ``GateFailed`` (exit 1: a
check did not pass); a stage that finishes returns a ``StageResult`` whose ``exit_code`` is 0,
or 1 where it finished its work and wrote its report but a check failed (on-device evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageResult:
    """What a stage hands back: its name, its report (path and content), its exit code, and
    anything the next stage in the same process may reuse instead of reading it again."""

    stage: str  # "audit", "train", "quantize", "flash", "eval", "report"
    report_path: Path | None = None  # the stage's own JSON (or document) report
    report: dict = field(default_factory=dict)
    exit_code: int = 0
    paths: tuple[Path, ...] = ()  # other files it wrote that a caller names (report.html, report.md)
    reuse: dict[str, Any] = field(default_factory=dict)  # e.g. {"prepared": Prepared}
