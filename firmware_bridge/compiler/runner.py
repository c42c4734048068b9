"""The compiled model built with the host's C compiler, for the byte-identity tests and the
bench: windows in on stdin, outputs out on stdout. Built with -DTINYML_MODEL_DEBUG it also
writes each op's output (op index, byte count, bytes) before the model's output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from firmware_bridge.compiler.reader import CompileError

RUNNER_MAIN = r"""
#include <stdio.h>
#include <stdint.h>
#include "model_compiled.h"

#ifdef TINYML_MODEL_DEBUG
void tinyml_model_debug(int op, const int8_t *data, int bytes) {
  int32_t head[2];
  head[0] = op;
  head[1] = bytes;
  fwrite(head, sizeof head, 1, stdout);
  fwrite(data, 1, (size_t)bytes, stdout);
}
#endif

int main(void) {
  static int8_t in[TINYML_MODEL_INPUT_BYTES], out[TINYML_MODEL_OUTPUT_BYTES];
  while (fread(in, 1, sizeof in, stdin) == sizeof in) {
#ifdef TINYML_MODEL_DEBUG
    int32_t head[2] = {-1, TINYML_MODEL_OUTPUT_BYTES};
#endif
    if (tinyml_model_invoke(in, out) != 0) return 3;
#ifdef TINYML_MODEL_DEBUG
    fwrite(head, sizeof head, 1, stdout);
#endif
    fwrite(out, 1, sizeof out, stdout);
  }
  return 0;
}
"""

CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")


def build_runner(compiled_dir: str | os.PathLike, exe: str | os.PathLike, debug: bool = False,
                 cc: str = "cc") -> Path:
    """Build the compiled model with a host main (stdin -> stdout); the executable's path."""
    compiled_dir, exe = Path(compiled_dir), Path(exe)
    main_c = exe.with_suffix(".main.c")
    main_c.write_text(RUNNER_MAIN)
    sources = sorted(str(p) for p in compiled_dir.glob("*.c"))
    cmd = [cc, *CFLAGS, *(["-DTINYML_MODEL_DEBUG"] if debug else []), "-I", str(compiled_dir),
           *sources, str(main_c), "-o", str(exe), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"{cc} could not build {compiled_dir}: {proc.stderr.strip()[-800:]}")
    return exe


def run_runner(exe: str | os.PathLike, x_q: np.ndarray, output_bytes: int) -> np.ndarray:
    """Outputs (n, output_bytes) int8 of the built model for int8 inputs (n, ...)."""
    x_q = np.ascontiguousarray(x_q, dtype=np.int8)
    proc = subprocess.run([str(exe)], input=x_q.tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise CompileError(f"{exe} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}")
    out = np.frombuffer(proc.stdout, dtype=np.int8)
    return out.reshape(len(x_q), output_bytes)


def run_runner_debug(exe: str | os.PathLike, x_q: np.ndarray) -> dict[int, np.ndarray]:
    """Every op's output (op index -> int8 bytes) for one input, from a debug build; the
    model's output under key -1."""
    proc = subprocess.run([str(exe)], input=np.ascontiguousarray(x_q, dtype=np.int8).tobytes(),
                          capture_output=True)
    if proc.returncode != 0:
        raise CompileError(f"{exe} exited {proc.returncode}")
    raw, pos, dumps = proc.stdout, 0, {}
    while pos < len(raw):
        op, n = np.frombuffer(raw[pos:pos + 8], dtype=np.int32)
        pos += 8
        dumps[int(op)] = np.frombuffer(raw[pos:pos + int(n)], dtype=np.int8).copy()
        pos += int(n)
    return dumps
