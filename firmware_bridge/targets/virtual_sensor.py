"""The virtual device's sensor: recordings played back at their real rate, and the
sampling commands (AT+SAMPLESETTINGS, AT+SAMPLESTART, AT+READBUFFER) that record them into
the signed CBOR acquisition file, byte for byte as the C++ core's write_sample_start and
write_read_buffer do."""

from __future__ import annotations

import base64
import math
import os
import threading
from pathlib import Path

import numpy as np

from firmware_bridge.host import sampling
from pipeline.core.errors import BridgeError, PipelineError
from pipeline.core.safe_io import load_npz_arrays


def clip_setting(text: str) -> str:
    """A stored setting, cut as the C++ core cuts it."""
    return text[:sampling.SETTING_CHARS]  # the C++ core keeps as many characters




class SensorPlayback:
    """Recordings from an ``.npz`` (``X`` float32 (n, T, C), ``rate_hz``), played one after another."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise BridgeError(f"{self.path}: sensor file not found", hint="expected an .npz with X (n, T, C) and rate_hz")
        try:  # a truncated or tampered file is one error line, and no header is trusted
            arrays = load_npz_arrays(self.path)
        except PipelineError as exc:
            raise BridgeError(exc.message, hint=exc.hint) from None
        for key in ("X", "rate_hz"):
            if key not in arrays:
                raise BridgeError(f"{self.path}: sensor file has no {key!r} array",
                                  hint="expected X float32 (n, T, C) recordings and a scalar rate_hz")
        X, rate = arrays["X"], arrays["rate_hz"]
        if X.ndim != 3 or 0 in X.shape or X.dtype.kind not in "fiu":
            raise BridgeError(f"{self.path}: X has shape {X.shape} of {X.dtype}, expected numbers "
                              "(recordings, samples, channels)")
        if np.ndim(rate) != 0 or rate.dtype.kind not in "fiu" or not 0 < float(rate) < float("inf"):
            raise BridgeError(f"{self.path}: rate_hz must be a positive scalar, got {rate!r}")
        self.stream = X.astype(np.float32).reshape(-1, X.shape[2])
        self.recordings, self.rate_hz = X.shape[0], float(rate)
        self.channels = X.shape[2]
        self.name = "Playback of " + self.path.name.replace(",", "_")  # a comma would end the name field
        self._pos = 0
        self._lock = threading.Lock()

    @property
    def seconds(self) -> float:
        return len(self.stream) / self.rate_hz

    def next_window(self, samples: int) -> np.ndarray:
        """The next ``samples`` samples of the stream (recordings back to back, looping)."""
        with self._lock:
            idx = (self._pos + np.arange(samples)) % len(self.stream)
            self._pos = int((self._pos + samples) % len(self.stream))
        return self.stream[idx]



class SamplingCommands:
    """The sampling handlers of ``virtual_device.Firmware`` (a mixin: they use its
    ``settings``, ``sensor``, ``sample``, ``device_type``, ``time_scale`` and ``facts``)."""

    def _sensor_kind(self) -> int:
        channels = self.sensor.channels if self.sensor else self.facts.input_shape[-1]
        return {1: 1, 3: 2, 9: 4}.get(channels, 6)

    def _sampling(self) -> str:
        s = self.settings
        return (f"Label:     {s.label}\n"
                f"Interval:  {s.interval_ms:.2f} ms.\n"
                f"Length:    {s.length_ms} ms.\n"
                f"HMAC key:  {s.hmac_key}\n")

    def read_samplesettings(self, term) -> None:
        term.write(self._sampling())

    def write_samplesettings(self, term, args: list[str]) -> None:
        if len(args) < 3:
            term.write("Missing argument! Required: LABEL,INTERVAL_MS,LENGTH_MS,[HMAC_KEY]\n")
            return
        interval = float(args[1]) if sampling.is_decimal(args[1], True) else -1.0
        length = int(args[2]) if sampling.is_decimal(args[2], False) and len(args[2]) <= 9 else -1
        if not (interval > 0 and math.isfinite(interval)) or not 0 < length <= sampling.MAX_SAMPLE_LENGTH_MS:
            term.write(f"Invalid interval or length ({args[1]},{args[2]}): expected positive numbers of ms\n")
            return
        s = self.settings
        s.label, s.interval_ms, s.length_ms = clip_setting(args[0]), interval, length
        if len(args) > 3:
            s.hmac_key = clip_setting(args[3])
        term.write("OK\n")

    def write_samplestart(self, term, args: list[str]) -> None:
        name = args[0] if args else ""
        if not name:
            term.write("Missing sensor name!\n")
            return
        if self.sensor is None or name != self.sensor.name:
            term.write(f"ERR: Failed to find sensor '{name}' in the sensor list\n")
            return
        self.sample = b""
        s, axes = self.settings, self.sensor.channels
        interval, sensor_interval = s.interval_ms, 1000.0 / self.sensor.rate_hz
        if not 1 <= axes <= sampling.MAX_SAMPLE_AXES:
            term.write(f"ERR: Failed to start sampling: {axes} axes, at most {sampling.MAX_SAMPLE_AXES} fit a sample\n")
            return
        if abs(interval - sensor_interval) > sampling.INTERVAL_TOLERANCE_MS:
            term.write(f"ERR: Failed to start sampling: the sensor reads every {sensor_interval:.2f} ms, "
                       f"not every {interval:.2f} ms (set INTERVAL_MS with AT+SAMPLESETTINGS)\n")
            return
        readings = math.floor(s.length_ms / interval)
        if readings < 1:
            term.write(f"ERR: Failed to start sampling: {s.length_ms} ms hold no reading\n")
            return
        header = sampling.acquisition_header(s.device_id, self.device_type, interval, axes, bool(s.hmac_key))
        if len(header) + readings * sampling.reading_bytes(axes) + 1 > sampling.SAMPLE_BUFFER_BYTES:
            term.write(f"ERR: Failed to start sampling: {readings} readings do not fit the "
                       f"{sampling.SAMPLE_BUFFER_BYTES}-byte sample buffer (at most "
                       f"{sampling.max_sample_seconds(axes, self.sensor.rate_hz)} s)\n")
            return
        term.write("Sampling settings:\n"
                   f"\tInterval: {interval:.5f} ms.\n"
                   f"\tLength: {s.length_ms} ms.\n"
                   f"\tName: {s.label}\n"
                   f"\tHMAC Key: {s.hmac_key}\n"
                   f"\tFile name: /fs/{s.label}\n"
                   f"Starting in {round(sampling.SAMPLE_START_DELAY_S * 1000)} ms... (or until all flash was erased)\n")
        term.idle(sampling.SAMPLE_START_DELAY_S * self.time_scale)
        term.write("Sampling...\n")
        values = self.sensor.next_window(readings)
        term.idle(readings * interval / 1000.0 * self.time_scale)  # the sensor fills it in real time
        self.sample = sampling.encode_acquisition(s.device_id, self.device_type, interval, values, s.hmac_key)
        n = len(self.sample)
        term.write(f"Done sampling, total bytes collected: {n}\n"
                   f"Not uploading file, not connected to WiFi. Used buffer, from=0, to={n}.\n"
                   "OK\n")

    def write_readbuffer(self, term, args: list[str]) -> None:
        if len(args) < 2:
            term.write("Missing argument! Required: START,LENGTH,[USEMAXRATE]\n")
            return

        def offset(text: str) -> int | None:
            ok = sampling.is_decimal(text, False) and not text.startswith("-") and len(text) <= 9
            return int(text) if ok else None

        start, length = offset(args[0]), offset(args[1])
        ok = start is not None and length is not None and start <= len(self.sample)
        max_rate = len(args) >= 3 and args[2].startswith("y")
        if max_rate:
            term.write("OK\r\n")
        if ok:
            term.write(base64.b64encode(self.sample[start:start + length]))
        if max_rate:
            term.write("\r\nOK\r\n")
        term.write("\n" if ok else "Failed to read from buffer\n")
