"""The one error type of the pipeline package.

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
