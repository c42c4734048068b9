"""Static-classification throughput of the firmware over a real pseudo-terminal: the host
board (the C++ core and the compiled model built with g++) and QEMU's emulated Cortex-M4.

Measures AT+RUNIMPULSESTATIC windows per second (the protocol and the compiled model on this
host; on QEMU, its UART's pace), the useful payload (N float32 values per window) as a share
of the 11,520 bytes/s of a 115200-baud line, and the wire bytes of a window, from which the
windows per second a 115200-baud UART allows follow (``line_limited_windows_per_s``: computed
from the measured bytes, not a throttled link).

    python bench/bench_device.py [--run models] [--out bench/results/device.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from firmware_bridge.host.client import Device  # noqa: E402
from firmware_bridge.targets import host_board, qemu  # noqa: E402

BAUD = 115200
LINE_BYTES_PER_S = BAUD / 10  # 8N1: 10 bits on the wire per byte


def run_dir(path: str | None, tmp: Path) -> tuple[Path, str]:
    """The run to measure: --run, else models/ when it holds a quantized model, else the tiny
    test model's run built now."""
    for candidate in ([Path(path)] if path else [ROOT / "models"]):
        if (candidate / "firmware" / "model_settings.h").is_file() and (candidate / "int8.tflite").is_file():
            return candidate, str(candidate)
    if path:
        raise SystemExit(f"{path}: no firmware/model_settings.h and int8.tflite (run `tinyml quantize` first)")
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_int8
    from test_host_board import write_run

    print("no run given and no models/: building the tiny test model...", file=sys.stderr)
    data = build_tiny_int8(tmp / "int8.tflite")
    return write_run(tmp / "run", data, ("idle", "wave", "circle", "updown")), "tests/conftest.build_tiny_int8 (32x3)"


def _board(run: Path, target: str, chunk_size: int):
    if target == "qemu":
        return qemu.boot(run)[1]
    image = host_board.build_host_board(run, chunk_size=chunk_size)
    return host_board.HostBoard(image, timing=host_board.board_timing(run)).start()


def measure(run: Path, *, target: str, chunk_size: int, seconds: float, min_windows: int) -> dict:
    with _board(run, target, chunk_size) as board, Device(board.port, baud=BAUD, timeout=10.0) as dev:
        n = dev.model_info().input_size
        rng = np.random.default_rng(0)
        windows = rng.normal(0, 2, size=(64, n)).astype(np.float32)
        for w in windows[:3]:  # warm-up
            dev.classify(w)
        count, host_to_device, device_to_host = 0, 0, 0
        command = len(f"AT+RUNIMPULSESTATIC=n,{n}\r")
        start = time.perf_counter()
        board_ms = None
        while count < min_windows or time.perf_counter() - start < seconds:
            result = dev.classify(windows[count % len(windows)])
            board_ms = result.timing.get("classification_ms")
            count += 1
            chunks = -(-(4 * -(-4 * n // 3)) // chunk_size)
            host_to_device += command + chunks * chunk_size
            device_to_host += command + 1 + len(result.raw)  # echo + CRLF + transcript
        elapsed = time.perf_counter() - start
    windows_per_s = count / elapsed
    payload = windows_per_s * n * 4
    wire = (host_to_device // count, device_to_host // count)
    return {
        "target": "host board (g++)" if target == "emu" else f"QEMU {qemu.MACHINE}",
        "chunk_size": chunk_size,
        "values_per_window": n,
        "windows": count,
        "seconds": round(elapsed, 3),
        "windows_per_s": round(windows_per_s, 2),
        "payload_bytes_per_s": round(payload, 1),
        "payload_share_of_line_rate": round(payload / LINE_BYTES_PER_S, 4),
        "wire_bytes_per_window": {"host_to_device": wire[0], "device_to_host": wire[1]},
        "line_limited_windows_per_s": round(LINE_BYTES_PER_S / max(wire), 2),
        "board_time_inference_ms": board_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run directory (default: models/, else a tiny test model's run)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "device.json"))
    parser.add_argument("--seconds", type=float, default=3.0, help="time per configuration")
    parser.add_argument("--min-windows", type=int, default=20)
    parser.add_argument("--no-qemu", action="store_true", help="the host board only")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        run, source = run_dir(args.run, Path(tmp))
        configs = [("emu", 32), ("emu", 128)] + ([] if args.no_qemu else [("qemu", 128)])
        rows = [measure(run, target=t, chunk_size=c, seconds=args.seconds, min_windows=args.min_windows)
                for t, c in configs]

    print(f"model: {source}, {rows[0]['values_per_window']} float32 values per window")
    print(f"{'target':<22} {'chunk':>5} {'windows/s':>10} {'share of 11,520 B/s':>20} "
          f"{'wire B/window (h->d / d->h)':>28} {'115200-baud limit':>18} {'board ms':>9}")
    for r in rows:
        wire = r["wire_bytes_per_window"]
        share = f"{100 * r['payload_share_of_line_rate']:.1f}%"
        print(f"{r['target']:<22} {r['chunk_size']:>5} {r['windows_per_s']:>10.1f} {share:>20} "
              f"{wire['host_to_device']:>13} / {wire['device_to_host']:<12} {r['line_limited_windows_per_s']:>16.1f}/s "
              f"{r['board_time_inference_ms']!s:>9}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "what": "AT+RUNIMPULSESTATIC throughput of the firmware (host board, QEMU) over a pseudo-terminal",
        "model": source,
        "line_rate_bytes_per_s": LINE_BYTES_PER_S,
        "note": ("windows/s measure this host (pty, protocol, compiled model) or QEMU's UART, not a board; "
                 "line_limited_windows_per_s is what a 115200-baud UART carries for the measured wire bytes; "
                 "board_time_inference_ms is the firmware's Timing line (cycles over the board's clock)"),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()},
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
