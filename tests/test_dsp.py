"""The C99 DSP library against slow numpy/scipy oracles (the oracles live here only, never in
the pipeline), its errors, its cache, and the [dsp] hook on a split's windows."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import signal as sps
from scipy.fftpack import dct
from scipy.stats import kurtosis, skew

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.dsp import binding, blocks, build


def dsp_cfg(**kw):
    return dataclasses.replace(load_config().dsp, **kw)


def speech_like(n=4000, rate=8000, seed=0):
    """A voiced-like int16-range signal: harmonics with a moving pitch, noise, silence at the ends."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 3 * t)
    ph = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * ph) / k for k in range(1, 8)) * np.hanning(n) * 9000 + rng.normal(0, 50, n)
    return np.round(x).astype(np.float32)[:, None]


# ----------------------------------------------------------------------------- oracles


def oracle_power(frames, nfft):
    return np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft


def oracle_frames(x, rate, frame_length, frame_stride):
    fl, fs = int(rate * frame_length + 0.5), int(rate * frame_stride + 0.5)
    n = 1 + (len(x) - fl) // fs
    return np.stack([x[i * fs:i * fs + fl] for i in range(n)])


def oracle_mel(power, rate, nfft, nf, low, high):
    """speechpy's filterbanks (edgeimpulse/processing-blocks third_party/speechpy/feature.py)."""
    high = high or rate / 2
    coeff = nfft // 2 + 1
    mel = np.linspace(1127 * np.log(1 + low / 700), 1127 * np.log(1 + high / 700), nf + 2)
    idx = np.floor((coeff + 1) * (700 * (np.exp(mel / 1127) - 1)) / rate).astype(int)
    fb = np.zeros((nf, coeff))
    for i in range(nf):
        lo, mid, hi = idx[i], idx[i + 1], idx[i + 2]
        for z in range(lo, hi + 1):
            w = 0.0
            if lo < z <= mid:
                w = (z - lo) / (mid - lo)
            if mid <= z < hi:
                w = (hi - z) / (hi - mid)
            fb[i, z] = w
    e = power @ fb.T
    return np.where(e == 0, np.finfo(float).eps, e), power.sum(1)


def oracle_pre(x, cof):
    return x - cof * np.roll(x, 1)


def oracle_db(v, floor):
    v = 10 * np.log10(np.clip(v, 1e-30, None))
    v = np.clip((v - floor) / (-floor + 12), 0, 1)
    return np.clip(np.around(v * 256), 0, 255) / 256


def oracle(block, x, rate, c):
    v = blocks.resolved(c, block)
    s = x[:, 0].astype(np.float64)
    if block == "spectral":
        s = s * v["scale_axes"]
        if v["filter_type"] != "none" and v["filter_order"]:
            sos = sps.butter(v["filter_order"], v["filter_cutoff"] * 2 / rate, btype=v["filter_type"], output="sos")
            s = sps.sosfilt(sos, s)
        s = s - s.mean()
        n = v["fft_length"]
        hold = np.zeros(n // 2 + 1)
        ix = 0
        while ix <= len(s):
            hold = np.maximum(hold, np.abs(np.fft.rfft(s[ix:ix + n], n)) ** 2 / n)
            ix += n - (n // 2 if v["do_fft_overlap"] else 0)
        freqs = np.fft.rfftfreq(n, 1 / rate)
        bins = []
        for i in range(1, len(freqs)):
            if v["filter_type"] == "low" and freqs[i] - freqs[1] / 2 > v["filter_cutoff"]:
                break
            if v["filter_type"] == "high" and freqs[i] + freqs[1] / 2 < v["filter_cutoff"]:
                continue
            bins.append(np.log10(hold[i] if hold[i] else 1e-10) if v["do_log"] else hold[i])
        return np.array([[np.sqrt(np.mean(s ** 2)), skew(s), kurtosis(s), *bins]])
    peak = np.abs(s).max()
    s = s * (0.5 / peak) if v["gain"] == "peak" and peak > 0 else s / 32768
    if block != "spectrogram":
        s = oracle_pre(s, v["pre_cof"])
    power = oracle_power(oracle_frames(s, rate, v["frame_length"], v["frame_stride"]), v["fft_length"])
    if block == "spectrogram":
        return oracle_db(power, v["noise_floor_db"])
    mel, energy = oracle_mel(power, rate, v["fft_length"], v["num_filters"], v["low_frequency"], v["high_frequency"])
    if block == "mfe":
        return oracle_db(mel, v["noise_floor_db"])
    cep = dct(np.log(mel), type=2, axis=-1, norm="ortho")[:, :v["num_cepstral"]]
    cep[:, 0] = np.log(np.where(energy == 0, np.finfo(float).eps, energy))
    if v["lifter"]:
        cep = cep * (1 + v["lifter"] / 2 * np.sin(np.pi * np.arange(v["num_cepstral"]) / v["lifter"]))
    return cep


# ----------------------------------------------------------------------------- tests


def test_elementary_functions_match_libm():
    lib = binding.library()
    for x in (1e-300, 1e-5, 0.3, 1.0, 1.5, 2.0, 700.0, 1e10):
        assert lib.tm_dsp_log(x) == pytest.approx(math.log(x), rel=1e-15, abs=1e-15)
    for x in (-700.0, -3.2, 0.0, 0.7, 5.5, 300.0):
        assert lib.tm_dsp_exp(x) == pytest.approx(math.exp(x), rel=1e-13)
    for x in np.linspace(-7, 7, 57):
        assert lib.tm_dsp_sin(x) == pytest.approx(math.sin(x), abs=1e-15)
        assert lib.tm_dsp_cos(x) == pytest.approx(math.cos(x), abs=1e-15)
    for x in (1e-40, 1e-30, 3e-8, 0.5, 1.0, 1.41, 1.42, 7.0, 3e8):
        assert lib.tm_dsp_logf(x) == pytest.approx(math.log(np.float32(x)), rel=3e-7, abs=3e-7)


@pytest.mark.parametrize("n", [4, 8, 16, 64, 256, 1024])
def test_real_fft_against_numpy(n):
    x = np.random.default_rng(n).normal(0, 1000, n).astype(np.float32)
    ref = np.fft.rfft(x.astype(np.float64))
    np.testing.assert_allclose(binding.rfft(x), ref, atol=2e-6 * np.abs(ref).max() * math.log2(n))


@pytest.mark.parametrize("block, kw", [
    ("mfe", {}),
    ("mfe", {"gain": "none"}),
    ("mfe", {"fft_length": 128, "num_filters": 40, "low_frequency": 0.0, "high_frequency": 3500.0}),
    ("mfcc", {}),
    ("mfcc", {"lifter": 22, "frame_stride": 0.01, "pre_cof": 0.0, "gain": "none"}),
    ("spectrogram", {}),
    ("spectrogram", {"gain": "none"}),
])
def test_audio_blocks_against_the_oracle(block, kw):
    c = dsp_cfg(**kw)
    x = speech_like()
    got = blocks.features(x[None], c, 8000.0, block)[0, ..., 0]  # (frames, values, 1): an image
    ref = oracle(block, x, 8000.0, c)
    assert got.shape == ref.shape
    if block == "mfcc":
        np.testing.assert_allclose(got, ref, atol=2e-3 * np.abs(ref).max())
    else:  # quantized to 1/256: a value on a step's edge may land one step off
        diff = np.abs(got - ref)
        assert diff.max() <= 1 / 256 + 1e-6 and np.mean(diff > 0) < 0.01


@pytest.mark.parametrize("kw", [
    {},
    {"filter_type": "low", "filter_cutoff": 8.0, "filter_order": 4, "fft_length": 64},
    {"filter_type": "high", "filter_cutoff": 5.0, "filter_order": 6, "do_log": False, "do_fft_overlap": False},
    {"filter_type": "low", "filter_cutoff": 10.0, "filter_order": 0, "scale_axes": 0.5},
])
def test_spectral_against_the_oracle(kw):
    c = dsp_cfg(**kw)
    rng = np.random.default_rng(3)
    t = np.arange(250) / 62.5
    x = np.stack([np.sin(2 * np.pi * 2 * t) * 3 + rng.normal(0, 0.3, t.size),
                  np.sign(np.sin(2 * np.pi * 7 * t)) + 9.8, rng.normal(0, 1, t.size)], 1).astype(np.float32)
    got = blocks.features(x[None], c, 62.5, "spectral")[0]
    per_axis = got.shape[1] // 3
    for ax in range(3):
        ref = oracle("spectral", x[:, ax:ax + 1], 62.5, c)[0]
        np.testing.assert_allclose(got[0, ax * per_axis:(ax + 1) * per_axis], ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("block", ["mfe", "mfcc", "spectrogram"])
def test_the_peak_gain_makes_the_features_independent_of_the_recording_level(block):
    x = speech_like(seed=5)
    quiet = x / 16  # 24 dB quieter (fsdd's quietest speaker against its loudest); a power of two: exact
    peak, none = dsp_cfg(gain="peak"), dsp_cfg(gain="none")
    a, b = (blocks.features(v[None], peak, 8000.0, block) for v in (x, quiet))
    assert a.tobytes() == b.tobytes()
    c, d = (blocks.features(v[None], none, 8000.0, block) for v in (x, quiet))
    if block == "mfcc":  # as recorded, the level moves the log energy c0 by log(256)
        assert abs(float(np.mean(c[..., 0, 0] - d[..., 0, 0])) - np.log(256.0)) < 0.05
    else:  # as recorded, the -52 dB floor zeroes more of the quiet recording
        assert float((d == 0).mean()) > float((c == 0).mean()) + 0.05
    silent = np.zeros_like(x)[None]  # no peak: the window as it is (all at the floor), no division by zero
    assert np.array_equal(blocks.features(silent, peak, 8000.0, block), blocks.features(silent, none, 8000.0, block))


def test_same_bits_every_call_and_raw_is_the_window():
    x = speech_like(seed=4)[None]
    c = dsp_cfg()
    a = blocks.features(x, c, 8000.0, "mfcc")
    b = blocks.features(np.concatenate([x, x]), c, 8000.0, "mfcc")
    assert a.tobytes() == b[1:].tobytes() and blocks.features(x, c, 8000.0, "raw") is x


@pytest.mark.parametrize("kw, block, message", [
    ({"fft_length": 100}, "mfe", "[dsp] fft_length: expected a power of two"),
    ({"frame_length": 1.0}, "mfcc", "shorter than one frame"),
    ({"num_cepstral": 40}, "mfcc", "[dsp] num_cepstral"),
    ({"high_frequency": 6000.0}, "mfe", "[dsp] low_frequency / high_frequency"),
    ({"filter_type": "low", "filter_cutoff": 40.0}, "spectral", "filter_cutoff"),
])
def test_bad_parameters_are_one_line_naming_the_key(kw, block, message):
    with pytest.raises(PipelineError) as err:
        blocks.features(speech_like(n=4000)[None], dsp_cfg(**kw), 8000.0 if block != "spectral" else 62.5, block)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_keys_are_checked():
    with pytest.raises(PipelineError, match="dsp"):
        load_config(overrides={"dsp.block": "wavelet"})
    with pytest.raises(PipelineError, match="noise_floor_db"):
        load_config(overrides={"dsp.noise_floor_db": 10.0})


def test_library_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYML_CACHE", str(tmp_path))
    lib = build.build_library()
    mtime = lib.stat().st_mtime_ns
    assert build.build_library() == lib and lib.stat().st_mtime_ns == mtime
    assert [p.name for p in lib.parent.iterdir()] == [lib.name]  # no temporary left behind


def test_featurize_replaces_every_split(tmp_path):
    from pipeline.data.splits import prepare
    from tests.test_wav import flat_folder

    root = flat_folder(tmp_path / "d", speakers=("a", "b", "c", "d", "e"), takes=4, n=2400)
    cfg = load_config(overrides={"data.dataset": str(root), "dsp.block": "mfe"})
    prepared = prepare(cfg, tmp_path / "run")
    feat = blocks.featurize(prepared, cfg)
    for name, w in feat.windows.items():
        assert w.X.shape[1:] == (1 + (prepared.windows[name].length - 160) // 80, 32, 1)
        np.testing.assert_array_equal(w.y, prepared.windows[name].y)
    assert blocks.featurize(prepared, load_config(overrides={"data.dataset": str(root), "dsp.block": "raw"})) is prepared


# ----------------------------------------------------------------------------- Cortex-M4 bits


def _check_windows(seed: int) -> np.ndarray:
    """tm_dsp_check.c's generator, in numpy: an LCG scaled by a ramp, in float32."""
    s, raw = 12345 + seed, np.empty(4000, np.float32)
    for i in range(4000):
        s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
        raw[i] = (s >> 16) - 32768
    ramp = (np.arange(4000) % 400).astype(np.float32)
    vals = raw * ramp / np.float32(400.0)  # float32 as the C: (value * ramp) / 400
    return vals


def _fnv1a(a: np.ndarray) -> str:
    h = 2166136261
    for byte in a.astype("<f4").tobytes():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return f"{h:08x}"


def test_features_are_bit_identical_on_the_cortex_m4(tmp_path):
    """The same C built for the emulated Cortex-M4 (QEMU mps2-an386, the firmware's CPU flags
    plus -ffp-contract=off) gives the host library's bits, every block, three windows each."""
    import shutil
    import subprocess

    from firmware_bridge.sources import BOARDS_DIR
    from firmware_bridge.targets.qemu import CPU_FLAGS

    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("arm-none-eabi-gcc or qemu-system-arm not installed")
    board, dsp = BOARDS_DIR / "mps2_an386", build.DSP_DIR
    elf = tmp_path / "check.elf"
    subprocess.run(["arm-none-eabi-gcc", *CPU_FLAGS, "-O2", "-std=c99", "-ffp-contract=off", "--specs=nano.specs",
                    "-nostartfiles", "-Wl,--gc-sections", f"-I{board}", f"-I{dsp}", f"-T{board / 'mps2_an386.ld'}",
                    str(dsp / "check" / "tm_dsp_check.c"), str(dsp / "tm_dsp.c"),
                    *(str(board / f) for f in ("startup.c", "syscalls.c", "cmsdk_uart.c", "systick.c")),
                    "-lm", "-lc", "-lgcc", "-o", str(elf)], check=True, capture_output=True)
    proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
                             "-serial", "stdio", "-kernel", str(elf)], stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            if line.strip() == "done":
                break
            lines.append(line.split())
    finally:
        proc.kill()
        proc.wait()
    device = {(int(b), int(s)): (int(n), h) for _, b, s, n, h in lines}
    names = {1: "spectral", 2: "mfe", 3: "mfcc", 4: "spectrogram"}
    assert len(device) == 12
    for (b, seed), (n, h) in device.items():
        kw = {"fft_length": 64 if b == 1 else 256, "filter_type": "low" if b == 1 else "none",
              "filter_cutoff": 1000.0, "filter_order": 4, "lifter": 22 if b == 3 else 0,
              "gain": "peak" if b == 2 else "none"}
        feats = blocks.features(_check_windows(seed)[None, :, None], dsp_cfg(**kw), 8000.0, names[b])
        assert feats.size == n and _fnv1a(feats.ravel()) == h, (names[b], seed)
