"""Serial port discovery: list ports with a board guess from the USB VID:PID table."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.core.boards import board_for_usb
from pipeline.core.errors import BridgeError

# Names under which boards show up when their VID:PID is unknown (Linux, macOS).
BOARD_NAME_RE = re.compile(r"(ttyACM\d+|ttyUSB\d+|cu\.usbmodem|cu\.usbserial|cu\.SLAB_USBtoUART)")


@dataclass(frozen=True)
class PortInfo:
    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    board: str | None
    """Board name from pipeline.core.boards when the VID:PID is known, else None."""
    board_title: str | None

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04X}:{self.pid:04X}" if self.vid is not None and self.pid is not None else ""


def list_ports() -> list[PortInfo]:
    """Every serial port of this machine, with a board guess from its USB VID:PID."""
    # lazy: pyserial only when ports are listed
    from serial.tools import list_ports as serial_list_ports

    ports = []
    for p in sorted(serial_list_ports.comports(), key=lambda p: p.device):
        board = board_for_usb(p.vid, p.pid)
        ports.append(PortInfo(p.device, p.description or "", p.vid, p.pid, p.serial_number,
                              board.name if board else None, board.title if board else None))
    return ports


def detect_port(ports: list[PortInfo] | None = None) -> str:
    """The one port a board is likely on: a known VID:PID first, else a ttyACM/ttyUSB name."""
    ports = list_ports() if ports is None else ports
    known = [p for p in ports if p.board]
    candidates = known or [p for p in ports if BOARD_NAME_RE.search(p.device)]
    if len(candidates) == 1:
        return candidates[0].device
    if not candidates:
        raise BridgeError("no board found on any serial port",
                          hint="plug the board in, or give its port (or `tinyml emulate` for a virtual one)")
    raise BridgeError(f"several ports could be the board: {', '.join(p.device for p in candidates)}",
                      hint="give the port explicitly")


def format_ports(ports: list[PortInfo]) -> str:
    """A plain table: port, USB id, board guess, description."""
    if not ports:
        return "no serial ports found"
    rows = [("PORT", "USB ID", "BOARD", "DESCRIPTION")]
    rows += [(p.device, p.usb_id, p.board_title or "", p.description) for p in ports]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows)
