"""The one error type of the firmware_bridge package.

A `BridgeError` is a `pipeline.errors.PipelineError` (the CLI prints either as one line,
``error: <message>`` then ``hint: <hint>``), raised for what goes wrong at the device: exit 2
for bad input or usage (a wrong port, a file that is not a model, a device that is not an
Edge Impulse device), 1 for a failed check (`CheckFailed`: a model that does not fit).
"""

from __future__ import annotations

from pipeline.errors import GateFailed, PipelineError


class BridgeError(PipelineError):
    """Bad input or usage: names the port, file or field and what was expected."""


class CheckFailed(BridgeError, GateFailed):
    """A check on the device did not pass (the model does not fit the board's RAM)."""


class ProtocolParseError(BridgeError):
    """Text from a device that is not what the Edge Impulse AT protocol says it should be."""
