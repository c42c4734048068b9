"""The report end to end: `tinyml train quantize flash report` on the fast config, then the page
checked as a reader's browser would see it (every section, every image decodes, nothing loaded
from the network), and the report built from partial, damaged and odd run directories."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.report.document import build_report, refresh_report

pytestmark = pytest.mark.slow

SECTIONS = ("1. The data", "2. The audit", "3. The features (DSP)", "4. Baselines vs the convnet", "5. Training",
            "6. Quantization", "7. On the device", "8. Model info sheet")
IMG = re.compile(r'<img\b[^>]*\bsrc="([^"]*)"', re.I)
LEAKAGE_TYPES = ("L1.1 No test set", "L1.2 Pre-processing", "L1.3 Feature selection", "L1.4 Duplicates",
                 "L2 Illegitimate features", "L3.1 Temporal leakage", "L3.2 Non-independence",
                 "L3.3 Sampling bias")


def _cli(*argv: str) -> tuple[int, str]:
    import tinyml_cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = tinyml_cli.main(list(argv))
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def full_run(fast_run, tmp_path_factory) -> Path:
    """The shared fast run through every stage (conftest), copied, then `tinyml report`."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(fast_run, run)
    rc, out = _cli("report", "--run", str(run))
    assert rc == 0, out
    assert "report: wrote" in out
    return run


def _copy(run: Path, dest: Path, names: tuple[str, ...] | None = None) -> Path:
    if names is None:
        shutil.copytree(run, dest)
    else:
        dest.mkdir(parents=True)
        for name in names:
            shutil.copy(run / name, dest / name)
    return dest


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(src.split(",", 1)[1], validate=True) for src in IMG.findall(page)]


def _assert_images_decode(page: str) -> int:
    from PIL import Image

    srcs = IMG.findall(page)
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
    for data in _pngs(page):
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every pixel: a truncated PNG raises here
            assert im.format == "PNG"
            # Sized for a laptop-width column: about 7 inches at 100 dpi.
            assert 200 <= im.width <= 800, im.size
    return len(srcs)


def _assert_offline(page: str) -> None:
    lowered = page.lower()
    for attr in re.findall(r'\b(?:src|href|action|poster|data)\s*=\s*"([^"]*)"', page, re.I):
        assert attr.startswith(("data:", "#")), f"loads something: {attr[:80]}"
    assert "<script" not in lowered and "<link" not in lowered and "<iframe" not in lowered
    assert "@import" not in lowered and "url(" not in lowered


def test_full_run_page_has_every_section_every_image_decodes_and_works_offline(full_run):
    page = (full_run / "report.html").read_text(encoding="utf-8")
    md = (full_run / "report.md").read_text(encoding="utf-8")
    for title in SECTIONS:
        assert title in page, title
        assert f"## {title}" in md, title
    # Every stage ran, so no section may say it is missing.
    assert "not run yet" not in page and "not run yet" not in md
    # Class counts, groups, lengths, examples, outliers, metric dots, curves, trials, two pairs of
    # confusion matrices (validation, test), memory, host vs device confusion matrices.
    assert _assert_images_decode(page) >= 12
    assert "figure not drawn" not in page
    _assert_offline(page)
    assert '<meta name="viewport"' in page and "max-width:100%" in page and "overflow-x:auto" in page
    for kind in LEAKAGE_TYPES:
        assert kind in page and kind in md, kind


def test_the_markdown_holds_the_same_figures_as_the_page(full_run):
    from pipeline.report.document import with_ci

    page = (full_run / "report.html").read_text(encoding="utf-8")
    md = (full_run / "report.md").read_text(encoding="utf-8")
    train = json.loads((full_run / "train_report.json").read_text())
    quantize = json.loads((full_run / "quantize_report.json").read_text())
    device = json.loads((full_run / "device_report.json").read_text())
    figures = [with_ci(train["metrics"]["test"], "balanced_accuracy"),
               with_ci(train["metrics"]["val"], "macro_f1"),
               with_ci(quantize["validation"]["int8"], "balanced_accuracy"),
               with_ci(quantize["test"], "balanced_accuracy"),
               with_ci(device["metrics"], "balanced_accuracy"),
               f"{quantize['memory']['model_bytes']:,} B"]
    for f in figures:
        assert f in page and f in md, f
    # Intervals read "value [lo, hi]".
    assert re.search(r"0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]", md)
    # The test ledger's looks are counted, one row per look.
    looks = [json.loads(line) for line in (full_run / "test_ledger.jsonl").read_text().splitlines() if line.strip()]
    assert f"Looks at the test set: {len(looks)}" in md
    for e in looks:
        assert e["purpose"] in md


def test_the_page_of_a_run_with_only_the_split_and_the_audit_says_what_is_missing(full_run, tmp_path):
    run = _copy(full_run, tmp_path / "audit_only", ("splits.json", "audit.json"))
    html_path, md_path = build_report(run, out=lambda _: None)
    page = html_path.read_text(encoding="utf-8")
    md = md_path.read_text(encoding="utf-8")
    for title in SECTIONS:
        assert title in page and f"## {title}" in md, title
    for command in ("not run yet: make train", "not run yet: make quantize", "not run yet: make flash"):
        assert command in page and command in md, command
    # No config.toml: the figures drawn from the raw data are left out, and the page says why.
    assert "config.toml not found" in page
    assert _assert_images_decode(page) >= 2  # class counts and the group picture, from audit.json alone
    _assert_offline(page)


def test_a_malformed_artifact_is_one_line_naming_the_file_and_leaves_the_report_unchanged(full_run, tmp_path):
    run = _copy(full_run, tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in ("report.html", "report.md")}
    for name, content in (("train_report.json", "{not json"),
                          ("quantize_report.json", json.dumps({"validation": [1, 2, 3]})),
                          ("audit.json", json.dumps(["a", "list"])),
                          ("device_report.json", json.dumps({"metrics": "0.9"}))):
        good = (run / name).read_bytes()
        (run / name).write_text(content)
        with pytest.raises(PipelineError) as err:
            build_report(run, out=lambda _: None)
        assert name in str(err.value) and "\n" not in str(err.value), str(err.value)
        for report, data in before.items():
            assert (run / report).read_bytes() == data, f"{report} changed after a failed build"
        assert not list(run.glob(".report.*")), "a temporary file was left behind"
        (run / name).write_bytes(good)


def test_reports_with_missing_keys_read_as_n_a_not_as_a_crash(full_run, tmp_path):
    run = _copy(full_run, tmp_path / "run")
    for name in ("train_report.json", "quantize_report.json", "device_report.json"):
        (run / name).write_text("{}")
    audit = json.loads((run / "audit.json").read_text())
    audit["checks"] = [{"id": "group_overlap"}, {"severity": "error", "passed": False}]
    del audit["summary"]
    (run / "audit.json").write_text(json.dumps(audit))
    html_path, md_path = build_report(run, out=lambda _: None)
    md = md_path.read_text(encoding="utf-8")
    for title in SECTIONS:
        assert f"## {title}" in md, title
    assert "n/a" in md and "not run yet" not in md
    _assert_images_decode(html_path.read_text(encoding="utf-8"))


def test_refresh_report_never_fails_the_stage(full_run, tmp_path):
    run = _copy(full_run, tmp_path / "run", ("splits.json", "audit.json", "train_report.json"))
    (run / "train_report.json").write_text("[")
    lines: list[str] = []
    assert refresh_report(run, out=lines.append) is None
    assert len(lines) == 1 and lines[0].startswith("warning:") and "train_report.json" in lines[0]
    assert not (run / "report.html").exists()
    assert refresh_report(tmp_path / "no_such_run", out=lines.append) is None
    assert len(lines) == 2 and "splits.json" in lines[1]


def test_text_from_artifacts_is_escaped(full_run, tmp_path):
    run = _copy(full_run, tmp_path / "run", ("splits.json", "audit.json", "config.toml"))
    audit = json.loads((run / "audit.json").read_text())
    audit["checks"][0]["message"] = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    (run / "audit.json").write_text(json.dumps(audit))
    html_path, md_path = build_report(run, out=lambda _: None)
    page = html_path.read_text(encoding="utf-8")
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=x" in page
    _assert_offline(page)


def test_a_dataset_that_cannot_be_reloaded_leaves_out_its_figures_and_says_why(full_run, tmp_path):
    run = _copy(full_run, tmp_path / "run")
    config = (run / "config.toml").read_text()
    moved = tmp_path / "moved" / "data.npz"
    (run / "config.toml").write_text(re.sub(r'dataset = "[^"]*"', f'dataset = "{moved}"', config))
    html_path, _ = build_report(run, out=lambda _: None)
    page = html_path.read_text(encoding="utf-8")
    assert "could not be loaded" in page and str(moved) in page
    full = (full_run / "report.html").read_text(encoding="utf-8")
    # Examples, lengths and outliers need the raw data; everything else is still drawn.
    assert 0 < _assert_images_decode(page) < len(IMG.findall(full))
    for title in SECTIONS:
        assert title in page


def test_an_interrupted_device_evaluation_is_reported_as_incomplete(full_run, tmp_path):
    run = _copy(full_run, tmp_path / "run")
    (run / "device_report.json").unlink()
    lines = (run / "device_eval.jsonl").read_text().splitlines()
    (run / "device_eval.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # a torn last line
    html_path, md_path = build_report(run, out=lambda _: None)
    md = md_path.read_text(encoding="utf-8")
    assert "Evaluation incomplete" in md and "holds 5 of" in md and "1 torn line" in md


def test_report_figures_are_drawn_once_for_the_same_content(tmp_path):
    """The report is rebuilt after every stage: a figure whose inputs did not change is not
    drawn again (the same bytes), one with new inputs is, and one no longer drawn is removed."""
    from pipeline.report.blocks import figure, figure_cache

    calls = []

    def draw(x):
        calls.append(x)
        return f"png {x}".encode()

    with figure_cache(tmp_path):
        figure(draw, 1, alt="a")
        figure(draw, 2, alt="b")
    assert calls == [1, 2] and len(list(tmp_path.glob("*.png"))) == 2
    with figure_cache(tmp_path):
        again = figure(draw, 1, alt="a")
        other = figure(draw, 3, alt="c")
    assert calls == [1, 2, 3] and again.png == b"png 1" and other.png == b"png 3"
    assert len(list(tmp_path.glob("*.png"))) == 2  # the figure of 2, not drawn this time, is gone
    figure(draw, 1, alt="a")  # outside a build: drawn, nothing kept
    assert calls == [1, 2, 3, 1]
