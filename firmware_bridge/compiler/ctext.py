"""C literals for the generated source: const arrays and const structs of integers."""

from __future__ import annotations

import numpy as np


def c_array(ctype: str, name: str, values, per_line: int = 16) -> str:
    """``static const <ctype> name[n] = {...};`` with ``per_line`` values a line."""
    vals = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    if not vals:
        vals = ["0"]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(vals)}] = {{\n    {body}}};\n"


def c_int(v: int) -> str:
    # INT32_MIN has no literal; write it as an expression.
    return "(-2147483647 - 1)" if int(v) == -(1 << 31) else str(int(v))


def c_struct(ctype: str, name: str, fields: dict) -> str:
    """``static const <ctype> name = {.field = value, ...};`` (a list is an array field)."""
    body = ", ".join(f".{k} = {_value(v)}" for k, v in fields.items())
    return f"static const {ctype} {name} = {{{body}}};\n"


def _value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(c_int(x) for x in v) + "}"
    return c_int(v)
