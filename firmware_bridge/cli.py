"""Command-line glue for ``tinyml emulate``, ``tinyml monitor`` and ``tinyml ports``.

The top-level CLI adds these arguments to its subparsers and calls ``run_*``; errors are
raised as ``BridgeError`` (one line naming the port or file, with a hint), for the CLI to
print and exit with ``exit_code``. ``python -m firmware_bridge.cli`` runs them standalone.
Each ``run_*`` imports what it runs inside it, so that the CLI starts fast.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from firmware_bridge.host import protocol
from pipeline.core.errors import BridgeError


def add_emulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("emu", "qemu"), default="emu",
                        help="emu: the host board, the firmware's C++ core and the run's compiled model built with "
                             "g++ for this computer (default); qemu: the firmware on QEMU's emulated Cortex-M4 "
                             "(mps2-an386); both built from the run directory")
    parser.add_argument("--run", metavar="DIR", default="models",
                        help="run directory: its quantize outputs are built into the board (default: models)")
    parser.add_argument("--board", default=None,
                        help="board profile whose clock turns measured cycles into board time (default: the run's "
                             "[quantize] board)")
    parser.add_argument("--chunk-size", type=int, default=protocol.DEFAULT_CHUNK_SIZE, help="AT+RUNIMPULSESTATIC chunk size (multiple of 16)")
    parser.add_argument("--sensor", metavar="FILE",
                        help=".npz sensor recordings (X (n, T, C), rate_hz) for AT+RUNIMPULSE and AT+SAMPLESTART "
                             "(default: the run's test recordings, DIR/device/flash/sensor.npz)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="host board: run the board's clock this many times faster (the protocol's waits pass "
                             "sooner; the AT+RUNIMPULSESTATIC chunk timeout is on that clock too); Timing lines stay "
                             "board time")


def run_emulate(args: argparse.Namespace) -> int:
    """Boot the host board (or QEMU) and serve it until Ctrl-C; the first line printed is its port."""
    if getattr(args, "device", "emu") == "qemu":
        return run_emulate_qemu(args)
    return run_emulate_host(args)


def run_emulate_host(args: argparse.Namespace) -> int:
    """Build (if stale) and run the host board; print its pty first; run until Ctrl-C or
    until the firmware exits. The firmware is stopped on the way out, whatever the way."""
    from firmware_bridge.targets import host_board

    if args.time_scale <= 0:
        raise BridgeError(f"--time-scale: expected a positive number, got {args.time_scale:g}")
    run = Path(args.run)
    image = host_board.build_host_board(run, chunk_size=args.chunk_size)
    sensor, name = host_board.sensor_file.run_sensor(run, args.sensor, out_dir=run / host_board.BUILD_DIR)
    timing = host_board.board_timing(run, args.board)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with host_board.HostBoard(image, sensor=sensor, timing=timing, time_scale=args.time_scale,
                              sensor_name=name) as board:
        print(board.port, flush=True)
        built = f"built in {image.build_seconds:.1f} s" if image.rebuilt else "up to date"
        print(f"host board {image.exe} ({built}): "
              f"the firmware's C++ core and {run}'s compiled model, built with g++; UART on {board.port}")
        print(f"timing: board time of {timing['board']} at {timing['clock_hz']:,} Hz, "
              + (f"{timing['cycles_per_inference']:,} cycles per inference ({timing['source']})"
                 if timing.get("cycles_per_inference") else "no MAC count: inference timed on the board's clock"))
        print(f"sensor: {name}, from {sensor}, played at its recorded rate" if sensor else
              "sensor: none (AT+RUNIMPULSE and AT+SAMPLESTART answer with an error; --sensor FILE.npz)")
        print("serving the Edge Impulse AT protocol (AT+HELP; AT+PROFILE? for the board's timing); Ctrl-C to stop",
              flush=True)
        return _serve(board, "the host board")


def run_emulate_qemu(args: argparse.Namespace) -> int:
    """Build (if stale) and boot the firmware in QEMU; print its pty first; run until Ctrl-C
    or until QEMU exits. QEMU is stopped on the way out, whatever the way."""
    from firmware_bridge.targets import qemu

    if args.time_scale != 1.0:
        raise BridgeError("--time-scale is the host board's: QEMU's clock is the emulated processor's",
                          hint="tinyml emulate --device qemu --run DIR")
    # SIGTERM (a service manager, `timeout`) stops QEMU as Ctrl-C does, through the with.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    image, board = qemu.boot(args.run, sensor=args.sensor, board=args.board)
    with board:
        clock = qemu.deployment_board(args.run, args.board)
        print(board.port, flush=True)
        print(f"QEMU {qemu.MACHINE} (Cortex-M4F, -icount shift=0) running {image.elf}: flash {image.flash_bytes:,} B, "
              f"static RAM {image.static_ram_bytes:,} B; UART0 on {board.port}")
        print(f"timing: board time of {clock.name} at {clock.clock_hz:,} Hz: the instructions each inference executes "
              "(measured under -icount), one cycle each; never QEMU's virtual time")
        print(f"sensor: {board.sensor_name}, from {board.sensor} in the board's PSRAM, played at its recorded rate"
              if board.sensor else
              "sensor: none (AT+RUNIMPULSE and AT+SAMPLESTART answer with an error; --sensor FILE.npz)")
        print("serving the Edge Impulse AT protocol (AT+HELP; AT+PROFILE? for stack and instructions); Ctrl-C to stop",
              flush=True)
        return _serve(board, "qemu-system-arm")


def _serve(board, what: str) -> int:
    """Wait while ``board`` (host board or QEMU) serves its pty: 0 on Ctrl-C, an error naming
    what it said last if it exits by itself. The caller's ``with board`` stops it either way."""
    try:
        while board.running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    raise BridgeError(f"{what} exited by itself: {'; '.join(board.output_tail()) or 'no message'}")


def add_monitor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("port", metavar="PORT", nargs="?", default=None,
                        help="serial port or pyserial URL (default: the one board found)")
    parser.add_argument("--label", default=None, help="the class you are performing: scores live accuracy")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--count", type=int, default=None, metavar="N", help="stop after N inferences")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply")


def run_monitor(args: argparse.Namespace) -> int:
    """Live predictions from AT+RUNIMPULSE until --count or Ctrl-C."""
    from firmware_bridge.host.monitor import monitor
    from firmware_bridge.host.ports import detect_port

    if args.count is not None and args.count < 1:
        raise BridgeError(f"--count: expected at least 1, got {args.count}")
    port = args.port or detect_port()
    monitor(port, args.label, baud=args.baud, count=args.count, timeout=args.timeout)
    return 0


def add_capture_arguments(parser: argparse.ArgumentParser) -> None:
    from firmware_bridge.host.capture import DEFAULT_COUNTDOWN_S, DEFAULT_LENGTH_MS

    parser.add_argument("port", metavar="PORT", help="serial port or pyserial URL (auto: the one board found)")
    parser.add_argument("--label", required=True, help="the class you perform while recording, e.g. wave")
    parser.add_argument("--count", type=int, required=True, metavar="N", help="samples to record")
    parser.add_argument("--length-ms", type=int, default=DEFAULT_LENGTH_MS, metavar="MS",
                        help=f"length of each sample (default {DEFAULT_LENGTH_MS})")
    parser.add_argument("--sensor", metavar="NAME", default=None,
                        help="sensor name as AT+CONFIG? lists it (default: the first)")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="export folder: DIR/info.labels and DIR/training/ (appended to when it exists)")
    parser.add_argument("--cbor", action="store_true",
                        help="keep the device's signed CBOR files as they are (default: JSON)")
    parser.add_argument("--hmac-key", default="", metavar="KEY",
                        help="sign samples with this key (your Edge Impulse project's) and verify each signature")
    parser.add_argument("--category", default="training", choices=("training", "testing"),
                        help="Edge Impulse category of the samples (default training)")
    parser.add_argument("--countdown", type=int, default=DEFAULT_COUNTDOWN_S, metavar="S",
                        help=f"seconds counted down before each sample (default {DEFAULT_COUNTDOWN_S})")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply")


def run_capture(args: argparse.Namespace) -> int:
    """Record --count samples of --label into --out (an Edge Impulse export)."""
    from firmware_bridge.host.capture import capture
    from firmware_bridge.host.ports import detect_port

    port = detect_port() if args.port == "auto" else args.port
    capture(port, args.label, args.count, args.out, length_ms=args.length_ms, sensor=args.sensor,
            cbor=args.cbor, hmac_key=args.hmac_key, category=args.category, countdown_s=args.countdown,
            baud=args.baud, timeout=args.timeout)
    return 0


def add_ports_arguments(parser: argparse.ArgumentParser) -> None:
    """``tinyml ports`` takes no arguments; here for symmetry with the others."""


def run_ports(args: argparse.Namespace | None = None) -> int:
    """Print the serial ports with a board guess from their USB VID:PID."""
    from firmware_bridge.host.ports import format_ports, list_ports

    print(format_ports(list_ports()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, add, run in (("emulate", add_emulate_arguments, run_emulate),
                           ("monitor", add_monitor_arguments, run_monitor),
                           ("capture", add_capture_arguments, run_capture),
                           ("ports", add_ports_arguments, run_ports)):
        p = sub.add_parser(name)
        add(p)
        p.set_defaults(func=run)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BridgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
