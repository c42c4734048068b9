"""The one error type of the firmware_bridge package.

Mirrors pipeline/errors.py: the CLI prints an error as one line (``error: <message>``,
then ``hint: <hint>``) and exits with ``exit_code``: 2 for bad input or usage (a wrong
port, a file that is not a model, a device that is not an Edge Impulse device), 1 for a
failed check (a model that does not fit the board).
"""

from __future__ import annotations


class BridgeError(Exception):
    """Bad input or usage: names the port, file or field and what was expected."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class CheckFailed(BridgeError):
    """A check on the device did not pass (the model does not fit the board's RAM)."""

    exit_code = 1


class ProtocolParseError(BridgeError):
    """Text from a device that is not what the Edge Impulse AT protocol says it should be."""
