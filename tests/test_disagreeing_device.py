"""A device that disagrees with the host int8 model is a failed evaluation (issue 22, 8).

The disagreeing device is the run's own firmware (the host board `tinyml flash` built), reached
as a serial port through a pty that rewrites its words (tests/boards.py, LyingLink): it reports
the right model and labels (AT+MODELINFO?), then prints its labels in another order and always
answers one class.
Before [device] min_agreement, `tinyml eval --restart` passed it with exit 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from boards import lying_board, prediction_line
from conftest import copy_run

from pipeline.core import config as config_mod
from pipeline.core.errors import GateFailed
from pipeline.data.splits import load_split_windows
from pipeline.device.stage import evaluate_on_device, host_int8_probabilities
from tinyml_cli import main

pytestmark = pytest.mark.slow

ANSWER = "circle"  # the one class the device always answers


def disagreeing_device(run: Path):
    honest = json.loads((run / "splits.json").read_text())["dataset"]["label_names"]
    shown = dict(zip(honest, honest[::-1], strict=True))  # the order its replies list the labels in

    def lie(line: bytes) -> bytes:  # AT+MODELINFO? is left alone: the model and labels verify
        p = prediction_line(line)
        if p is None:
            return line
        indent, label, end = p
        name = shown[label]
        return indent + name.encode() + (b": 1.000000" if name == ANSWER else b": 0.000000") + end

    return lying_board(run, lie)


def first_differing(run: Path) -> tuple[str, str, float]:
    """The first test window (in the split's order) whose host int8 top class is not ANSWER:
    its id, the host's top class and its score, computed here from the host model."""
    cfg = config_mod.load_config(run / "config.toml")
    test = load_split_windows(cfg, run, "test")
    labels = json.loads((run / "splits.json").read_text())["dataset"]["label_names"]
    host = host_int8_probabilities(run, test.X)
    for wid, probs in zip(test.window_ids.tolist(), host, strict=True):
        if labels[int(probs.argmax())] != ANSWER:
            return wid, labels[int(probs.argmax())], float(probs.max())
    raise AssertionError("the host answers ANSWER on every window: pick another class")


def test_a_device_that_disagrees_fails_eval_with_exit_1_and_the_report_is_written(fast_run, tmp_path, capsys):
    run = copy_run(fast_run, tmp_path / "run")
    for stale in ("device_report.json", "report.html", "report.md"):
        (run / stale).unlink(missing_ok=True)
    with disagreeing_device(run) as port:
        code = main(["eval", "--run", str(run), "--device", port, "--restart"])
    err = capsys.readouterr().err
    assert code == 1, err

    report = json.loads((run / "device_report.json").read_text())
    agreement = report["agreement_with_host_int8"]
    n = report["windows"]
    assert agreement["passed"] is False and agreement["required"] == 1.0
    assert agreement["required_by"] == "[device] min_agreement"
    assert report["device"]["identity"]["port_type"] == "serial" and report["device"]["labels_verified"]
    assert 0 < agreement["top1"] < 0.5 and agreement["differing"] == round(n * (1 - agreement["top1"]))
    assert {s["device"] for s in agreement["samples_that_differ"]} == {ANSWER}

    wid, host_class, host_score = first_differing(run)
    first = agreement["samples_that_differ"][0]
    assert (first["window_id"], first["host_int8"], first["device"]) == (wid, host_class, ANSWER)
    line = next(x for x in err.splitlines() if x.startswith("error: "))
    assert line == (
        f"error: device agrees with the host int8 model on {agreement['top1']:.2%} of {n} test windows "
        f"({agreement['differing']} differ), below [device] min_agreement 100.00%; the first that differs is "
        f"window {wid!r}: host int8 top class {host_class!r} ({host_score:.4f}), device {ANSWER!r} (1.0000); "
        f"see {run / 'device_report.json'} and {run / 'report.html'}")
    assert "a third-party firmware with other kernels may need a lower [device] min_agreement" in err

    md = (run / "report.md").read_text()  # the report document, refreshed after the failure
    assert (run / "report.html").is_file() and "FAILED: the device disagrees" in md
    assert f"{agreement['top1']:.2%}" in md and "required 100%" in md and f"{agreement['differing']} windows differ" in md
    looks = [json.loads(x)["purpose"] for x in (run / "test_ledger.jsonl").read_text().splitlines()]
    assert looks.count("on-device evaluation") == 2  # the failed evaluation looked at the test set too


def test_a_lower_min_agreement_is_the_users_call_and_is_recorded(fast_run, tmp_path):
    """A third-party firmware with other kernels may need a lower threshold: it passes what
    it allows, and the report says which threshold it passed."""
    run = copy_run(fast_run, tmp_path / "run")
    cfg = config_mod.load_config(run / "config.toml")
    with disagreeing_device(run) as port:
        cfg.device.port = port
        with pytest.raises(GateFailed):
            evaluate_on_device(cfg, run, restart=True)
        top1 = json.loads((run / "device_report.json").read_text())["agreement_with_host_int8"]["top1"]
        cfg.device.min_agreement = round(top1 - 0.01, 2)
        assert evaluate_on_device(cfg, run) == 0  # resumed: the same answers, now allowed
    agreement = json.loads((run / "device_report.json").read_text())["agreement_with_host_int8"]
    assert agreement["passed"] is True and agreement["required"] == cfg.device.min_agreement
    assert agreement["top1"] == top1


def test_min_agreement_is_a_share(tmp_path):
    from pipeline.core.errors import PipelineError

    for bad in (1.5, -0.1):
        path = tmp_path / "c.toml"
        path.write_text(f"[device]\nmin_agreement = {bad}\n")
        with pytest.raises(PipelineError, match="min_agreement"):
            config_mod.load_config(path)
