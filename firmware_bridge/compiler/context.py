"""What each op's emit function writes into (``Emitter``): declarations, the calls of
``tinyml_model_run``, the kernel sources needed, and where each tensor lives. Its own
module so that the op table (ops.py) and the model text (emitter.py) both use it, and
neither imports the other back."""

from __future__ import annotations

from firmware_bridge.compiler.ctext import c_array
from firmware_bridge.compiler.planner import Plan
from firmware_bridge.compiler.reader import CompileError, COp, CTensor


class Emitter:
    """What the op emitters write into: declarations (constants, parameter structs), the
    calls in ``tinyml_model_run``, the kernel sources needed; and where each tensor is."""

    def __init__(self, tensors: list[CTensor], plan: Plan):
        self.tensors = tensors
        self.plan = plan
        self.decls: list[str] = []
        self.calls: list[str] = []
        self.kernels: set[str] = set()
        self.consts: dict[int, str] = {}

    def ptr(self, index: int, writable: bool = False) -> str:
        """The C expression of a tensor's data (``writable``: the op writes it)."""
        where = self.plan.location[index]
        if where == "const":
            if writable:
                raise CompileError("internal: an op would write into a constant")
            return self.const(index)
        return f"(tm_arena + {where})"

    def const(self, index: int) -> str:
        """The name of a constant tensor's array, declared at its first use."""
        if index not in self.consts:
            t = self.tensors[index]
            ctype = {"int8": "int8_t", "int32": "int32_t", "int16": "int16_t"}.get(t.dtype)
            if ctype is None:
                raise CompileError(f"constant {t.name!r} is {t.dtype}; the kernels take int8/int32")
            name = f"tensor{index}"
            self.decls.append(f"/* {t.name} {list(t.shape)} */\n" + c_array(ctype, name, t.data))
            self.consts[index] = name
        return self.consts[index]

    def decl(self, text: str) -> None:
        self.decls.append(text)

    def call(self, op: COp, text: str) -> None:
        """The op's kernel call, under a comment naming the op and its layer."""
        where = f"from {op.layer}" if op.layer else ""
        in_place = " (in place)" if op.index in self.plan.in_place else ""
        self.calls.append(f"  /* op {op.index} {op.name} {where}{in_place} */")
        self.calls.append(f"  {text}")
