"""Everything that talks to a device: the Edge Impulse AT protocol, the host client, port
discovery, the serial monitor and capture; and the targets that build and boot the firmware
(the host board, QEMU, the Arduino sketch). No Python module implements a device command: the
firmware's C++ core does, on every target.

Reads only artifacts (the .tflite, the reports), never training code. Submodules are
imported on first use, so ``tinyml ports`` and ``tinyml monitor`` start fast.
"""

from __future__ import annotations

from pipeline.core.errors import BridgeError, CheckFailed, ProtocolParseError

__all__ = ["BridgeError", "CheckFailed", "ProtocolParseError", "Device", "Classification",
           "list_ports", "monitor"]

_LAZY = {
    "Device": "firmware_bridge.host.client",
    "Classification": "firmware_bridge.host.client",
    "list_ports": "firmware_bridge.host.ports",
    "monitor": "firmware_bridge.host.monitor",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
