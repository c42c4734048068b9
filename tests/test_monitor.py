"""The serial monitor: recorded transcripts of both formats, then the host board live (the
firmware's C++ core, its IMU playing recordings, its clock 100 times faster)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pytest
from boards import inference_us, save_recordings, tiny_board, tiny_run
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.cli import add_monitor_arguments, run_monitor
from firmware_bridge.host.client import Device
from firmware_bridge.host.monitor import PredictionMonitor, monitor
from pipeline.core.errors import BridgeError

TRANSCRIPTS = Path(__file__).parent / "transcripts"
EXPECTED = {
    "runimpulse_current.txt": ["wave", "wave", "circle"],
    "runimpulse_current_crlf_us.txt": ["idle", "idle"],
    "runimpulse_older.txt": ["circle", "circle", "updown"],
}


def feed_in_pieces(mon: PredictionMonitor, data: bytes, cuts: list[int]) -> list:
    results, start = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        results += mon.feed(data[start:cut])
        start = cut
    return results + mon.flush()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_transcripts_of_both_formats(name):
    mon = PredictionMonitor(label="wave")
    results = feed_in_pieces(mon, (TRANSCRIPTS / name).read_bytes(), [])
    assert [r.label for r in results] == EXPECTED[name]
    assert mon.count == len(EXPECTED[name])
    assert mon.class_counts == {k: EXPECTED[name].count(k) for k in set(EXPECTED[name])}
    assert mon.accuracy == EXPECTED[name].count("wave") / len(EXPECTED[name])
    assert mon.prompt_seen  # every recording ends with the prompt after 'b'
    assert mon.errors == []


@given(st.sampled_from(sorted(EXPECTED)), st.lists(st.integers(0, 1200), max_size=40))
@settings(deadline=None)
def test_results_do_not_depend_on_how_bytes_arrive(name, cuts):
    data = (TRANSCRIPTS / name).read_bytes()
    whole = PredictionMonitor()
    expected = feed_in_pieces(whole, data, [])
    pieces = PredictionMonitor()
    got = feed_in_pieces(pieces, data, [c for c in cuts if c < len(data)])
    assert got == expected


def test_latency_and_summary_from_microsecond_timings():
    mon = PredictionMonitor()
    feed_in_pieces(mon, (TRANSCRIPTS / "runimpulse_current_crlf_us.txt").read_bytes(), [])
    rolling = mon.rolling_latency()
    assert rolling["n"] == 2
    assert rolling["mean_ms"] == pytest.approx(((37 + 812 + 12 + 41) + (37 + 790 + 12 + 40)) / 2 / 1000)
    summary = mon.summary()
    assert summary["class_distribution"] == {"idle": 2}
    assert summary["accuracy"] is None
    line = mon.format_result(mon.results[0], 1)
    assert line.startswith("#1") and "idle" in line and "anomaly -0.312" in line
    assert "2 inferences" in mon.format_summary()


def test_err_lines_are_collected():
    mon = PredictionMonitor()
    mon.feed(b"AT+RUNIMPULSE\r\nERR: No sensor data\n> ")
    assert mon.errors == ["ERR: No sensor data"] and mon.prompt_seen


# -- live, against the virtual device on a pty ---------------------------------------------------


@pytest.fixture(scope="module")
def sensor_file(tmp_path_factory):
    rng = np.random.default_rng(9)
    return save_recordings(tmp_path_factory.mktemp("sensor") / "rec.npz", rng.normal(0, 2, size=(4, 48, 3)))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_int8):
    return tiny_run(tmp_path_factory, tiny_int8)


@pytest.fixture(scope="module")
def device(run, sensor_file):
    with tiny_board(run, sensor=sensor_file, time_scale=100) as board:
        yield board


def assert_at_prompt(port: str) -> None:
    """The device is back at its prompt: a fresh host gets a clean exchange."""
    with Device(port, timeout=2.0) as dev:
        assert dev.command("AT").strip() == "Not a valid AT command (AT)"


def test_monitor_live_with_count(device, run):
    out = io.StringIO()
    mon = monitor(device.port, label="wave", count=3, timeout=2.0, out=out)
    assert mon.count == 3
    assert all(r.format == "current" and set(r.predictions) == {"idle", "wave", "circle", "updown"}
               for r in mon.results)
    assert all(r.timing["classification_ms"] == inference_us(run) / 1000 for r in mon.results)
    assert mon.accuracy == sum(r.label == "wave" for r in mon.results) / 3
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["#1", "#2", "#3"]
    assert "3 inferences" in out.getvalue()
    assert_at_prompt(device.port)


def test_ctrl_c_sends_b_and_waits_for_the_prompt(device):
    def interrupt_after_two(result):
        if interrupted.count == 2:
            raise KeyboardInterrupt

    class interrupted:
        count = 0

    def on_result(result):
        interrupted.count += 1
        interrupt_after_two(result)

    mon = monitor(device.port, timeout=2.0, out=io.StringIO(), on_result=on_result)
    assert mon.count == 2
    assert_at_prompt(device.port)


def test_monitor_on_a_device_without_sensor_data_fails_clearly(run):
    with tiny_board(run) as dev:
        with pytest.raises(BridgeError, match=r"the device reported an error: ERR: No sensor data"):
            monitor(dev.port, timeout=2.0, out=io.StringIO())


def test_run_monitor_cli(device, capsys):
    parser = argparse.ArgumentParser()
    add_monitor_arguments(parser)
    assert run_monitor(parser.parse_args([device.port, "--count", "2", "--label", "idle"])) == 0
    out = capsys.readouterr().out
    assert "2 inferences" in out and "accuracy against 'idle'" in out
    with pytest.raises(BridgeError, match="--count"):
        run_monitor(parser.parse_args([device.port, "--count", "0"]))
