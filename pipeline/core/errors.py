"""The error types of the whole project (pipeline and firmware_bridge alike).

The CLI prints an error as one line (``error: <message>``, then ``hint: <hint>``) and exits
with ``exit_code``: 2 for bad input or usage, 1 for a failed check (a leakage error, an
accuracy drop too big).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Bad input or usage: names the file or field and what was expected."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class GateFailed(PipelineError):
    """A check the pipeline enforces did not pass (leakage, accuracy drop, budget)."""

    exit_code = 1


class BridgeError(PipelineError):
    """Bad input or usage at the device: names the port, file or field and what was expected."""


class CheckFailed(BridgeError, GateFailed):
    """A check on the device did not pass (the model does not fit the board's RAM)."""


class ProtocolParseError(BridgeError):
    """Text from a device that is not what the Edge Impulse AT protocol says it should be."""
