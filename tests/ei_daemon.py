"""What Edge Impulse's CLI sends a serial device, in the order and pacing it sends it, for the
tests to play against the host board and QEMU.

Edge Impulse's CLI (edge-impulse-cli, npm) is not installable here (the registry this machine
reaches does not carry it), so the tests drive the firmware with the same bytes: written from
its source, shared/daemon/ei-serial-protocol.ts (onConnected, getConfig, setSampleSettings,
startSampling, startInference, stopInference; execCommand's 5-byte pieces 20 ms apart, each
reply read up to the "> " prompt) and cli/run-impulse.ts (the three modes). Our own code: the
host's side only, it implements no device command.
"""

from __future__ import annotations

import base64
import re
import time

import serial

PROMPT = b"> "
# getConfig's sensor line, the new format (ei-serial-protocol.ts).
SENSOR_LINE = re.compile(r"^Name\:\s?([^,]+),\s?Max sample length\:\s?([^,]+)s\s?,\s?Frequencies\:\s?\[(.*)\]\s?$")


class EiSerial:
    def __init__(self, port: str):
        self.ser = serial.Serial(port, 115200, timeout=0.05)
        self.buf = b""

    def close(self) -> None:
        self.ser.close()

    def _paced(self, text: str) -> None:
        for ix in range(0, len(text), 5):  # "split it up a bit for pacing"
            if ix:
                time.sleep(0.02)
            self.ser.write(text[ix:ix + 5].encode("ascii"))

    def wait_for(self, seq: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while seq not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {seq!r} within {timeout} s; got {self.buf[-300:]!r}")
            self.buf += self.ser.read(max(1, self.ser.in_waiting))
        end = self.buf.index(seq) + len(seq)
        data, self.buf = self.buf[:end], self.buf[end:]
        return data

    def on_connected(self) -> None:
        self.ser.write(b"b\r")
        self.wait_for(PROMPT, 5.0)

    def exec_command(self, command: str, timeout: float = 2.0) -> str:
        self._paced(command + "\r")
        data = self.wait_for(PROMPT, timeout).decode("ascii", "replace")
        # parseSerialResponse: the echoed command line and the prompt are not the reply.
        reply = data.split("\n", 1)[1] if "\n" in data else ""
        reply = reply[:-len("> ")].strip()
        if "Not a valid AT command" in reply:
            raise RuntimeError("Error when communicating with device: " + reply)
        return reply

    def get_config(self) -> dict:
        data = self.exec_command("AT+CONFIG?")
        config: dict = {"sensors": [], "info": {}, "sampling": {}}
        section = None
        for line in (x.strip() for x in data.split("\n")):
            if not line:
                continue
            m = re.search(r"= (Device info|Sensors|Snapshot|Inference|WIFI|Sampling parameters|Upload settings|"
                          r"Remote management) =", line)
            if m:
                section = m.group(1)
                continue
            if section == "Sensors":
                s = SENSOR_LINE.match(line)
                if not s:
                    raise RuntimeError("Cannot parse sensor line: " + line)
                config["sensors"].append({"name": s.group(1), "max": float(s.group(2)),
                                          "frequencies": [float(f.replace("Hz", "").strip())
                                                          for f in s.group(3).split(",")]})
            elif section in ("Device info", "Sampling parameters"):
                key, _, value = line.partition(":")
                config["info" if section == "Device info" else "sampling"][key.strip().lower()] = value.strip()
        return config

    def set_sample_settings(self, label: str, interval: float, length: int, hmac_key: str) -> None:
        # JavaScript's `${interval}`: 16, not 16.0.
        text = repr(interval) if interval != int(interval) else str(int(interval))
        reply = self.exec_command(f"AT+SAMPLESETTINGS={label},{text},{length},{hmac_key}")
        if "OK" not in reply:
            raise RuntimeError("Failed to set sample settings: " + reply)

    def start_sampling(self, sensor: str, length_ms: int) -> bytes:
        """The daemon's sequence without a network: AT+SAMPLESTART, then AT+READBUFFER of the
        buffer it names; the signed CBOR file."""
        res = self.exec_command("AT+SAMPLESTART=" + sensor, timeout=length_ms * 10 / 1000)
        if "ERR:" in res:
            raise RuntimeError(next(x for x in res.split("\n") if "ERR:" in x).strip())
        if not any("File name:" in x for x in res.split("\n")):
            raise RuntimeError("Could not find file name line in sample response " + res)
        assert "Sampling..." in res and "Not uploading file" in res and "Used buffer" in res, res
        m = re.search(r"from=(\d+).*?to=(\d+).*?", res)
        if not m:
            raise RuntimeError("Device used buffer, but could not parse buffer info " + res)
        data = self.exec_command(f"AT+READBUFFER={m.group(1)},{m.group(2)}", timeout=length_ms * 10 / 1000)
        return base64.b64decode(data)

    def start_inference(self, mode: str) -> None:
        command = "AT+RUNIMPULSE" + {"normal": "", "debug": "DEBUG", "continuous": "CONT"}[mode]
        if mode == "debug":
            command += "=n"  # shouldUseMaxBaudrate: the device's baud rate is the one it has
        self._paced(command + "\r")

    def read_results(self, count: int, timeout: float) -> str:
        """run-impulse prints the device's output as it comes; here: until ``count`` results."""
        text = b""
        deadline = time.monotonic() + timeout
        while text.count(b"#Classification predictions:") < count or not text.endswith(b"\n"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} results not within {timeout} s; got {text[-300:]!r}")
            text += self.ser.read(max(1, self.ser.in_waiting))
        return text.decode("ascii", "replace")

    def stop_inference(self) -> None:
        self.ser.write(b"b\r")
        self.wait_for(b"Inferencing stopped by user", 5.0)
        self.wait_for(PROMPT, 5.0)
        time.sleep(0.3)  # the CR behind the 'b' earns one more prompt: let it pass
        self.ser.reset_input_buffer()
        self.buf = b""
