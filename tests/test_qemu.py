"""The firmware itself on QEMU's emulated Cortex-M4 (mps2-an386): built with arm-none-eabi-gcc,
booted in qemu-system-arm, driven over the pseudo-terminal QEMU opens for its UART.

Nothing is stood in for: the image holds the AT protocol core the Arduino sketch runs, the
model compiled to C and the board's own startup, UART driver and clock. The end-to-end test
runs `tinyml flash --device qemu` on the shared fast run; the others boot the same image
and play a hostile host against it. Without Debian's three packages every test here skips,
naming them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from boards import prompt_after

from firmware_bridge.host.client import Device
from firmware_bridge.host.protocol import LINE_TOO_LONG
from firmware_bridge.targets import qemu
from firmware_bridge.targets.sketch import TEMPLATE_DIR, command_table
from pipeline.core.errors import BridgeError

MISSING = qemu.missing_packages()
needs_qemu = pytest.mark.skipif(
    bool(MISSING), reason=f"the emulated Cortex-M4 needs the Debian packages {', '.join(MISSING)}: {qemu.INSTALL_LINE}")


def _qemu_processes_running(elf: Path) -> list[int]:
    """QEMU processes booted with ``elf`` (read from /proc: nothing may be left behind)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().split(") ", 1)[1][0]
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"qemu-system-arm") and str(elf).encode() in cmdline and state != "Z":
                pids.append(int(entry.name))
    return pids


# ---------------------------------------------------------------------------------------
# Without the packages: one clear error naming them
# ---------------------------------------------------------------------------------------


def test_missing_packages_are_named_with_the_install_line(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert qemu.missing_packages() == list(qemu.PACKAGES)
    with pytest.raises(BridgeError) as info:
        qemu.build_firmware(tmp_path)
    for package in qemu.PACKAGES:
        assert package in info.value.message
    assert "apt-get install" in info.value.hint and info.value.exit_code == 2


# ---------------------------------------------------------------------------------------
# The image: built make-style, sizes from the ELF
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qemu_run(fast_run, tmp_path_factory):
    """A copy of the shared fast run, with its firmware image built."""
    if MISSING:
        pytest.skip(f"needs the Debian packages {', '.join(MISSING)}")
    import shutil

    from conftest import copy_run

    run = copy_run(fast_run, tmp_path_factory.mktemp("qemu") / "run")
    shutil.rmtree(run / qemu.BUILD_DIR, ignore_errors=True)  # built here, from scratch
    image = qemu.build_firmware(run)
    return run, image


@needs_qemu
def test_the_image_is_built_once_and_again_only_when_an_input_changes(qemu_run, tmp_path):
    run, image = qemu_run
    assert image.rebuilt and image.elf == run / "device" / "qemu" / "fw.elf"
    again = qemu.build_firmware(run)
    assert not again.rebuilt and again.elf.stat().st_mtime_ns == image.elf.stat().st_mtime_ns

    from conftest import copy_run

    other = copy_run(run, tmp_path / "run")
    settings = other / "firmware" / "model_settings.h"
    settings.write_text(settings.read_text() + "\n// an edit\n")
    assert qemu.build_firmware(other).rebuilt

    # Sizes are arm-none-eabi-size's; flash is text + data, static RAM data + bss.
    out = subprocess.run(["arm-none-eabi-size", str(image.elf)], capture_output=True, text=True, check=True).stdout
    text, data, bss = map(int, out.splitlines()[1].split()[:3])
    assert (image.flash_bytes, image.static_ram_bytes) == (text + data, data + bss)
    # No heap: newlib's _sbrk is ours and refuses (syscalls.c), so nothing can grow into RAM
    # the figures do not show.
    symbols = subprocess.run(["arm-none-eabi-nm", str(image.elf)], capture_output=True, text=True, check=True).stdout
    assert " T _sbrk\n" in symbols
    # The compiled model is in the image, and it is this run's model.
    assert " T tinyml_model_invoke\n" in symbols


@needs_qemu
def test_a_compiled_model_of_another_model_is_compiled_again(qemu_run, tmp_path):
    from conftest import copy_run

    run = copy_run(qemu_run[0], tmp_path / "run")
    header = run / "firmware" / "compiled" / "model_compiled.h"
    header.write_text(header.read_text().replace("sha256 ", "sha256 0", 1))
    qemu.ensure_compiled_model(run)
    from pipeline.core.artifacts import sha256_file

    assert f"sha256 {sha256_file(run / 'int8.tflite')}" in header.read_text()


# ---------------------------------------------------------------------------------------
# The protocol, as the host board and the sketch serve it
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def board(qemu_run):
    run, image = qemu_run
    with qemu.QemuBoard(image.elf) as b:
        yield b
    assert not b.running and not _qemu_processes_running(image.elf)


@pytest.fixture
def device(board):
    d = Device(board.port, timeout=5.0)
    yield d
    d.close()


@needs_qemu
def test_help_config_and_model_info_come_from_the_one_core(device, qemu_run):
    run, _ = qemu_run
    help_text = device.command("AT+HELP")
    header = ("AT Server\nCommand set version: 1.8.0\nArguments in square brackets are optional, eg.:\n"
              "AT+CMD=arg1,[arg2]\n\n")
    assert help_text.startswith(header)
    expected = "".join("".join(f + "\n" for f in c["forms"]) + f"\t{c['help']}\n\n"
                       for c in command_table((TEMPLATE_DIR / "device_commands.cpp").read_text()))
    body = help_text[len(header):]
    assert expected.startswith("AT+HELP\n\tLists all commands\n\n")
    assert body.startswith(expected)  # the core's table, byte for byte, then the board's own
    assert body[len(expected):].startswith("AT+PROFILE?\n\t")

    assert device.config.device_type == "QEMU_MPS2_AN386" and device.config.at_version == "1.8.0"
    assert not device.config.errors
    from pipeline.core.artifacts import sha256_file

    info = device.model_info()
    assert info.sha256 == sha256_file(run / "int8.tflite")
    assert json.loads(info.fields["ops"])  # the op list of model_settings.h


@needs_qemu
def test_one_window_gives_the_host_tflm_bytes(device, qemu_run):
    from pipeline.tflite.export import parse_model_settings_h
    from pipeline.tflite.runtime import TFLMRunner, model_input, read_input_normalization

    run, _ = qemu_run
    data = (run / "int8.tflite").read_bytes()
    s = parse_model_settings_h((run / "firmware" / "model_settings.h").read_text())
    tflm = TFLMRunner(data, 1 << 20)
    rng = np.random.default_rng(3)
    n = device.model_info().input_size
    for scale in (0.5, 4.0, 40.0):  # the last saturates the input quantizer
        x = rng.normal(0, scale, n).astype(np.float32)
        shape = (1, *tflm.input_details["shape"][1:])
        raw = tflm.predict(model_input(x.reshape(shape), s["input_scale"], s["input_zero_point"],
                                       read_input_normalization(data)))[0]
        got = device.classify(x).array
        device_q = np.rint(got / s["output_scale"]).astype(int) + s["output_zero_point"]
        assert device_q.tolist() == raw.astype(int).tolist()


@needs_qemu
def test_profile_reports_stack_and_verified_instruction_counts(device):
    x = np.zeros(device.model_info().input_size, dtype=np.float32)
    device.classify(x)
    device.classify(x)
    profile = qemu.read_profile(device)  # raises unless SysTick counted 40 instructions a tick
    assert profile["inferences"] >= 2
    assert 0 < profile["stack_high_water_bytes"] < profile["stack_size_bytes"]
    low, high = profile["instructions_per_inference"]["min"], profile["instructions_per_inference"]["max"]
    assert 0 < low <= high
    # -icount makes the count repeatable: the same input, the same instructions, up to where
    # the invoke starts within a 40-instruction tick and a SysTick interrupt (one per ms).
    assert abs(profile["invoke_ticks"]["last"] - ticks_of_same_input(device, x)) <= 2


def ticks_of_same_input(device, x) -> int:
    device.classify(x)
    return qemu.read_profile(device)["invoke_ticks"]["last"]


# ---------------------------------------------------------------------------------------
# A hostile host: the firmware never hangs
# ---------------------------------------------------------------------------------------


@needs_qemu
def test_garbage_bytes_do_not_disturb_it(device):
    garbage = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    prompt_after(device, garbage.replace(b"\r", b"."))
    assert device.command("AT") == "Not a valid AT command (AT)\n"
    assert "AT Version: 1.8.0" in device.command("AT+DEVICEINFO?")


@needs_qemu
def test_a_one_megabyte_line_without_newline(device):
    piece = b"A" * (1 << 14)  # written in pieces: the pty holds a few KB, QEMU takes a byte at a time
    for _ in range((1 << 20) // len(piece)):
        device.write(piece)
    device.write(b"\r")
    out = device.wait_prompt(timeout=120.0)  # a guard against a hang, not a timing check
    # The server keeps (and echoes) 256 characters (kAtMaxLineLength), then discards the line.
    assert out.endswith("A" * 256 + "\r\n" + LINE_TOO_LONG + "> ")
    assert device.command("AT") == "Not a valid AT command (AT)\n"
    assert int(qemu.read_profile(device)["rx_overruns"]) == 0


@needs_qemu
@pytest.mark.parametrize("n", ["99999999999999999999999", "0", "-5", "12abc", "", "1048577"])
def test_absurd_sizes_are_refused(device, n):
    device.send(f"AT+RUNIMPULSESTATIC=n,{n}")
    data, _ = device._expect(re.compile(rb"ERR[^\n]*\n"), "ERR line")
    assert data.startswith(b"ERR: N must be a whole number of float32 values from 1 to 1048576, got '")
    prompt_after(device, b"")  # no prompt follows an ERR: a CR gets one
    assert device.command("AT") == "Not a valid AT command (AT)\n"


# The board's AT+RUNIMPULSESTATIC chunk (qemu.BOARD_DEFINES): 128 characters, as on ESP32.
CHUNK = 128


def _chunks(values: np.ndarray, size: int = CHUNK) -> list[bytes]:
    text = base64.b64encode(struct.pack(f"<{len(values)}f", *values))
    parts = [text[i:i + size] for i in range(0, len(text), size)]
    parts[-1] = parts[-1].ljust(size, b"=")
    return parts


@needs_qemu
def test_the_largest_size_and_a_transfer_abandoned_half_way_time_out(device):
    n = device.model_info().input_size
    for announced, sent in ((1 << 20, 3), (n, len(_chunks(np.zeros(n))) // 2)):
        device.send(f"AT+RUNIMPULSESTATIC=n,{announced}")
        device._expect(qemu_chunk_re(), "OK CHUNK=")
        for chunk in _chunks(np.ones(n, dtype=np.float32))[:sent]:
            device.write(chunk)
            device._expect(ack_re(), "chunk ack")
        # The host walks away: the device gives up on its own (100 ms per chunk).
        data, _ = device._expect(end_re(), "TIMEOUT", timeout=10.0)
        assert data.endswith(b"TIMEOUT\r\nEND OUTPUT\r\n")
        prompt_after(device, b"")
    # A chunk that is not base64 ends the transfer with an ERR line, not a wrong result.
    device.send(f"AT+RUNIMPULSESTATIC=n,{n}")
    device._expect(qemu_chunk_re(), "OK CHUNK=")
    device.write(b"!" * CHUNK)
    data, _ = device._expect(re.compile(rb"END OUTPUT\r\n"), "END OUTPUT")
    assert b"ERR: chunk 1 is not base64\r\nEND OUTPUT\r\n" in data
    prompt_after(device, b"")
    x = np.linspace(-3, 3, n).astype(np.float32)
    assert device.classify(x).label  # and it classifies again


def qemu_chunk_re():
    return re.compile(rb"OK CHUNK=%d\r\n" % CHUNK)


def ack_re():
    return re.compile(rb"OK \d+ \r\n")


def end_re():
    return re.compile(rb"TIMEOUT\r\nEND OUTPUT\r\n")


# ---------------------------------------------------------------------------------------
# A reset in the middle of a transfer: the evaluation resumes, each window scored once
# ---------------------------------------------------------------------------------------


class ResettingDevice(Device):
    """A real client that presses the board's reset (QEMU's system_reset over QMP) in the
    middle of sending the ``at_write``-th chunk of the evaluation."""

    def __init__(self, port, board, at_write, **kw):
        self.board, self.at_write, self.writes, self.resets = board, at_write, 0, 0
        super().__init__(port, **kw)

    def write(self, data: bytes) -> None:
        if len(data) == CHUNK and b"\r" not in data:  # a transfer chunk
            self.writes += 1
            if self.writes == self.at_write:
                super().write(data[:CHUNK // 2])  # half a chunk in, then the button
                self.board.reset()
                self.resets += 1
                return
        super().write(data)


@needs_qemu
def test_a_reset_mid_transfer_resumes_with_every_window_scored_once(qemu_run, tmp_path):
    from firmware_bridge.host.streaming import stream_windows_resuming
    from pipeline.core.artifacts import sha256_file

    run, image = qemu_run
    sha = sha256_file(run / "int8.tflite")
    rng = np.random.default_rng(7)
    before = set(_qemu_processes_running(image.elf))
    with qemu.QemuBoard(image.elf) as board:
        first = ResettingDevice(board.port, board, at_write=0, timeout=2.0)
        n = first.model_info().input_size
        chunks_per_window = len(_chunks(np.zeros(n)))
        first.at_write = 2 * chunks_per_window + chunks_per_window // 2  # in the third window
        X = rng.normal(0, 3, (6, n)).astype(np.float32)
        ids = [f"w{i}" for i in range(len(X))]
        out = tmp_path / "device_eval.jsonl"
        connections = []

        def reconnect():
            d = Device(board.port, timeout=2.0)
            assert d.model_info().sha256 == sha
            connections.append(d)
            return d

        stats, last = stream_windows_resuming(first, reconnect, X, ids, ["idle"] * len(X), out, model_sha256=sha)
        last.close()
        assert first.resets == 1 and len(connections) == 1
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [line["window_id"] for line in lines] == ids  # each once, in order
        assert stats.done_now == len(X)
        # The results after the reset are the model's: the same as a clean run of them.
        clean = Device(board.port, timeout=2.0)
        again = [clean.classify(x).probabilities for x in X]
        clean.close()
        assert [dict(zip(line["device_labels"], line["probabilities"], strict=True)) for line in lines] == again
    assert set(_qemu_processes_running(image.elf)) <= before


# ---------------------------------------------------------------------------------------
# `tinyml flash --device qemu`, end to end
# ---------------------------------------------------------------------------------------


@needs_qemu
def test_flash_device_qemu_end_to_end(qemu_run, capsys):
    from tinyml_cli import main

    run, image = qemu_run
    before = set(_qemu_processes_running(image.elf))
    assert main(["flash", "--device", "qemu", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "measured on an emulated Cortex-M4" in out
    report = json.loads((run / "device_report.json").read_text())
    agreement = report["agreement_with_host_int8"]
    assert agreement["top1"] == 1.0 and agreement["int8_outputs_identical"] == 1.0 and agreement["passed"]
    assert report["device"]["sha256_verified"] and report["device"]["device_type"] == "QEMU_MPS2_AN386"
    m = report["measured_on_emulated_cortex_m4"]
    assert m["flash_bytes_text_plus_data"] == image.flash_bytes
    assert m["static_ram_bytes_data_plus_bss"] == image.static_ram_bytes
    assert 0 < m["stack_high_water_bytes"] < m["stack_size_bytes"]
    assert m["instructions_per_inference"] > m["mac_estimate"]["macs"]  # at least one instruction per MAC
    assert m["inferences_counted"] == report["windows"]
    ids = [json.loads(line)["window_id"] for line in (run / "device_eval.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == report["windows"]
    assert "Measured on an emulated Cortex-M4" in (run / "report.md").read_text()
    assert set(_qemu_processes_running(image.elf)) <= before  # stopped when the command ended


@needs_qemu
def test_ctrl_c_stops_qemu(qemu_run, tmp_path):
    """`tinyml emulate --device qemu` prints the pty, serves, and on Ctrl-C stops QEMU."""
    import signal
    import sys

    from conftest import sigint_default

    run, image = qemu_run
    before = set(_qemu_processes_running(image.elf))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "tinyml_cli", "emulate", "--device", "qemu", "--run", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=sigint_default)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/"), proc.stderr.read() if proc.poll() is not None else port
        with Device(port, timeout=5.0) as d:
            assert d.config.device_type == "QEMU_MPS2_AN386"
        assert set(_qemu_processes_running(image.elf)) - before
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while set(_qemu_processes_running(image.elf)) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(_qemu_processes_running(image.elf)) - before


@needs_qemu
def test_ctrl_c_during_the_evaluation_stops_qemu_and_keeps_the_results(qemu_run, tmp_path):
    import signal
    import sys

    from conftest import copy_run, sigint_default

    run = copy_run(qemu_run[0], tmp_path / "run")
    for stale in ("device_eval.jsonl", "device_report.json"):
        (run / stale).unlink(missing_ok=True)
    image = qemu_run[1]
    before = set(_qemu_processes_running(image.elf))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "tinyml_cli", "flash", "--device", "qemu", "--run", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=sigint_default)
    try:
        for line in proc.stdout:
            if line.startswith("eval: streaming"):
                break
        results = run / "device_eval.jsonl"
        deadline = time.monotonic() + 60
        while (not results.exists() or results.stat().st_size == 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not set(_qemu_processes_running(image.elf)) - before
    kept = [json.loads(line)["window_id"] for line in results.read_text().splitlines()]
    assert kept and len(kept) == len(set(kept))  # what came back is kept, once
