"""Edge Impulse's AT server in Python, as the C++ core's (firmware/core/at_server.cpp) runs
on every board: a line discipline and a dispatcher over a table of ``Command`` entries; it
knows nothing about any one command. The virtual device serves its commands through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from firmware_bridge.host.protocol import (
    AT_VERSION,
    BACKSPACES,
    LINE_TOO_LONG,
    MAX_ARGS,
    MAX_LINE_LENGTH,
    PROMPT,
)


class Terminal(Protocol):
    """What a command handler talks to: the device's end of the serial link."""

    def write(self, data: str | bytes) -> None: ...

    def read_byte(self, timeout: float | None) -> int | None: ...


# A handler returns False to suppress the prompt (PROTOCOL.md: TIMEOUT, Too few arguments).
Handler = Callable[..., "bool | None"]


@dataclass(frozen=True)
class Command:
    """One entry of the AT command table: AT+<name>, AT+<name>?, AT+<name>=<write_args>."""

    name: str
    help: str
    run: Handler | None = None
    read: Handler | None = None
    write: Handler | None = None
    write_args: str = ""


HELP_HEADER = (
    "AT Server\n"
    f"Command set version: {AT_VERSION}\n"
    "Arguments in square brackets are optional, eg.:\n"
    "AT+CMD=arg1,[arg2]\n"
    "\n"
)


class ATServer:
    """Line discipline and dispatch of Edge Impulse's AT server, for one serial session."""

    def __init__(self, commands: Iterable[Command]):
        help_cmd = Command("HELP", "Lists all commands", run=self._print_help)
        self.commands = [help_cmd, *commands]
        self._by_name = {c.name.upper(): c for c in self.commands}
        self._line = bytearray()
        self._overflow = False

    @property
    def line(self) -> str:
        """The line received so far (at most MAX_LINE_LENGTH characters)."""
        return self._line.decode("ascii")

    def help_text(self) -> str:
        out = [HELP_HEADER]
        for c in self.commands:
            if c.run:
                out.append(f"AT+{c.name}\n")
            if c.read:
                out.append(f"AT+{c.name}?\n")
            if c.write:
                out.append(f"AT+{c.name}={c.write_args}\n")
            out.append(f"\t{c.help}\n\n")
        return "".join(out)

    def _print_help(self, term: Terminal) -> None:
        term.write(self.help_text())

    def serve(self, term: Terminal) -> None:
        """Serve until the terminal raises (it does when the device stops)."""
        while True:
            byte = term.read_byte(None)
            if byte is not None:
                self.feed(term, byte)

    def feed(self, term: Terminal, byte: int) -> None:
        if byte == 0x0D:
            line, overflow = self.line, self._overflow
            self._line, self._overflow = bytearray(), False
            term.write("\r\n")
            if overflow:
                term.write(LINE_TOO_LONG + PROMPT)
            elif self.execute(term, line):
                term.write(PROMPT)
        elif byte in BACKSPACES:
            # Edge Impulse's server redraws only when there was a character to remove.
            if self._line and not self._overflow:
                del self._line[-1]
                column = len(PROMPT) + len(self._line) + 1
                term.write(f"\r\x1b[K{PROMPT}{self.line}\x1b[{column}G")
        elif 0x20 <= byte < 0x7F:
            if len(self._line) < MAX_LINE_LENGTH:
                self._line.append(byte)
                term.write(bytes([byte]))
            else:
                self._overflow = True
        # LF and every other control byte are ignored (ESP32 ports turn LF into CR).

    def execute(self, term: Terminal, line: str) -> bool:
        """Run one line; True when the prompt should follow."""
        if not line.startswith("AT+"):
            term.write(f"Not a valid AT command ({line})\n")
            return True
        body = line[3:]
        args: list[str] = []
        if body.endswith("?"):
            name, form = body[:-1], "read"
        elif "=" in body:
            name, rest = body.split("=", 1)
            form, args = "write", rest.split(",")[:MAX_ARGS]
        else:
            name, form = body, "run"
        command = self._by_name.get(name.upper())
        if command is None:
            term.write(f"Command not found! (AT+{name})\n")
            return True
        handler = getattr(command, form)
        if handler is None:
            term.write(f"No handler for command! ({line})\n")
            return True
        result = handler(term, args) if form == "write" else handler(term)
        return result is not False

