"""Reaching the device: the firmware built for this computer (the host board, ``emu``), the
firmware booted in QEMU (``qemu``), or a port; and what the device must say about its model
before anything is scored.

Kept apart from the stage (``pipeline.device.stage``) so that ``tinyml monitor emu`` boots the
host board without importing the data and scoring side (scikit-learn among it).
"""

from __future__ import annotations

from pathlib import Path

from firmware_bridge.host.client import Device
from firmware_bridge.host.ports import detect_port
from firmware_bridge.targets import host_board, qemu, sensor_file
from pipeline.core.errors import GateFailed, PipelineError

FLASH_DIR = Path("device") / "flash"


def require(run: Path, name: str, stage: str) -> Path:
    """``run/name``, which the stage ``stage`` writes; missing, a PipelineError saying to run it."""
    path = run / name
    if not path.exists():
        raise PipelineError(f"{path}: not found", hint=f"run `tinyml {stage}` (make {stage}) first")
    return path


def build_qemu_image(run: Path, announce: bool = False, out=print, board: str | None = None):
    """RUN/device/qemu/fw.elf for QEMU's mps2-an386, rebuilt only when its inputs changed;
    its Timing lines on the clock of ``board`` (default: the run's, pipeline/core/boards.py)."""
    image = qemu.build_firmware(run, board=board)
    if announce or image.rebuilt:
        out(f"flash: {image.elf} ({'built' if image.rebuilt else 'up to date'}): flash {image.flash_bytes:,} B "
            f"(text + data), static RAM {image.static_ram_bytes:,} B (data + bss), for qemu-system-arm -M {qemu.MACHINE}")
    return image


# The boards that run the compiled model and only it: the TFLM library is the Arduino sketch's.
COMPILED_ONLY = {"emu": "the host board", "qemu": "QEMU's mps2-an386"}


def check_engine(cfg) -> None:
    """``[device] engine = "tflm"`` on a board that runs the compiled engine: one line saying so."""
    target = cfg.device.port
    if cfg.device.engine != "compiled" and target in COMPILED_ONLY:
        raise PipelineError(
            f'[device] engine = "{cfg.device.engine}": {COMPILED_ONLY[target]} (--device {target}) runs the compiled '
            'engine only; the TFLM library is for the Arduino sketch on a real board',
            hint='set [device] engine = "compiled" (the default), or flash a board: --device auto or a port')


def build_host_image(cfg, run: Path, announce: bool = False, out=print):
    """The host board of ``run``, built with g++ only when its inputs changed."""
    image = host_board.build_host_board(run, chunk_size=cfg.device.chunk_size)
    if announce or image.rebuilt:
        out(f"flash: host board {image.exe} ("
            + (f"built in {image.build_seconds:.1f} s" if image.rebuilt else "up to date")
            + "): the firmware's C++ core and the compiled model, built with g++ for this computer")
    return image


def boot_host_board(cfg, run: Path, image=None, out=print):
    """The host board of ``run`` running, its sensor playing the test recordings
    (RUN/device/flash/sensor.npz, when the data have them)."""
    check_engine(cfg)
    image = image or build_host_image(cfg, run, out=out)
    sensor, name = sensor_file.run_sensor(run, out_dir=run / host_board.BUILD_DIR)
    board = host_board.HostBoard(image, sensor=sensor, timing=host_board.board_timing(run, cfg.quantize.board),
                                 sensor_name=name)
    return board.start()


def verify_model(client, want: str, labels: list[str] | None = None, input_size: int | None = None) -> dict:
    """The device must run exactly int8.tflite (SHA-256 ``want``), with the model's labels in
    its order and its input size: compare what the device reports, before any scoring."""
    info = client.model_info()
    if info is None:
        return {"sha256_verified": False, "note": "the device does not answer AT+MODELINFO? (a stock firmware?); "
                "its labels are checked, in order, on every reply"}
    if info.sha256 != want:
        raise GateFailed(
            f"the device runs model {info.sha256[:12]}, int8.tflite is {want[:12]}",
            hint="flash the device again (tinyml flash)",
        )
    if labels is not None and list(info.labels) != list(labels):
        raise GateFailed(
            f"the device's labels are {info.labels}, the model's are {list(labels)} (order included: "
            "a device scores by output position)",
            hint="flash the device again (tinyml flash) with this run's model_settings.h",
        )
    if input_size is not None and info.input_size != input_size:
        raise GateFailed(
            f"the device's model takes {info.input_size} values (input shape {list(info.input_shape)}), "
            f"the test windows have {input_size}",
            hint="flash the device again (tinyml flash)",
        )
    return {"sha256_verified": True, "sha256": want, "input_shape": list(info.input_shape),
            "labels": info.labels, "labels_verified": labels is not None,
            "input_size_verified": input_size is not None}


def device_identity(client, info: dict) -> dict:
    """What resumed results are keyed by, beside the model: the kind of port and the device."""
    port = str(info["port"])
    port_type = info.get("board") or (port.split("://", 1)[0] if "://" in port else "serial")
    return {"port_type": port_type, "device_id": client.config.device_id, "device_type": client.config.device_type}


class Connected:
    """A connected client: to the host board, to the firmware booted in QEMU, or a port.
    ``kind`` says which: "host", "qemu" or None (a port)."""

    def __init__(self, cfg, run: Path, out=print):
        self.cfg, self.run, self.out, self.board, self.image, self.kind = cfg, run, out, None, None, None

    def __enter__(self):
        target = self.cfg.device.port
        check_engine(self.cfg)
        if target == "emu":
            require(self.run, str(FLASH_DIR / "model.tflite"), "flash")
            self.image = build_host_image(self.cfg, self.run, out=self.out)
            self.board, self.kind = boot_host_board(self.cfg, self.run, self.image, out=self.out), "host"
            port = self.board.port
        elif target == "qemu":
            self.image = build_qemu_image(self.run, out=self.out, board=self.cfg.quantize.board)
            # The IMU plays the run's test recordings (RUN/device/flash/sensor.npz), as on the host board.
            recording, name = sensor_file.run_sensor(self.run, out_dir=self.run / qemu.BUILD_DIR,
                                                     max_bytes=qemu.SENSOR_MAX_BYTES, warn=self.out)
            self.board = qemu.QemuBoard(self.image.elf, sensor=recording, sensor_name=name).start()
            self.kind = "qemu"
            port = self.board.port
        else:
            port = detect_port() if target == "auto" else target
        self.port = port
        try:
            self.client = Device(port, baud=self.cfg.device.baud, timeout=self.cfg.device.timeout_s)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        info = {"port": port, "virtual": False, "board": self.kind}
        if self.kind == "qemu":
            info["emulator"] = f"qemu-system-arm -M {self.board.command[2]} -icount shift=0"
        elif self.kind == "host":
            info["host_board"] = {"exe": str(self.image.exe), "inputs_sha256": self.image.inputs_sha256,
                                  "built_by": "g++ from firmware/core, firmware/boards/host and RUN/firmware/compiled",
                                  "timing": self.board.timing}
        return self.client, info

    def reconnect(self):
        """A fresh client on the same port (after the device reset or stopped answering); a
        host board whose process died (kill -9, a crash) is booted again, on a new pty."""
        self.client.close()
        if self.kind == "host" and not self.board.running:
            self.out(f"eval: the host board exited ({'; '.join(self.board.output_tail()) or 'no message'}); "
                     "booting it again")
            self.board.stop()
            self.board = boot_host_board(self.cfg, self.run, self.image, out=self.out)
            self.port = self.board.port
        self.client = Device(self.port, baud=self.cfg.device.baud, timeout=self.cfg.device.timeout_s)
        return self.client

    def __exit__(self, *exc):
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self.board is not None:
            self.board.stop()
        return False
