"""The C export: what model_data.cc and model_settings.h say is exactly what was meant.

Property tests round-trip the writers through the parsers; a compiler test (when g++ is
there) checks that a real C++ compiler reads the same bytes, floats and labels back.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.boards import BOARDS
from pipeline.core.errors import PipelineError
from pipeline.tflite.export import (
    ModelSettings,
    model_data_cc,
    model_data_h,
    model_settings_h,
    parse_model_data_cc,
    parse_model_settings_h,
)
from pipeline.tflite.flatbuffer import TFLM_OPS

OP_NAMES = sorted(m[3:] for m in TFLM_OPS.values())


def _settings(**over) -> ModelSettings:
    base = dict(
        labels=["idle", "wave", "circle", "updown"], input_shape=[1, 125, 3],
        input_scale=0.0855112299323082, input_zero_point=-24, output_scale=0.00390625,
        output_zero_point=-128, arena_bytes=6592, macs=13120,
        ops=["Sub", "Mul", "ExpandDims", "Conv2D", "Reshape", "Softmax"],
        sha256="ab" * 32, board="nano33ble", sample_rate_hz=62.5,
    )
    base.update(over)
    return ModelSettings(**base)


def test_model_data_round_trips_the_real_model(tiny_int8):
    path, data, _ = tiny_int8
    text = model_data_cc(data, "int8.tflite")
    assert "alignas(16) const unsigned char g_model_data[]" in text
    assert f"const unsigned int g_model_data_len = {len(data)};" in text
    assert parse_model_data_cc(text) == path.read_bytes()
    assert "extern const unsigned char g_model_data[];" in model_data_h()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_model_data_round_trips_any_bytes(data):
    assert parse_model_data_cc(model_data_cc(data)) == data


def test_model_data_parser_rejects_a_length_that_does_not_match():
    text = model_data_cc(bytes(range(40)))
    with pytest.raises(PipelineError, match="g_model_data_len = 41 but g_model_data holds 40 bytes"):
        parse_model_data_cc(text.replace("g_model_data_len = 40", "g_model_data_len = 41"))
    with pytest.raises(PipelineError, match="alignas"):
        parse_model_data_cc(text.replace("alignas(16) ", ""))


labels_st = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6)
float32_st = st.floats(min_value=2.0**-30, max_value=2.0**14, width=32)


@settings(max_examples=80, deadline=None)
@given(
    labels=labels_st,
    shape=st.lists(st.integers(1, 300), min_size=1, max_size=3),
    in_scale=float32_st, out_scale=float32_st,
    in_zp=st.integers(-128, 127), out_zp=st.integers(-128, 127),
    arena=st.integers(16, 10**7), macs=st.integers(0, 10**12),
    ops=st.lists(st.sampled_from(OP_NAMES), unique=True, max_size=12),
    sha=st.text("0123456789abcdef", min_size=64, max_size=64),
    board=st.sampled_from(sorted(BOARDS)),
    rate=st.one_of(st.just(0.0), st.floats(0.5, 2.0**17, width=32)),
)
def test_model_settings_round_trip(labels, shape, in_scale, out_scale, in_zp, out_zp, arena,
                                   macs, ops, sha, board, rate):
    s = _settings(labels=labels, input_shape=[1, *shape], input_scale=in_scale, output_scale=out_scale,
                  input_zero_point=in_zp, output_zero_point=out_zp, arena_bytes=arena, macs=macs,
                  ops=ops, sha256=sha, board=board, sample_rate_hz=rate)
    got = parse_model_settings_h(model_settings_h(s))
    assert got["labels"] == labels
    assert got["input_shape"] == [1, *shape]
    assert got["input_size"] == int(np.prod(shape))
    # Floats come back as the very same float32 values.
    assert np.float32(got["input_scale"]) == np.float32(in_scale)
    assert np.float32(got["output_scale"]) == np.float32(out_scale)
    assert np.float32(got["sample_rate_hz"]) == np.float32(rate)
    assert (got["input_zero_point"], got["output_zero_point"]) == (in_zp, out_zp)
    assert (got["arena_bytes"], got["macs"], got["ops"]) == (arena, macs, ops)
    assert (got["sha256"], got["board"]) == (sha, board)


def test_model_settings_names_the_contract_constants():
    text = model_settings_h(_settings())
    for name in ("constexpr int kNumClasses = 4;", "static const char* const kCategoryLabels[kNumClasses]",
                 "constexpr int kInputDims = 3;", "constexpr int kInputShape[] = {1, 125, 3};",
                 "constexpr int kInputSize = 375;", "constexpr float kInputScale = ",
                 "constexpr int kInputZeroPoint = -24;", "constexpr float kOutputScale = 0.00390625f;",
                 "constexpr int kOutputZeroPoint = -128;", "constexpr int kTensorArenaSize = 6592;",
                 "constexpr long kModelMacs = 13120L;", "constexpr float kSampleRateHz = 62.5f;",
                 "constexpr int kNumOps = 6;",
                 "#define TINYML_FOR_EACH_OP(OP) OP(Sub) OP(Mul) OP(ExpandDims) OP(Conv2D) OP(Reshape) OP(Softmax)",
                 'static const char kModelSha256[] = "' + "ab" * 32 + '";',
                 'static const char kBoard[] = "nano33ble";'):
        assert name in text


def test_model_settings_parser_rejects_inconsistent_counts():
    text = model_settings_h(_settings())
    with pytest.raises(PipelineError, match="kNumClasses = 5 but kCategoryLabels has 4"):
        parse_model_settings_h(text.replace("kNumClasses = 4", "kNumClasses = 5"))
    with pytest.raises(PipelineError, match="kNumOps"):
        parse_model_settings_h(text.replace("kNumOps = 6", "kNumOps = 7"))
    with pytest.raises(PipelineError, match="op names must be C identifiers"):
        model_settings_h(_settings(ops=["Conv2D", "bad name"]))


CHECK_CC = r"""
#include <cstdint>
#include <cstdio>
#include "model_data.h"
#include "model_settings.h"

int main() {
  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 3;
  std::FILE* f = std::fopen(OUT_BIN, "wb");
  std::fwrite(g_model_data, 1, g_model_data_len, f);
  std::fclose(f);
  std::printf("scales %.9g %.9g\n", kInputScale, kOutputScale);
  std::printf("zp %d %d arena %d macs %ld size %d dims %d rate %.9g\n", kInputZeroPoint,
              kOutputZeroPoint, kTensorArenaSize, kModelMacs, kInputSize, kInputDims, kSampleRateHz);
  for (int i = 0; i < kNumClasses; ++i) std::printf("label[%s]\n", kCategoryLabels[i]);
#define OP(name) std::printf("op %s\n", #name);
  TINYML_FOR_EACH_OP(OP)
#undef OP
  std::printf("board %s sha %s ops %d\n", kBoard, kModelSha256, kNumOps);
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler on this machine")
def test_a_cpp_compiler_reads_back_the_same_model_and_settings(tmp_path, tiny_int8):
    _, data, _ = tiny_int8
    labels = ['idle', 'say "hi"', "back\\slash", "tab\there", "what??=", "naïve"]
    s = _settings(labels=labels, input_scale=float(np.float32(0.1)), input_shape=[1, 32, 3])
    (tmp_path / "model_data.h").write_text(model_data_h())
    (tmp_path / "model_data.cc").write_text(model_data_cc(data))
    (tmp_path / "model_settings.h").write_text(model_settings_h(s))
    (tmp_path / "check.cc").write_text(CHECK_CC)
    exe = tmp_path / "check"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-Wno-unused-variable",
                    f'-DOUT_BIN="{tmp_path / "out.bin"}"', "-o", str(exe),
                    str(tmp_path / "check.cc"), str(tmp_path / "model_data.cc")],
                   check=True, capture_output=True, text=True, cwd=tmp_path)
    run = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    assert (tmp_path / "out.bin").read_bytes() == data
    in_scale, out_scale = (np.float32(v) for v in lines[0].split()[1:])
    assert in_scale == np.float32(0.1) and out_scale == np.float32(0.00390625)
    assert lines[1] == "zp -24 -128 arena 6592 macs 13120 size 96 dims 3 rate 62.5"
    assert [ln[6:-1] for ln in lines if ln.startswith("label[")] == labels
    assert [ln[3:] for ln in lines if ln.startswith("op ")] == s.ops
    assert lines[-1] == f"board nano33ble sha {'ab' * 32} ops 6"
