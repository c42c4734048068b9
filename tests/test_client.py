"""The host client against real pseudo-terminals: the host board (the firmware's C++ core
built for this computer), and ports that are silent or talk garbage. Every failure must be a
clear BridgeError within its timeout."""

from __future__ import annotations

import os
import threading
import time
import tty

import numpy as np
import pytest
import serial
from boards import inference_us, save_recordings, tiny_board, tiny_run

from firmware_bridge.host.client import Device
from firmware_bridge.host.ports import PortInfo, detect_port, format_ports, list_ports
from pipeline.core.errors import BridgeError

TIMEOUT = 1.0  # short: these ports are local


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_int8):
    return tiny_run(tmp_path_factory, tiny_int8)


@pytest.fixture(scope="module")
def device(run):
    with tiny_board(run) as board:
        yield board


CHUNK_TIMEOUT_S = 0.1  # the firmware's kStaticChunkTimeoutUs, on its own clock


def late_chunks(dev: Device, transfers: int | None = None) -> None:
    """Make ``dev`` send each chunk of its next ``transfers`` transfers (None: all) later than
    the firmware waits for it: the firmware times the transfer out, as with a stalled host."""
    sent = dev.write
    state = {"left": transfers}

    def write(data: bytes) -> None:
        if data.startswith(b"AT+RUNIMPULSESTATIC"):
            if state["left"] is not None:
                state["left"] -= 1
        elif b"\r" not in data and (state["left"] is None or state["left"] >= 0):
            time.sleep(CHUNK_TIMEOUT_S * 1.5)
        sent(data)

    dev.write = write


class RawPty:
    """A pseudo-terminal whose far end is driven by the test: nobody, or a garbage talker."""

    def __init__(self, talk: bytes | None = None):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread = None
        if talk is not None:
            self._thread = threading.Thread(target=self._talk, args=(talk,), daemon=True)
            self._thread.start()

    def _talk(self, talk: bytes) -> None:
        while not self._stop.wait(0.02):
            os.write(self.master, talk)
            try:  # read what the host sends so its writes never block
                os.set_blocking(self.master, False)
                os.read(self.master, 4096)
            except BlockingIOError:
                pass

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        os.close(self.master)
        os.close(self.slave)


def test_handshake_reads_the_config(device):
    with Device(device.port, timeout=TIMEOUT) as dev:
        assert dev.config.at_version == "1.8.0"
        assert dev.config.transfer_baudrate == 115200
        assert dev.config.get("inference", "model type") == "classification"
        info = dev.model_info()
        assert info.input_size == 96 and info.labels == ["idle", "wave", "circle", "updown"]


def test_classify_returns_probabilities_label_and_timing(device, run):
    with Device(device.port, timeout=TIMEOUT) as dev:
        result = dev.classify(np.random.default_rng(0).normal(size=(32, 3)))
    assert list(result.probabilities) == ["idle", "wave", "circle", "updown"]
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert result.timing == {"dsp_ms": 0.0, "classification_ms": inference_us(run) / 1000, "anomaly_ms": 0.0}
    assert result.array.shape == (4,)
    assert result.raw.startswith("OK CHUNK=32\r\n") and result.raw.endswith("END OUTPUT\r\n> ")


def test_silent_port_times_out_naming_the_port():
    pty = RawPty()
    try:
        with pytest.raises(BridgeError, match=rf"{pty.path}: no reply to AT within 1 s") as exc:
            Device(pty.path, timeout=TIMEOUT)
        assert exc.value.hint and exc.value.exit_code == 2
    finally:
        pty.close()


def test_garbage_device_is_not_an_edge_impulse_device():
    pty = RawPty(talk=b"$GPGGA,123519,4807.038,N,01131.000,E*47\r\n")
    try:
        with pytest.raises(BridgeError, match=rf"{pty.path}: not an Edge Impulse AT device: .* no '> ' prompt"):
            Device(pty.path, timeout=TIMEOUT)
    finally:
        pty.close()


def test_a_device_that_only_prompts_is_caught_at_the_config():
    pty = RawPty(talk=b"\n> ")
    try:
        with pytest.raises(BridgeError, match=rf"{pty.path}: no echo of AT\+CONFIG\?"):
            Device(pty.path, timeout=TIMEOUT)
    finally:
        pty.close()


def test_nonexistent_port_is_named():
    with pytest.raises(BridgeError, match=r"/dev/ttyNOPE9: cannot open serial port \(No such file or directory\)"):
        Device("/dev/ttyNOPE9", timeout=TIMEOUT)


def test_wrong_input_size_is_reported_with_the_expected_size(device):
    with Device(device.port, timeout=TIMEOUT) as dev:
        with pytest.raises(BridgeError, match="expects 96 values per window, got 95"):
            dev.classify(np.zeros(95))
        with pytest.raises(BridgeError, match="no features"):
            dev.classify([])
        # The session is still usable afterwards.
        assert dev.classify(np.zeros(96)).label


def test_device_timeout_is_reported(device):
    # Every chunk arrives after the firmware's 100 ms: every transfer times out.
    with Device(device.port, timeout=TIMEOUT) as dev:
        late_chunks(dev)
        with pytest.raises(BridgeError, match=r"gave up waiting for a chunk \(TIMEOUT\)"):
            dev.classify(np.zeros(96))
    with Device(device.port, timeout=TIMEOUT) as dev:
        assert "Not a valid" in dev.command("AT")  # no prompt came; the next host still gets one


def test_a_timed_out_transfer_is_sent_again(device):
    # The device times out the first transfer (its chunks late), then the link recovers:
    # the host gets a prompt back and sends the window again, and the result is the same.
    with Device(device.port, timeout=TIMEOUT) as dev:
        want = dev.classify(np.ones(96)).array
        late_chunks(dev, transfers=1)
        got = dev.classify(np.ones(96))
        assert dev.timeouts_retried == 1
        np.testing.assert_array_equal(got.array, want)


def test_handshake_stops_a_runimpulse_left_running(run, tmp_path):
    sensor = save_recordings(tmp_path / "s.npz", np.zeros((1, 32, 3)))
    with tiny_board(run, sensor=sensor, time_scale=100) as board:
        with serial.Serial(board.port, timeout=0.05) as s:  # a host that leaves it running
            s.write(b"AT+RUNIMPULSE\r")
            time.sleep(0.1)
        with Device(board.port, timeout=TIMEOUT) as dev:
            assert dev.command("AT").strip() == "Not a valid AT command (AT)"


def test_device_closes_and_port_can_be_reopened(device):
    dev = Device(device.port, timeout=TIMEOUT)
    dev.close()
    with Device(device.port, timeout=TIMEOUT) as again:
        assert again.config.device_id == dev.config.device_id


# -- ports -------------------------------------------------------------------------------------


def port(device, vid=None, pid=None, board=None):
    return PortInfo(device, "", vid, pid, None, board, None)


def test_detect_port_prefers_a_known_board():
    ports = [port("/dev/ttyS0"), port("/dev/ttyACM0", 0x2341, 0x805A, "nano33ble"), port("/dev/ttyUSB0")]
    assert detect_port(ports) == "/dev/ttyACM0"
    assert detect_port([port("/dev/ttyS0"), port("/dev/ttyUSB3")]) == "/dev/ttyUSB3"
    with pytest.raises(BridgeError, match="no board found"):
        detect_port([port("/dev/ttyS0")])
    with pytest.raises(BridgeError, match="several ports could be the board: /dev/ttyACM0, /dev/ttyACM1"):
        detect_port([port("/dev/ttyACM0"), port("/dev/ttyACM1")])


def test_list_ports_runs_and_formats():
    ports = list_ports()
    assert all(isinstance(p, PortInfo) for p in ports)
    table = format_ports([PortInfo("/dev/ttyACM0", "Nano 33 BLE", 0x2341, 0x805A, "X", "nano33ble",
                                   "Arduino Nano 33 BLE Sense")])
    assert "2341:805A" in table and "Arduino Nano 33 BLE Sense" in table
