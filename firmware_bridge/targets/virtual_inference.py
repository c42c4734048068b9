"""The virtual device's inference commands: AT+RUNIMPULSESTATIC (the base64 transfer of
one window, then its result) and AT+RUNIMPULSE, AT+RUNIMPULSEDEBUG, AT+RUNIMPULSECONT (the
sensor's windows), printed byte for byte as the C++ core's run_inference does."""

from __future__ import annotations

import time

import numpy as np

from firmware_bridge.host import protocol, sampling

BOOT_WAIT_S = 2.0


class InferenceCommands:
    """The inference handlers of ``virtual_device.Firmware`` (a mixin: they use its
    ``model``, ``facts``, ``labels``, ``sensor``, ``chunk_size``, ``chunk_timeout_s``,
    ``boot_error``, ``samples_per_window``, ``inference_ms`` and ``sleep``)."""

    def _classify(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        assert self.model is not None
        raw, probabilities, elapsed = self.model.classify(features)
        return raw, probabilities, self.inference_ms(elapsed)

    def run_impulse_static(self, term, args: list[str]) -> bool:
        if len(args) < 2:
            term.write("Too few arguments! Required: 2\r\n")
            return False
        if self.boot_error:
            term.write(self.boot_error + "\r\n")
            return True
        debug = args[0].strip().lower() == "y"
        # As the C++ core's parse_count: a whole number from 1 to STATIC_MAX_VALUES.
        n = int(args[1]) if sampling.is_decimal(args[1], False) and len(args[1]) <= 9 else 0
        if not 0 < n <= protocol.STATIC_MAX_VALUES:
            term.write(f"ERR: N must be a whole number of float32 values from 1 to "
                       f"{protocol.STATIC_MAX_VALUES}, got '{args[1]}'\r\n")
            return False
        term.write(f"OK CHUNK={self.chunk_size}\r\n")
        received = bytearray()
        for k in range(protocol.chunk_count(n, self.chunk_size)):
            chunk = self._read_chunk(term)
            if chunk is None:
                term.write("TIMEOUT\r\nEND OUTPUT\r\n")
                return False
            try:
                received += protocol.decode_chunk(chunk)
            except ValueError:
                term.write(f"ERR: chunk {k + 1} is not base64\r\nEND OUTPUT\r\n")
                return False
            term.write(f"OK {min(n, len(received) // 4)} \r\n")
        term.write(f"TRANSFER COMPLETED {n}\r\n")
        expected = self.facts.input_size
        if n != expected:
            term.write("ERROR: The size of the input buffer is not correct.\r\n"
                       f"Expected {expected} items, but got {n}\r\n"
                       "RESULT -1\r\nEND OUTPUT\r\n")
            return True
        features = np.frombuffer(bytes(received[:4 * n]), dtype="<f4")
        raw, probabilities, ms = self._classify(features)
        if debug:
            term.write("Features (" + str(n) + "): " + ", ".join(f"{v:g}" for v in features) + "\r\n")
            term.write("Raw output: " + ", ".join(str(int(v)) for v in raw) + "\r\n")
        term.write(protocol.render_static_result(self.labels, probabilities, (0.0, ms, 0.0)))
        return True

    def _read_chunk(self, term) -> bytes | None:
        """One transfer chunk, which must be in within the chunk timeout of starting to wait."""
        deadline = time.perf_counter() + self.chunk_timeout_s
        chunk = bytearray()
        while len(chunk) < self.chunk_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            byte = term.read_byte(remaining)
            if byte is None:
                return None
            if byte not in (0x0D, 0x0A):  # a host's line ends are not base64: skip them
                chunk.append(byte)
        return bytes(chunk)

    def run_impulse(self, term) -> bool:
        return self._run_inference(term, "normal")

    def run_impulsecont(self, term) -> bool:
        return self._run_inference(term, "continuous")

    def write_runimpulsedebug(self, term, args: list[str]) -> bool:
        # 'y' asks for the faster data baud rate; this device has only the one it reports.
        return self._run_inference(term, "debug")

    def _print_result(self, term, window: np.ndarray, debug: bool) -> None:
        _, probabilities, ms = self._classify(window.reshape(-1))
        if debug:  # as run_classifier(..., debug = true) prints the features
            term.write("Features (0 ms.): " + "".join(f"{float(v):.6f} " for v in window.reshape(-1)) + "\n")
        term.write(protocol.render_current_result(self.labels, probabilities, (0.0, ms, 0.0)))

    def _run_inference(self, term, mode: str) -> bool:
        """AT+RUNIMPULSE, AT+RUNIMPULSEDEBUG and AT+RUNIMPULSECONT, as the C++ core's
        run_inference: normal and debug sample a window, print a result and pause 2 s;
        continuous prints a result every slice of the window, with no pause."""
        if self.boot_error:
            term.write(self.boot_error + "\n")
            return True
        if self.sensor is None:
            term.write("ERR: No sensor data: this virtual device has no sensor recording "
                       "(start it with --sensor FILE.npz)\n")
            return True
        frames, rate = self.samples_per_window, self.sensor.rate_hz
        term.write("Inferencing settings:\n"
                   f"\tInterval: {1000.0 / rate:.2f} ms.\n"
                   f"\tFrame size: {self.facts.input_size}\n"
                   f"\tSample length: {int(frames * 1000.0 / rate + 0.5)} ms.\n"  # as the C++ window_ms()
                   f"\tNo. of classes: {len(self.labels)}\n"
                   "Starting inferencing, press 'b' to break\n")
        if mode == "continuous":
            slice_frames = max(1, frames // sampling.SLICES_PER_WINDOW)
            window = self.sensor.next_window(frames)
            stopped = self.sleep(term, frames / rate)
            while not stopped:
                self._print_result(term, window, debug=False)
                window = np.concatenate([window[slice_frames:], self.sensor.next_window(slice_frames)])
                stopped = self.sleep(term, slice_frames / rate)
        else:
            term.write("Starting inferencing in 2 seconds...\n")
            stopped = self.sleep(term, BOOT_WAIT_S)
            while not stopped:
                term.write("Sampling...\n")
                window = self.sensor.next_window(frames)
                if self.sleep(term, frames / rate):  # the sensor fills the window in real time
                    break
                self._print_result(term, window, debug=mode == "debug")
                stopped = self.sleep(term, BOOT_WAIT_S)
        term.write("Inferencing stopped by user\r\n")
        return True
