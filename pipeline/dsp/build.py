"""Build the DSP's C99 sources into a host shared library, cached by content hash.

The flags are the ones that make x86-64 and the Cortex-M4 agree bit for bit: C99, -O2 and
``-ffp-contract=off`` (no fused multiply-add where the source has a multiply and an add).
The library goes to ``$TINYML_CACHE`` (default ``~/.cache/tinyml-pipeline``) as
``dsp/libtm_dsp-<sha256 of compiler, flags and sources>.so``: built once per change of
source, compiler or flags, written atomically (a half-written library is never loaded).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.core.errors import PipelineError

# The C tree lives with the firmware (the device builds the same files); a path, not an import.
DSP_DIR = Path(__file__).resolve().parents[2] / "firmware_bridge" / "firmware" / "dsp"
SOURCES = ("tm_dsp.c",)
HEADERS = ("tm_dsp.h",)
HOST_FLAGS = ("-std=c99", "-O2", "-fPIC", "-shared", "-ffp-contract=off")
LIBS = ("-lm",)


def cache_dir() -> Path:
    return Path(os.environ.get("TINYML_CACHE") or Path.home() / ".cache" / "tinyml-pipeline") / "dsp"


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise PipelineError("no C compiler (cc) found: the DSP blocks are C, built on first use",
                            hint="install one (Debian: apt-get install gcc), or set [dsp] block = \"raw\"")
    return cc


def _identity(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return (out.stdout.splitlines() or ["unknown"])[0]


def source_hash(cc: str) -> str:
    h = hashlib.sha256()
    h.update("\0".join([_identity(cc), *HOST_FLAGS, *LIBS]).encode())
    for name in (*HEADERS, *SOURCES):
        h.update(name.encode() + b"\0" + (DSP_DIR / name).read_bytes() + b"\0")
    return h.hexdigest()


def build_library() -> Path:
    """The shared library of the current sources: the cached one, else built now."""
    cc = compiler()
    lib = cache_dir() / f"libtm_dsp-{source_hash(cc)[:16]}.so"
    if lib.is_file():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=lib.parent) as tmp:
        out = Path(tmp) / lib.name
        cmd = [cc, *HOST_FLAGS, "-I", str(DSP_DIR), *(str(DSP_DIR / s) for s in SOURCES), "-o", str(out), *LIBS]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
            raise PipelineError(f"building the DSP library failed (exit {proc.returncode}): {first}",
                                hint="the command: " + " ".join(cmd))
        os.replace(out, lib)
    return lib
