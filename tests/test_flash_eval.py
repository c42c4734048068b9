"""flash and eval end to end: the host board (the firmware's C++ core and the compiled model,
built with g++) on a real pseudo-terminal, the exported C array parsed back, results
streamed, resumed, scored and compared byte for byte with TFLM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import copy_run, sigint_default

from firmware_bridge.host.client import Device
from firmware_bridge.host.streaming import stream_windows
from firmware_bridge.targets import host_board
from pipeline.core.artifacts import read_json, sha256_file
from pipeline.core.config import load_config
from pipeline.core.errors import BridgeError
from pipeline.core.ledger import read_ledger
from pipeline.data.splits import load_split_windows
from tinyml_cli import main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def test_flash_writes_the_image_from_the_c_export_and_scores_the_device(fast_run):
    image = fast_run / "device" / "flash" / "model.tflite"
    assert image.read_bytes() == (fast_run / "int8.tflite").read_bytes()
    settings = read_json(fast_run / "device" / "flash" / "settings.json")
    assert settings["labels"] == read_json(fast_run / "splits.json")["dataset"]["label_names"]
    assert (fast_run / "firmware" / "tinyml_device" / "tinyml_device.ino").is_file()

    report = read_json(fast_run / "device_report.json")
    test_windows = read_json(fast_run / "splits.json")["windows"]["test"]
    assert report["windows"] == test_windows
    assert report["device"]["sha256_verified"] is True
    assert report["device"]["sha256"] == sha256_file(fast_run / "int8.tflite")
    agreement = report["agreement_with_host_int8"]
    assert agreement["top1"] == 1.0 and agreement["differing"] == 0
    assert agreement["max_abs_probability_difference"] < 1e-6
    int8 = report["int8_agreement"]  # every output of every window, byte for byte
    assert int8["passed"] and int8["tflm"]["outputs"] == test_windows * len(settings["labels"])
    assert int8["tflm"]["outputs_identical"] == int8["tflm"]["outputs"]
    assert report["device"]["board"] == "host" and report["device"]["device_type"] == "TINYML_HOST_BOARD"
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "ci95", "confusion"):
        assert key in report["metrics"]
    assert report["timing_reported_by_device"]["classification_ms"]["n"] == test_windows
    assert "board time" in report["device"]["timing_note"] and "never this computer's time" in report["timing_note"]

    results = lines(fast_run / "device_eval.jsonl")
    assert len(results) == test_windows == len({r["window_id"] for r in results})
    purposes = [e["purpose"] for e in read_ledger(fast_run)]
    assert purposes.count("on-device evaluation") == 1


def test_device_matches_quantize_reports_int8_test_figures(fast_run):
    """The device saw exactly the test windows the quantize stage scored on the host."""
    device = read_json(fast_run / "device_report.json")["metrics"]
    host = read_json(fast_run / "quantize_report.json")["test"]
    assert device["confusion"] == host["confusion"]


def test_eval_resumes_and_never_repeats_a_window(fast_run, tmp_path):
    run = copy_run(fast_run, tmp_path / "run")
    reference = lines(run / "device_eval.jsonl")
    (run / "device_eval.jsonl").unlink()
    cmd = [sys.executable, "-m", "tinyml_cli", "eval", "--run", str(run)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=sigint_default)
    results = run / "device_eval.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and len(results.read_bytes().splitlines()) >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "eval finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    partial = lines(results)
    assert 20 <= len(partial) < len(reference)

    assert main(["eval", "--run", str(run)]) == 0
    final = lines(results)
    assert [r["window_id"] for r in final] == [r["window_id"] for r in reference]
    assert [r["probabilities"] for r in final] == [r["probabilities"] for r in reference]
    assert final[: len(partial)] == partial  # what was received was kept, not redone


def test_torn_last_line_is_dropped_and_its_window_runs_again(fast_run, tmp_path):
    run = copy_run(fast_run, tmp_path / "run")
    results = run / "device_eval.jsonl"
    whole = results.read_text().splitlines(keepends=True)
    results.write_text("".join(whole[:5]) + whole[5][: len(whole[5]) // 2])
    assert main(["eval", "--run", str(run)]) == 0
    final = lines(results)
    assert len(final) == len(whole) and len({r["window_id"] for r in final}) == len(whole)
    assert read_json(run / "device_report.json")["throughput"]["torn_lines_dropped"] == 1


def test_results_of_another_model_are_not_resumed(fast_run, tmp_path, capsys):
    """After a retrain, the old model's lines must not be taken for the new model's."""
    run = copy_run(fast_run, tmp_path / "run")
    results = run / "device_eval.jsonl"
    reference = lines(results)
    assert {r["model_sha256"] for r in reference} == {sha256_file(run / "int8.tflite")}
    stale = [dict(r, model_sha256="0" * 64, probabilities=[1.0] + [0.0] * (len(r["probabilities"]) - 1))
             for r in reference[:10]]
    results.write_text("".join(json.dumps(r) + "\n" for r in stale))
    assert main(["eval", "--run", str(run)]) == 0
    assert "holds results of another model (000000000000); starting over" in capsys.readouterr().out
    final = lines(results)
    assert [r["probabilities"] for r in final] == [r["probabilities"] for r in reference]
    assert {r["model_sha256"] for r in final} == {sha256_file(run / "int8.tflite")}


def test_unplugged_device_gives_a_clear_error_and_keeps_results(fast_run, tmp_path):
    cfg = load_config(fast_run / "config.toml")
    test = load_split_windows(cfg, fast_run, "test")
    labels = read_json(fast_run / "splits.json")["dataset"]["label_names"]
    out = tmp_path / "device_eval.jsonl"
    _, device = host_board.boot(fast_run)
    client = Device(device.port, timeout=2.0)

    def unplug_after(items, total):
        for n, item in enumerate(items):
            if n == 7:
                device.stop()  # the board goes away mid-evaluation
            yield item

    try:
        with pytest.raises(BridgeError) as err:
            stream_windows(client, test.X, test.window_ids, [labels[i] for i in test.y], out, progress=unplug_after)
    finally:
        client.close()
        device.stop()
    message = str(err.value)
    assert "after 7 of" in message and str(out) in message
    assert "resumes" in (err.value.hint or "")
    kept = lines(out)
    assert [r["window_id"] for r in kept] == test.window_ids[:7].tolist()


def test_flash_dry_run_does_nothing(fast_run, tmp_path, capsys):
    run = copy_run(fast_run, tmp_path / "run")
    before = sorted(p.name for p in run.rglob("*"))
    assert main(["flash", "--run", str(run), "--dry-run"]) == 0
    assert "would" in capsys.readouterr().out
    assert sorted(p.name for p in run.rglob("*")) == before


def test_flash_dry_run_for_a_real_board_prints_the_commands(fast_run, tmp_path, capsys):
    import shutil

    run = copy_run(fast_run, tmp_path / "run")
    shutil.rmtree(run / "firmware" / "tinyml_device")  # a run that was never flashed
    before = sorted(p.name for p in run.rglob("*"))
    assert main(["flash", "--run", str(run), "--dry-run", "--device", "/dev/ttyACM0"]) == 0
    out = capsys.readouterr().out
    assert "arduino-cli upload -p /dev/ttyACM0 --fqbn arduino:mbed_nano:nano33ble" in out
    assert sorted(p.name for p in run.rglob("*")) == before


def test_flash_to_a_real_port_without_arduino_cli_prints_the_commands(fast_run, tmp_path, capsys, monkeypatch):
    run = copy_run(fast_run, tmp_path / "run")
    monkeypatch.setenv("PATH", str(tmp_path))  # no arduino-cli here, as on this machine
    code = main(["flash", "--run", str(run), "--device", "/dev/ttyACM0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "arduino-cli compile --fqbn arduino:mbed_nano:nano33ble" in err
    assert "arduino-cli upload -p /dev/ttyACM0" in err


def test_eval_on_a_dead_port_is_a_clear_error(fast_run, tmp_path, capsys):
    run = copy_run(fast_run, tmp_path / "run")
    code = main(["eval", "--run", str(run), "--device", str(tmp_path / "ttyACM9")])
    err = capsys.readouterr().err
    assert code == 2 and "ttyACM9" in err and "Traceback" not in err


def test_flash_refuses_a_stale_export(fast_run, tmp_path):
    from pipeline.core.errors import GateFailed
    from pipeline.device.stage import write_flash_image

    run = copy_run(fast_run, tmp_path / "run")
    data = bytearray((run / "int8.tflite").read_bytes())
    data[-1] ^= 0xFF
    (run / "int8.tflite").write_bytes(bytes(data))
    with pytest.raises(GateFailed, match="is not int8.tflite"):
        write_flash_image(load_config(run / "config.toml"), run)


def test_monitor_reads_live_predictions_from_the_host_board(fast_run):
    """The monitor's three predictions are the model's (host TFLM) on the first three windows
    of the recordings the board's IMU plays."""
    import numpy as np

    from firmware_bridge.host.monitor import monitor
    from pipeline.device.stage import host_int8_probabilities

    _, device = host_board.boot(fast_run, time_scale=50)  # the 2 s pauses in 40 ms
    try:
        mon = monitor(device.port, label="idle", count=3, timeout=5.0)
    finally:
        device.stop()
    with np.load(fast_run / "device" / "flash" / "sensor.npz") as f:
        stream = f["X"].reshape(-1, f["X"].shape[2])
    labels = read_json(fast_run / "splits.json")["dataset"]["label_names"]
    n = load_split_windows(load_config(fast_run / "config.toml"), fast_run, "test").X[0].shape[0]  # frames
    windows = np.stack([stream[i * n:(i + 1) * n] for i in range(3)])
    expected = [labels[int(k)] for k in host_int8_probabilities(fast_run, windows).argmax(1)]
    assert [r.label for r in mon.results] == expected
    assert mon.accuracy == expected.count("idle") / 3


def _host_board_pids(run: Path) -> list[int]:
    """Processes running the host board built in ``run`` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
                state = (entry / "stat").read_text().split(") ", 1)[1][0]
            except (OSError, IndexError):
                continue
            if argv0.startswith(str(run / "device" / "host" / "firmware-").encode()) and state != "Z":
                pids.append(int(entry.name))
    return pids


def test_kill_9_of_the_host_board_mid_evaluation_scores_every_window_once(fast_run, tmp_path):
    import os
    import threading

    run = copy_run(fast_run, tmp_path / "run")
    results = run / "device_eval.jsonl"
    reference = lines(results)
    results.unlink()
    killed = []

    def kill_when_20_are_in():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if results.exists() and len(results.read_bytes().splitlines()) >= 20:
                for pid in _host_board_pids(run):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_20_are_in)
    killer.start()
    try:
        assert main(["eval", "--run", str(run)]) == 0
    finally:
        killer.join()
    assert killed, "the host board was never killed"
    final = lines(results)
    assert [r["window_id"] for r in final] == [r["window_id"] for r in reference]  # each once, in order
    assert [r["probabilities"] for r in final] == [r["probabilities"] for r in reference]
    assert not _host_board_pids(run)  # and the board booted again was stopped
