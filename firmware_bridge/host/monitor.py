"""The serial monitor: live predictions from any Edge Impulse-compatible device.

``PredictionMonitor`` is the core: fed raw bytes (a live port or a recorded transcript),
it assembles results in either firmware format and keeps the running figures: a rolling
latency summary, the class distribution and, when the user says what they are
performing, the live accuracy. ``monitor()`` drives it over a serial port.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from firmware_bridge.host import protocol
from firmware_bridge.host.protocol import InferenceResult
from pipeline.core.errors import BridgeError

ROLLING = 20
QUIET_FLUSH_S = 0.3
DISTRIBUTION_EVERY = 10
STOP_WAIT_S = 5.0  # Edge Impulse's tools wait this long for the prompt after 'b'


def latency_ms(result: InferenceResult) -> float:
    """DSP + inference + anomaly (+ postprocessing) as the device reported them."""
    return sum(result.timing.values())


class PredictionMonitor:
    """Assembles results from device output and aggregates them."""

    def __init__(self, label: str | None = None, rolling: int = ROLLING, limit: int | None = None):
        self.label = label
        self.limit = limit
        """Results after the first ``limit`` are ignored (a monitor asked for N inferences)."""
        self.results: list[InferenceResult] = []
        self.class_counts: Counter[str] = Counter()
        self.correct = 0
        self.errors: list[str] = []
        self.rolling = rolling
        self._all_latencies: list[float] = []
        self._parser = protocol.ResultParser()
        self._partial = ""

    # -- input --------------------------------------------------------------------------

    def feed(self, data: bytes | str) -> list[InferenceResult]:
        """Take a piece of device output; return the results it completed."""
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        lines = protocol.text_lines(self._partial + data)
        self._partial = lines.pop()
        done: list[InferenceResult] = []
        for line in lines:
            if line.startswith("ERR"):
                self.errors.append(line.strip())
            done += self._parser.feed_line(line)
        return self._add_all(done)

    def flush(self) -> list[InferenceResult]:
        """End the pending result (a live port went quiet, or a transcript ended)."""
        done = []
        if self._partial.strip() and self._partial.strip() != protocol.PROMPT.strip():
            done += self._parser.feed_line(self._partial)
            self._partial = ""
        last = self._parser.flush()
        done += [last] if last else []
        return self._add_all(done)

    def _add_all(self, done: list[InferenceResult]) -> list[InferenceResult]:
        if self.limit is not None:
            done = done[:max(0, self.limit - self.count)]
        for result in done:
            self._add(result)
        return done

    @property
    def pending(self) -> bool:
        return self._parser.pending

    @property
    def prompt_seen(self) -> bool:
        """The device printed its prompt: the command it was running is over."""
        return self._partial == protocol.PROMPT

    def _add(self, result: InferenceResult) -> None:
        self.results.append(result)
        if result.label is not None:
            self.class_counts[result.label] += 1
        if self.label is not None and result.label == self.label:
            self.correct += 1
        if result.timing:
            self._all_latencies.append(latency_ms(result))

    # -- figures ------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.results)

    @property
    def accuracy(self) -> float | None:
        """Share of results whose top class is the label being performed."""
        if self.label is None or not self.results:
            return None
        return self.correct / len(self.results)

    def rolling_latency(self) -> dict[str, float] | None:
        """Mean, median and max latency (ms) over the last ``rolling`` results."""
        values = self._all_latencies[-self.rolling:]
        if not values:
            return None
        return {"n": len(values), "mean_ms": statistics.fmean(values),
                "median_ms": statistics.median(values), "max_ms": max(values)}

    def summary(self) -> dict:
        lat = self._all_latencies
        return {
            "inferences": self.count,
            "class_distribution": dict(self.class_counts.most_common()),
            "latency_ms": ({"mean": statistics.fmean(lat), "median": statistics.median(lat),
                            "min": min(lat), "max": max(lat)} if lat else None),
            "label": self.label,
            "correct": self.correct if self.label is not None else None,
            "accuracy": self.accuracy,
            "errors": list(self.errors),
        }

    # -- text ---------------------------------------------------------------------------

    def format_result(self, result: InferenceResult, number: int | None = None) -> str:
        """One line per inference: number, top class, its score, latency, running figures."""
        parts = [f"#{number if number is not None else self.count:<4d}"]
        top = result.label or "?"
        score = result.predictions.get(top) if result.predictions else None
        parts.append(f"{top:<12} {score:.3f}" if score is not None else f"{top:<12}")
        if result.anomaly is not None:
            parts.append(f"anomaly {result.anomaly:.3f}")
        if result.timing:
            parts.append(f"latency {latency_ms(result):.3f} ms")
        rolling = self.rolling_latency()
        if rolling:
            parts.append(f"(last {rolling['n']}: mean {rolling['mean_ms']:.3f} ms)")
        if self.label is not None:
            mark = "hit " if result.label == self.label else "miss"
            parts.append(f"{mark} accuracy {self.correct}/{self.count} ({100 * (self.accuracy or 0):.0f}%)")
        return "  ".join(parts)

    def format_distribution(self) -> str:
        total = sum(self.class_counts.values()) or 1
        return "classes: " + ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in self.class_counts.most_common())

    def format_summary(self) -> str:
        s = self.summary()
        lines = [f"{s['inferences']} inferences"]
        if s["latency_ms"]:
            lat = s["latency_ms"]
            lines.append(f"latency ms: mean {lat['mean']:.3f}, median {lat['median']:.3f}, "
                         f"min {lat['min']:.3f}, max {lat['max']:.3f} (as the device reports it)")
        if self.class_counts:
            lines.append(self.format_distribution())
        if self.label is not None:
            lines.append(f"accuracy against '{self.label}': {self.correct}/{self.count}"
                         + (f" ({100 * self.accuracy:.1f}%)" if self.accuracy is not None else ""))
        return "\n".join(lines)


def monitor(port: str, label: str | None = None, *, baud: int = 115200, count: int | None = None,
            timeout: float = 5.0, idle_timeout: float = 30.0, out: TextIO | None = None,
            on_result: Callable[[InferenceResult], None] | None = None) -> PredictionMonitor:
    """Run AT+RUNIMPULSE on the device at ``port`` and show live predictions.

    Stops after ``count`` inferences, or on Ctrl-C: either way it sends ``b`` and waits up
    to 5 s for the prompt. ``idle_timeout``: seconds without a byte before giving up.
    """
    # lazy: the client loads numpy; `tinyml monitor` starts fast
    from firmware_bridge.host.client import Device

    out = out or sys.stdout
    mon = PredictionMonitor(label, limit=count)
    device = Device(port, baud=baud, timeout=timeout)
    try:
        device.send("AT+RUNIMPULSE")
        last_byte = time.monotonic()
        try:
            while count is None or mon.count < count:
                data = device.read(0.1)
                results = mon.feed(data)
                now = time.monotonic()
                if data:
                    last_byte = now
                elif mon.pending and now - last_byte > QUIET_FLUSH_S:
                    results += mon.flush()
                first = mon.count - len(results)
                for i, result in enumerate(results):
                    print(mon.format_result(result, first + i + 1), file=out, flush=True)
                    if (first + i + 1) % DISTRIBUTION_EVERY == 0:
                        print(mon.format_distribution(), file=out, flush=True)
                    if on_result is not None:
                        on_result(result)
                if mon.errors:
                    raise BridgeError(f"{port}: the device reported an error: {mon.errors[0]}")
                if mon.prompt_seen:
                    raise BridgeError(f"{port}: AT+RUNIMPULSE ended at once: not a device with a sensor?")
                if now - last_byte > idle_timeout:
                    raise BridgeError(f"{port}: no output for {idle_timeout:g} s during AT+RUNIMPULSE")
        except KeyboardInterrupt:
            pass
    finally:
        try:
            if not mon.prompt_seen:
                _stop(device, port)
        finally:
            device.close()
    print(mon.format_summary(), file=out, flush=True)
    return mon


def _stop(device, port: str) -> None:
    """Send ``b`` and wait for the prompt, as Edge Impulse's tools do."""
    try:
        device.write(b"b")
        device.wait_prompt(STOP_WAIT_S)
    except BridgeError:
        print(f"warning: {port}: no prompt within {STOP_WAIT_S:g} s after 'b'", file=sys.stderr)
