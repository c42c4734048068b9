"""The one stage contract (``pipeline.core.stage``), checked for every stage the same way, as
scikit-learn's ``check_estimator`` checks every estimator.

Each stage is run as a user runs it (``tinyml <stage>``, through the CLI's one dispatch) on a
copy of the shared fast run, with a failure injected where it writes its own report: the disk
fills in the middle of that write. Then, for every stage:

(a) the report is written atomically: the write went through ``pipeline.core.artifacts``, no
    temporary file is left, and the report is the previous one, whole, or none;
(b) the report document is refreshed after the failure (report.md is newer), as after a success;
(c) the artifacts downstream of the stage that it made stale are gone;
(d) every look at the test set is in the ledger, failure or not (one line per stage that looks).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.core import artifacts
from pipeline.core.errors import PipelineError
from pipeline.core.ledger import LEDGER
from pipeline.core.stage import StageResult

pytestmark = pytest.mark.slow

FAKE_SHA = "0" * 64


@dataclass(frozen=True)
class Spec:
    argv: tuple[str, ...]  # after `tinyml <stage> --run RUN`; {run} and {cheap} are filled in
    report: str  # the stage's own report, where the failure is injected
    stale: tuple[str, ...]  # artifacts of the run that the stage makes stale: gone after it
    looks: int  # lines the stage adds to the test ledger
    refreshes: bool = True  # the report stage fails before a new page exists: the old one stays


SPECS = {
    # Another seed is another split: every artifact made from the old one is stale.
    "audit": Spec(("--config", "{run}/config.toml", "--seed", "1"), "audit.json",
                  ("float.keras", "int8.tflite", "device_report.json"), 0),
    "train": Spec(("--config", "{cheap}"), "train_report.json", ("int8.tflite", "device_report.json"), 1),
    "quantize": Spec((), "quantize_report.json", ("device_report.json",), 1),
    # Results of another model on the device are not resumed: that model's lines are gone.
    "flash": Spec((), "device_report.json", (), 1),
    "report": Spec((), "report.html", (), 0, refreshes=False),
}

MODULES = {"audit": "pipeline.audit.stage", "train": "pipeline.train.stage", "quantize": "pipeline.quantize.stage",
           "flash": "pipeline.device.stage", "report": "pipeline.report.document"}


@pytest.fixture(scope="module")
def trained(fast_run, tmp_path_factory) -> tuple[Path, Path]:
    """The shared fast run (conftest: train, quantize, flash), and a cheaper train config for
    the train stage's turn: one search trial, no reproducibility refit, no leave-one-group-out."""
    text = (Path(__file__).resolve().parents[1] / "pipeline" / "core" / "configs" / "fast.toml").read_text()
    for key, value in (("trials", "1"), ("reproducibility_check", "false"), ("logo_folds", "0")):
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
    cheap = tmp_path_factory.mktemp("contract") / "cheap.toml"
    cheap.write_text(text.replace("[train]\n", '[train]\nsearch_engine = "sequential"\n', 1))
    return fast_run, cheap


def _ledger(run: Path) -> list[dict]:
    path = run / LEDGER
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _temporaries(run: Path, name: str) -> list[Path]:
    return [p for p in run.rglob(f".{name}.*.tmp")]


@contextlib.contextmanager
def _disk_fills_while_writing(monkeypatch, name: str):
    """Every write through pipeline.core.artifacts goes on as usual, but the one of ``name``
    fails once its temporary holds half the bytes: a full disk, or a kill, mid-write."""
    real = artifacts.atomic_path
    seen: list[Path] = []

    @contextlib.contextmanager
    def atomic_path(path):
        with real(path) as tmp:
            yield tmp
            if Path(path).name == name and not seen:
                seen.append(tmp)
                data = tmp.read_bytes()
                tmp.write_bytes(data[: len(data) // 2])
                raise PipelineError(f"{path}: cannot write (injected: no space left on device)")

    monkeypatch.setattr(artifacts, "atomic_path", atomic_path)
    yield seen


def _cli(argv: list[str]) -> tuple[int, str]:
    import tinyml_cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = tinyml_cli.main(argv)
    return code, buf.getvalue()


@pytest.mark.parametrize("stage", list(SPECS))
def test_every_stage_is_run_the_one_way(stage):
    """``run(cfg, run_dir, *, out=print, **options) -> StageResult`` for every stage."""
    import importlib

    run = importlib.import_module(MODULES[stage]).run
    params = inspect.signature(run).parameters
    assert list(params)[:2] == ["cfg", "run_dir"], stage
    assert params["out"].kind is inspect.Parameter.KEYWORD_ONLY and params["out"].default is print
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in params.items() if name not in ("cfg", "run_dir"))
    assert inspect.signature(run).return_annotation in (StageResult, "StageResult")


@pytest.mark.parametrize("stage", list(SPECS))
def test_stage_contract(stage, trained, tmp_path, monkeypatch):
    spec = SPECS[stage]
    fast_run, cheap = trained
    run = shutil.copytree(fast_run, tmp_path / "run")
    if stage == "flash":  # results of another model: the flash must not resume them
        lines = [json.loads(x) for x in (run / "device_eval.jsonl").read_text().splitlines()]
        (run / "device_eval.jsonl").write_text("".join(json.dumps({**r, "model_sha256": FAKE_SHA}) + "\n" for r in lines))
    for name in spec.stale:
        assert (run / name).exists(), f"the fast run has no {name} to go stale"
    before = (run / spec.report).read_bytes() if (run / spec.report).exists() else None
    old = (run / "report.md").stat().st_mtime - 3600
    os.utime(run / "report.md", (old, old))
    looks = _ledger(run)
    argv = [stage, "--run", str(run), *(a.format(run=run, cheap=cheap) for a in spec.argv)]

    with _disk_fills_while_writing(monkeypatch, spec.report) as seen:
        code, output = _cli(argv)

    # The stage failed where it wrote its report, as a disk error does: one line, exit 2.
    assert seen, f"{stage}: {spec.report} was not written through pipeline.core.artifacts:\n{output[-2000:]}"
    assert code == 2 and "injected: no space left on device" in output, output[-2000:]
    # (a) no temporary is left, and the report is the previous one, whole, or none.
    assert not _temporaries(run, spec.report)
    after = (run / spec.report).read_bytes() if (run / spec.report).exists() else None
    assert after in (before, None)
    # (b) the report document shows what exists after the failure.
    if spec.refreshes:
        assert (run / "report.md").stat().st_mtime > old, f"{stage}: report.md not refreshed after a failure"
    else:
        assert (run / "report.md").stat().st_mtime == old  # the previous page, whole
    # (d) each look at the test set is one more line in the ledger, the failure notwithstanding.
    added = _ledger(run)[len(looks):]
    assert [e["stage"] for e in added] == [stage] * spec.looks, added
    # (c) what the stage made stale is gone.
    for name in spec.stale:
        assert not (run / name).exists(), f"{stage} left the stale {name}"
    if stage == "flash":
        kept = [json.loads(x) for x in (run / "device_eval.jsonl").read_text().splitlines()]
        assert kept and all(r.get("model_sha256") != FAKE_SHA for r in kept)
