"""ctypes binding of the DSP library: ``Params`` mirrors ``tm_dsp_params`` field for field."""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.dsp.build import build_library

BLOCK_IDS = {"raw": 0, "spectral": 1, "mfe": 2, "mfcc": 3, "spectrogram": 4}
FILTER_IDS = {"none": 0, "low": 1, "high": 2}
GAIN_IDS = {"none": 0, "peak": 1}


class Params(ctypes.Structure):
    _fields_ = [
        ("block", ctypes.c_int32), ("rate_hz", ctypes.c_float), ("in_len", ctypes.c_int32),
        ("channels", ctypes.c_int32), ("scale_axes", ctypes.c_float), ("filter_type", ctypes.c_int32),
        ("filter_cutoff", ctypes.c_float), ("filter_order", ctypes.c_int32), ("fft_length", ctypes.c_int32),
        ("do_log", ctypes.c_int32), ("do_fft_overlap", ctypes.c_int32), ("frame_length", ctypes.c_float),
        ("frame_stride", ctypes.c_float), ("num_filters", ctypes.c_int32), ("low_frequency", ctypes.c_float),
        ("high_frequency", ctypes.c_float), ("noise_floor_db", ctypes.c_float), ("num_cepstral", ctypes.c_int32),
        ("pre_cof", ctypes.c_float), ("lifter", ctypes.c_int32), ("gain", ctypes.c_int32),
    ]

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name, _ in self._fields_}


# tm_dsp.h's error codes, as the [dsp] keys that cause them
ERRORS = {
    -1: "[dsp] block: unknown block",
    -2: "[dsp] fft_length: expected a power of two, at least 4",
    -3: "the window is shorter than one frame ([dsp] frame_length)",
    -4: "[dsp] num_filters: expected 2 to 128",
    -5: "[dsp] low_frequency / high_frequency / filter_cutoff: expected 0 <= low < high <= rate / 2 "
        "(cut-off between 0 and rate / 2)",
    -6: "[dsp] filter_order: expected an even number from 0 to 8",
    -7: "[dsp] num_cepstral: expected 1 to num_filters",
    -8: "[dsp] filter_cutoff masks every FFT bin",
    -9: "the window: expected at least one step, one channel and a positive rate",
}

F32P = ctypes.POINTER(ctypes.c_float)


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build_library()))
    P = ctypes.POINTER(Params)
    I32P = ctypes.POINTER(ctypes.c_int32)
    for name, args, res in [
        ("tm_dsp_shape", [P, I32P, I32P], ctypes.c_int),
        ("tm_dsp_scratch_floats", [P], ctypes.c_int32),
        ("tm_dsp_init", [P, F32P], ctypes.c_int),
        ("tm_dsp_run", [P, F32P, F32P, F32P], ctypes.c_int),
        ("tm_dsp_rfft", [F32P, ctypes.c_int32, F32P, F32P, F32P], None),
        ("tm_dsp_twiddles", [ctypes.c_int32, F32P], None),
        ("tm_dsp_logf", [ctypes.c_float], ctypes.c_float),
    ]:
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    for name in ("tm_dsp_log", "tm_dsp_exp", "tm_dsp_sin", "tm_dsp_cos"):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = [ctypes.c_double], ctypes.c_double
    return lib


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(F32P)


def check(code: int, where: str = "") -> None:
    if code != 0:
        raise PipelineError(f"{where}{ERRORS.get(code, f'DSP error {code}')}")


def shape(p: Params) -> tuple[int, int]:
    rows, cols = ctypes.c_int32(), ctypes.c_int32()
    check(library().tm_dsp_shape(ctypes.byref(p), ctypes.byref(rows), ctypes.byref(cols)))
    return rows.value, cols.value


def run(p: Params, X: np.ndarray) -> np.ndarray:
    """Features of every window of X (n, in_len, channels) float32: (n, rows, cols) float32."""
    lib = library()
    rows, cols = shape(p)
    scratch = np.zeros(max(1, lib.tm_dsp_scratch_floats(ctypes.byref(p))), np.float32)
    check(lib.tm_dsp_init(ctypes.byref(p), _ptr(scratch)))
    X = np.ascontiguousarray(X, dtype=np.float32)
    out = np.zeros((X.shape[0], rows, cols), np.float32)
    for i in range(X.shape[0]):
        check(lib.tm_dsp_run(ctypes.byref(p), _ptr(X[i]), _ptr(out[i]), _ptr(scratch)))
    return out


def rfft(x: np.ndarray) -> np.ndarray:
    """The library's real FFT of x (length a power of two), as complex64 of n/2 + 1 bins."""
    lib = library()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.size
    tw, work, out = np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n + 2, np.float32)
    lib.tm_dsp_twiddles(n, _ptr(tw))
    lib.tm_dsp_rfft(_ptr(x), n, _ptr(tw), _ptr(work), _ptr(out))
    return out[0::2] + 1j * out[1::2]
