"""Static-classification throughput of the virtual device over a real pseudo-terminal.

Measures AT+RUNIMPULSESTATIC windows per second unthrottled (the protocol and TFLM cost on
this host) and with the link throttled to 115200 baud (what a UART would carry), and the
useful payload (N float32 values per window) as a share of the 11,520 bytes/s line rate.

    python bench/bench_device.py [--model models/int8.tflite] [--out bench/results/device.json]
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
from firmware_bridge.targets.virtual_device import VirtualDevice  # noqa: E402

BAUD = 115200
LINE_BYTES_PER_S = BAUD / 10  # 8N1: 10 bits on the wire per byte


def model_bytes(path: str | None) -> tuple[bytes, str]:
    """The model to measure: --model, else models/int8.tflite, else a tiny one built now."""
    if path:
        return Path(path).read_bytes(), path
    default = ROOT / "models" / "int8.tflite"
    if default.is_file():
        return default.read_bytes(), str(default.relative_to(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_int8

    print("no model given and no models/int8.tflite: building the tiny test model...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        data = build_tiny_int8(Path(tmp) / "int8.tflite")
    return data, "tests/conftest.build_tiny_int8 (input 32x3, 4 classes)"


def measure(data: bytes, *, throttle: bool, chunk_size: int, seconds: float, min_windows: int) -> dict:
    with VirtualDevice(data, throttle=throttle, baud=BAUD, chunk_size=chunk_size) as vd, \
            Device(vd.port, baud=BAUD, timeout=10.0) as dev:
        n = vd.firmware.facts.input_size
        rng = np.random.default_rng(0)
        windows = rng.normal(0, 2, size=(64, n)).astype(np.float32)
        for w in windows[:3]:  # warm-up
            dev.classify(w)
        count, host_to_device, device_to_host = 0, 0, 0
        command = len(f"AT+RUNIMPULSESTATIC=n,{n}\r")
        start = time.perf_counter()
        while count < min_windows or time.perf_counter() - start < seconds:
            result = dev.classify(windows[count % len(windows)])
            count += 1
            chunks = -(-(4 * -(-4 * n // 3)) // chunk_size)
            host_to_device += command + chunks * chunk_size
            device_to_host += command + 1 + len(result.raw)  # echo + CRLF + transcript
        elapsed = time.perf_counter() - start
    windows_per_s = count / elapsed
    payload = windows_per_s * n * 4
    return {
        "throttled_baud": BAUD if throttle else None,
        "chunk_size": chunk_size,
        "values_per_window": n,
        "windows": count,
        "seconds": round(elapsed, 3),
        "windows_per_s": round(windows_per_s, 2),
        "payload_bytes_per_s": round(payload, 1),
        "payload_share_of_line_rate": round(payload / LINE_BYTES_PER_S, 4),
        "wire_bytes_per_window": {"host_to_device": host_to_device // count,
                                  "device_to_host": device_to_host // count},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="int8 .tflite (default: models/int8.tflite, else a tiny test model)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "device.json"))
    parser.add_argument("--seconds", type=float, default=3.0, help="time per configuration")
    parser.add_argument("--min-windows", type=int, default=20)
    args = parser.parse_args(argv)

    data, source = model_bytes(args.model)
    configs = [(False, 32), (True, 32), (True, 128)]
    rows = [measure(data, throttle=t, chunk_size=c, seconds=args.seconds, min_windows=args.min_windows)
            for t, c in configs]

    print(f"model: {source}, {rows[0]['values_per_window']} float32 values per window")
    print(f"{'link':<22} {'chunk':>5} {'windows/s':>10} {'payload B/s':>12} {'share of 11,520 B/s':>20} {'wire B/window (h->d / d->h)':>28}")
    for r in rows:
        link = f"throttled {BAUD} baud" if r["throttled_baud"] else "pty, unthrottled"
        wire = r["wire_bytes_per_window"]
        share = f"{100 * r['payload_share_of_line_rate']:.1f}%"
        print(f"{link:<22} {r['chunk_size']:>5} {r['windows_per_s']:>10.1f} {r['payload_bytes_per_s']:>12.0f} "
              f"{share:>20} {wire['host_to_device']:>13} / {wire['device_to_host']:<12}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "what": "AT+RUNIMPULSESTATIC throughput of the virtual device over a pseudo-terminal",
        "model": source,
        "line_rate_bytes_per_s": LINE_BYTES_PER_S,
        "note": ("unthrottled figures measure this host (pty, protocol, TFLM), not a board; throttled "
                 "figures pace both directions at the baud rate as a UART would; the share of the "
                 "line rate can exceed 100% only unthrottled"),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()},
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
