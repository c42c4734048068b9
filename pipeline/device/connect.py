"""Reaching the device: the virtual device booted from its flash image, the firmware booted in
QEMU, or a port; and what the device must say about its model before anything is scored.

Kept apart from the stage (``pipeline.device.stage``) so that ``tinyml monitor emu`` boots the
virtual device without importing the data and scoring side (scikit-learn among it).
"""

from __future__ import annotations

from pathlib import Path

from firmware_bridge.host.client import Device
from firmware_bridge.host.ports import detect_port
from firmware_bridge.targets import qemu
from firmware_bridge.targets.virtual_device import VirtualDevice
from pipeline.core.errors import GateFailed, PipelineError

FLASH_DIR = Path("device") / "flash"


def require(run: Path, name: str, stage: str) -> Path:
    """``run/name``, which the stage ``stage`` writes; missing, a PipelineError saying to run it."""
    path = run / name
    if not path.exists():
        raise PipelineError(f"{path}: not found", hint=f"run `tinyml {stage}` (make {stage}) first")
    return path


def build_qemu_image(run: Path, announce: bool = False, out=print):
    """RUN/device/qemu/fw.elf for QEMU's mps2-an386, rebuilt only when its inputs changed."""
    image = qemu.build_firmware(run)
    if announce or image.rebuilt:
        out(f"flash: {image.elf} ({'built' if image.rebuilt else 'up to date'}): flash {image.flash_bytes:,} B "
            f"(text + data), static RAM {image.static_ram_bytes:,} B (data + bss), for qemu-system-arm -M {qemu.MACHINE}")
    return image


def boot_virtual_device(cfg, run: Path):
    """The virtual device booted from RUN/device/flash, its sensor playing the test recordings."""
    flash_dir = run / FLASH_DIR
    sensor = flash_dir / "sensor.npz"
    device = VirtualDevice.from_flash_dir(
        flash_dir, chunk_size=cfg.device.chunk_size, baud=cfg.device.baud,
        throttle=cfg.device.throttle, sensor=sensor if sensor.exists() else None,
    )
    return device.start()


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
    port_type = "virtual" if info["virtual"] else (port.split("://", 1)[0] if "://" in port else "serial")
    return {"port_type": port_type, "device_id": client.config.device_id, "device_type": client.config.device_type}


class Connected:
    """A connected client: to the virtual device booted from the flash image, to the
    firmware booted in QEMU, or a port."""

    def __init__(self, cfg, run: Path, out=print):
        self.cfg, self.run, self.out, self.virtual, self.board, self.image = cfg, run, out, None, None, None

    def __enter__(self):
        target = self.cfg.device.port
        if target == "emu":
            require(self.run, str(FLASH_DIR / "model.tflite"), "flash")
            self.virtual = boot_virtual_device(self.cfg, self.run)
            port = self.virtual.port
        elif target == "qemu":
            self.image = build_qemu_image(self.run, out=self.out)
            self.board = qemu.QemuBoard(self.image.elf).start()
            port = self.board.port
        else:
            port = detect_port() if target == "auto" else target
        self.port = port
        try:
            self.client = Device(port, baud=self.cfg.device.baud, timeout=self.cfg.device.timeout_s)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.client, {"port": port, "virtual": self.virtual is not None,
                             **({"emulator": f"qemu-system-arm -M {self.board.command[2]} -icount shift=0"}
                                if self.board else {})}

    def reconnect(self):
        """A fresh client on the same port (after the device reset or stopped answering)."""
        self.client.close()
        self.client = Device(self.port, baud=self.cfg.device.baud, timeout=self.cfg.device.timeout_s)
        return self.client

    def __exit__(self, *exc):
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self.virtual is not None:
            self.virtual.stop()
        if self.board is not None:
            self.board.stop()
        return False
