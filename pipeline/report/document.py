"""The report: one page a person can read (``report.html``) and the same figures in text (``report.md``).

It reads only the run directory: ``splits.json``, ``audit.json``, ``train_report.json``,
``quantize_report.json``, ``device_report.json``, ``device_eval.jsonl``, ``test_ledger.jsonl``
and ``config.toml``. With the config it reloads the dataset (the loaders are pure and fast) to
draw what the reports only count: example windows, recording lengths, the worst outliers.
If the dataset cannot be reloaded, those figures are left out and the page says why.

Sections follow the questions a skeptical reader asks, in order: the data, the audit,
baselines against the convnet, training, quantization, the device, and a model info sheet
on leakage (Kapoor & Narayanan 2023) with the count of looks at the test set. A stage that
has not run leaves its section saying which command runs it.

The page is self-contained (figures are base64 PNGs, no external CSS, JS or fonts), and is
built whole in memory before either file is written: a malformed artifact is a one-line
PipelineError naming the file, never a half-written page.

This module assembles the page; the rest of ``pipeline.report`` holds its parts: ``run`` (the
artifacts read), ``blocks`` (readers, formatting, page blocks), one module per group of
sections (``sections_data``, ``sections_model``, ``sections_device``, ``info_sheet``),
``render`` (HTML, Markdown) and ``plots``. It reads artifacts only and imports no stage.
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline.core.artifacts import write_text
from pipeline.core.errors import PipelineError
from pipeline.core.stage import StageResult
from pipeline.report.blocks import (
    FIGURE_CACHE,
    Mark,
    Section,
    Table,
    figure_cache,
    g,
    gd,
    gl,
    gn,
    pct,
    text,
    verdict,
    with_ci,
)
from pipeline.report.info_sheet import section_info_sheet
from pipeline.report.render import render_html, render_md
from pipeline.report.run import Run, load_run, one_line
from pipeline.report.sections_data import repairs_row, section_audit, section_data
from pipeline.report.sections_device import section_device
from pipeline.report.sections_dsp import section_features
from pipeline.report.sections_model import section_baselines, section_quantization, section_training

HTML = "report.html"
MD = "report.md"


# --------------------------------------------------------------------------- at a glance


def glance(run: Run) -> Table:
    a, t, q, d = run.audit, run.train, run.quantize, run.device
    err, warn = gl(a, "errors_failed"), gl(a, "warnings_failed")
    rows = [repairs_row(run.splits)] if gl(run.splits, "repairs") else []
    rows += [["data and audit",
             verdict(not err, "passed", "FAILED") if a is not None else Mark("not run", "muted"),
             f"{len(gl(a, 'checks'))} checks, {len(err)} error(s), {len(warn)} warning(s)" if a is not None else "make train"]]
    if t is None:
        rows.append(["train", Mark("not run", "muted"), "make train"])
    else:
        rows.append(["train", verdict(g(t, "status") == "passed", "passed", text(g(t, "status")).upper()),
                     f"float test balanced accuracy {with_ci(gd(t, 'metrics', 'test'), 'balanced_accuracy')}"
                     if gd(t, "metrics", "test") else text(g(t, "failure", default="no test metrics"))])
    if q is None:
        rows.append(["quantize", Mark("not run", "muted"), "make quantize"])
    else:
        rows.append(["quantize", Mark("OVERRIDE --accept-drop", "bad") if gd(q, "override")
                     else verdict(g(q, "gates_passed") is True, "passed", "FAILED"),
                     f"int8 test balanced accuracy {with_ci(gd(q, 'test'), 'balanced_accuracy')}" if gd(q, "test")
                     else "gates failed: no test look" if g(q, "gates_passed") is not True else "n/a"])
    if d is None:
        rows.append(["flash", Mark("not run", "muted"), "make flash"])
    else:
        rows.append(["flash", verdict(g(d, "agreement_with_host_int8", "passed") is not False, "passed",
                                      "FAILED: the device disagrees"),
                     f"device test balanced accuracy {with_ci(gd(d, 'metrics'), 'balanced_accuracy')}; agreement with "
                     f"host int8 {pct(gn(d, 'agreement_with_host_int8', 'top1'), 2)}"])
    looks, repeated = run.test_looks
    rows.append(["test set", Mark(f"{len(looks)} look(s)", "warn" if repeated else "good"),
                 f"repeated for: {', '.join(sorted(repeated))}" if repeated else "one per purpose (test_ledger.jsonl)"])
    return Table(["stage", "status", "headline"], rows)


# --------------------------------------------------------------------------- the stage


BUILDERS = (
    ("data", "The data", section_data, ("splits.json", "audit.json", "config.toml")),
    ("audit", "The audit", section_audit, ("audit.json",)),
    ("features", "The features (DSP)", section_features, ("train_report.json", "config.toml")),
    ("baselines", "Baselines vs the convnet", section_baselines, ("train_report.json", "audit.json")),
    ("training", "Training", section_training, ("train_report.json",)),
    ("quantization", "Quantization", section_quantization, ("quantize_report.json", "train_report.json")),
    ("device", "On the device", section_device, ("device_report.json", "quantize_report.json")),
    ("leakage", "Model info sheet: leakage", section_info_sheet,
     ("splits.json", "audit.json", "train_report.json", "quantize_report.json", "test_ledger.jsonl")),
)


def build_report(run_dir: str | Path, out=print) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` from whatever artifacts the run has; return their paths."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    with figure_cache(run_dir / FIGURE_CACHE):  # the figures of earlier stages are not drawn again
        sections = _sections(run, run_dir)
    name = text(g(run.splits, "dataset", "name"))
    title = f"tinyml report: {name}"
    meta = f"run directory {run_dir.resolve()}; generated {time.strftime('%Y-%m-%d %H:%M:%S %z')}"
    top = glance(run)
    page = render_html(title, meta, top, sections)
    md = render_md(title, meta, top, sections)
    html_path = write_text(run_dir / HTML, page)
    md_path = write_text(run_dir / MD, md)
    out(f"report: wrote {html_path} and {md_path}")
    return html_path, md_path


def _sections(run, run_dir: Path) -> list:
    sections = []
    for number, (anchor, title, build, sources) in enumerate(BUILDERS, 1):
        try:
            blocks = build(run)
        except PipelineError:
            raise
        except Exception as exc:
            # The readers above tolerate missing keys; what is left is content of the wrong kind.
            present = [str(run_dir / name) for name in sources if (run_dir / name).exists()]
            raise PipelineError(
                f"{' or '.join(present) or run_dir}: unexpected content for report section {number} "
                f"({title}): {type(exc).__name__}: {one_line(exc)}",
                hint="the file is damaged or from another version; rerun the stage that writes it",
            ) from exc
        sections.append(Section(number, anchor, title, blocks))
    return sections


def refresh_report(run_dir: str | Path, out=print) -> tuple[Path, Path] | None:
    """What the CLI calls at the end of every stage, passed or failed: rebuild the report,
    and never fail the stage for it."""
    try:
        return build_report(run_dir, out=out)
    except Exception as exc:
        out(f"warning: report not refreshed: {one_line(exc)} (run `tinyml report --run {run_dir}` for details)")
        return None


def run(cfg, run_dir: str | Path, *, out=print) -> StageResult:
    """The report stage (``pipeline.core.stage``): ``report.html`` and ``report.md`` from the
    run's artifacts. ``cfg`` may be None: the report reads the run's own ``config.toml``."""
    html_path, md_path = build_report(run_dir, out=out)
    return StageResult("report", html_path, {}, paths=(html_path, md_path))
