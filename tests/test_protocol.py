"""The AT protocol module: parsers against recorded transcripts, and property-based tests."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.host import protocol, sampling
from pipeline.core.errors import ProtocolParseError

TRANSCRIPTS = Path(__file__).parent / "transcripts"
# Written out from PROTOCOL.md, not imported: the test checks the module against the spec.
SPEC_SENSOR_RE = re.compile(
    r"^Name\:\s?([^,]+),\s?Max sample length\:\s?([^,]+)s\s?,\s?Frequencies\:\s?\[(.*)\]\s?$"
)
LABELS = ("idle", "wave", "circle", "updown")


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / name).read_bytes()


# -- AT+CONFIG? -----------------------------------------------------------------------------


def test_config_of_a_stock_firmware_with_crlf_and_6_decimal_frequencies():
    cfg = protocol.parse_config(transcript("config_stock_crlf.txt"))
    assert cfg.device_type == "ARDUINO_NANO33BLE"
    assert cfg.device_id == "E5:4A:1B:7C:90:2F"
    assert cfg.at_version == "1.8.0"
    assert cfg.transfer_baudrate == 115200
    assert [s.name for s in cfg.sensors] == ["Built-in accelerometer", "Built-in microphone",
                                             "Environmental + Interactional"]
    assert cfg.sensors[0].frequencies_hz == (62.5, 100.0)
    assert cfg.sensors[0].max_sample_length_s == 600
    assert cfg.get("snapshot", "color depth") == "Grayscale"
    assert cfg.get("snapshot", "resolutions") == "[ ]"
    assert cfg.get("sampling parameters", "interval") == "16.00 ms."
    # Split at the first colon only: the URL keeps its own.
    assert cfg.get("remote management", "url") == "wss://remote-mgmt.edgeimpulse.com"
    assert cfg.get("wifi", "ssid") == ""
    assert cfg.errors == []


def test_config_without_device_info_is_a_parse_error():
    with pytest.raises(ProtocolParseError, match="Device info"):
        protocol.parse_config("hello\r\nworld\r\n")


def test_sensor_line_that_breaks_the_regex_is_a_parse_error():
    with pytest.raises(ProtocolParseError, match="sensor line"):
        protocol.parse_config("===== Device info =====\nID: 1\n===== Sensors ======\nName accelerometer\n")


@given(
    name=st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=","), min_size=1, max_size=20),
    length=st.integers(0, 100000),
    freqs=st.lists(st.floats(0.001, 100000, allow_nan=False), max_size=4),
    decimals=st.sampled_from([2, 6]),
)
@settings(deadline=None)
def test_sensor_lines_round_trip_and_match_the_spec_regex(name, length, freqs, decimals):
    line = (f"Name: {name}, Max sample length: {length}s, "
            f"Frequencies: [{', '.join(f'{f:.{decimals}f}Hz' for f in freqs)}]")
    assert SPEC_SENSOR_RE.match(line)
    sensor = protocol.parse_sensor_line(line)
    assert sensor.name == name
    assert sensor.max_sample_length_s == length
    assert sensor.frequencies_hz == tuple(float(f"{f:.{decimals}f}") for f in freqs)


# -- AT+RUNIMPULSE results, recorded ---------------------------------------------------------


def test_current_format_transcript():
    results = protocol.parse_results(transcript("runimpulse_current.txt"))
    assert [r.label for r in results] == ["wave", "wave", "circle"]
    assert all(r.format == "current" for r in results)
    assert list(results[0].predictions) == list(LABELS)
    assert results[0].predictions["wave"] == 0.95703
    assert results[2].timing == {"dsp_ms": 0.0, "classification_ms": 4.0, "anomaly_ms": 0.0}
    assert results[0].anomaly is None


def test_current_format_with_crlf_microseconds_and_postprocessing():
    results = protocol.parse_results(transcript("runimpulse_current_crlf_us.txt"))
    assert len(results) == 2
    first = results[0]
    assert first.timing == pytest.approx({"dsp_ms": 0.037, "classification_ms": 0.812,
                                          "anomaly_ms": 0.012, "postprocessing_ms": 0.041})
    assert first.predictions == {"idle": 0.996094, "wave": 0.0, "circle": 0.003906, "updown": 0.0}
    assert first.anomaly == -0.3125
    assert first.label == "idle"


def test_older_format_with_tabs_and_anomaly_score():
    results = protocol.parse_results(transcript("runimpulse_older.txt"))
    assert [r.label for r in results] == ["circle", "circle", "updown"]
    assert all(r.format == "older" for r in results)
    assert results[1].timing == {"dsp_ms": 1.0, "classification_ms": 5.0, "anomaly_ms": 1.0}
    assert results[0].anomaly == 0.12345
    assert "anomaly score" not in results[0].predictions


def test_object_detection_boxes():
    text = ("Timing: DSP 3 ms, inference 120 ms, anomaly 0 ms\r\n"
            "#Object detection bounding boxes:\r\n"
            "  cup (0.812500) [ x: 8, y: 16, width: 24, height: 24 ]\r\n"
            "  mug (0.546875) [ x: 40, y: 0, width: 16, height: 32 ]\r\n")
    (result,) = protocol.parse_results(text)
    assert [b.label for b in result.boxes] == ["cup", "mug"]
    assert result.boxes[0] == protocol.BoundingBox("cup", 0.8125, 8, 16, 24, 24)
    assert result.label == "cup"


# -- AT+RUNIMPULSESTATIC transcripts ---------------------------------------------------------


def test_static_transcript_success():
    t = protocol.parse_static_transcript(transcript("static_ok.txt"))
    assert t.chunk_size == 32
    assert t.acks == [6 * (k + 1) for k in range(16)]
    assert t.completed == 96 and t.result_code == 0 and t.ended and not t.timed_out
    assert t.ok
    assert t.result.predictions["wave"] == 0.957031
    assert t.result.timing["classification_ms"] == 0.144


def test_static_transcript_wrong_size():
    t = protocol.parse_static_transcript(transcript("static_wrong_size.txt"))
    assert t.expected_values == 96
    assert t.result_code == -1 and t.result is None and not t.ok
    assert t.errors[0] == "ERROR: The size of the input buffer is not correct."
    assert t.acks[-1] == 95


def test_static_transcript_timeout():
    t = protocol.parse_static_transcript(transcript("static_timeout.txt"))
    assert t.timed_out and t.ended and t.result_code is None
    assert t.chunk_size == 128 and t.acks == [24, 48]


def test_static_transcript_errors_without_prompt():
    t = protocol.parse_static_transcript("AT+RUNIMPULSESTATIC=n\r\nToo few arguments! Required: 2\r\n")
    assert t.errors == ["Too few arguments! Required: 2"]
    with pytest.raises(ProtocolParseError):
        protocol.parse_static_transcript("AT+RUNIMPULSESTATIC=n,96\r\nsomething else\r\n")


# -- renderers and parsers round-trip (hypothesis) --------------------------------------------

label_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12).filter(
    lambda s: s == s.strip() and not s.endswith(":")
)
labels_st = st.lists(label_text, min_size=1, max_size=6, unique=True).filter(
    lambda ls: not any(x.lower().startswith(("anomaly", "#")) for x in ls)
)
prob = st.floats(0.0, 1.0, allow_nan=False)
ms = st.floats(0.0, 5000.0, allow_nan=False)


@st.composite
def predictions(draw):
    labels = draw(labels_st)
    return labels, draw(st.lists(prob, min_size=len(labels), max_size=len(labels)))


def printed(value: float, decimals: int) -> float:
    return float(f"{value:.{decimals}f}")


@given(predictions(), st.tuples(ms, ms, ms), st.booleans(), st.sampled_from(["\n", "\r\n"]),
       st.sampled_from([5, 6]), st.sampled_from(["ms", "ms3"]), st.one_of(st.none(), st.floats(-5, 5)),
       st.one_of(st.none(), ms), st.integers(1, 3))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_current_format_round_trips(preds, timing, hashed, newline, decimals, unit, anomaly, post, repeat):
    labels, probs = preds
    block = protocol.render_current_result(labels, probs, timing, hashed=hashed, newline=newline,
                                           decimals=decimals, unit=unit, anomaly=anomaly,
                                           postprocessing_ms=post)
    results = protocol.parse_results(("Sampling...\n" + block) * repeat)
    assert len(results) == repeat
    r = results[0]
    assert list(r.predictions) == labels
    assert list(r.predictions.values()) == [printed(p, decimals) for p in probs]
    assert r.anomaly == (None if anomaly is None else printed(anomaly, decimals))
    assert set(r.timing) == {"dsp_ms", "classification_ms", "anomaly_ms"} | ({"postprocessing_ms"} if post is not None else set())
    for key, value in zip(("dsp_ms", "classification_ms", "anomaly_ms"), timing, strict=True):
        # What was printed comes back: integer ms, integer us below 1 ms, or 3 decimals.
        assert r.timing[key] == pytest.approx(value, abs=0.5 if unit == "ms" else 0.0005)


@given(predictions(), st.tuples(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999)),
       st.one_of(st.none(), st.floats(-5, 5)), st.integers(1, 3))
@settings(deadline=None)
def test_older_format_round_trips(preds, timing, anomaly, repeat):
    labels, probs = preds
    block = protocol.render_older_result(labels, probs, timing, anomaly=anomaly)
    results = protocol.parse_results(("Sampling...\n" + block) * repeat)
    assert len(results) == repeat
    r = results[-1]
    assert r.format == "older"
    assert list(r.predictions) == labels
    assert list(r.predictions.values()) == [printed(p, 5) for p in probs]
    assert r.timing == {"dsp_ms": timing[0], "classification_ms": timing[1], "anomaly_ms": timing[2]}
    assert r.anomaly == (None if anomaly is None else printed(anomaly, 5))


@given(predictions(), st.tuples(ms, ms, ms), st.integers(1, 200), st.sampled_from([16, 32, 128]))
@settings(deadline=None)
def test_static_transcript_round_trips(preds, timing, n, chunk):
    labels, probs = preds
    acks = [min(n, (k + 1) * chunk // 16 * 3) for k in range(protocol.chunk_count(n, chunk))]
    text = (f"AT+RUNIMPULSESTATIC=n,{n}\r\nOK CHUNK={chunk}\r\n" + "".join(f"OK {a} \r\n" for a in acks)
            + f"TRANSFER COMPLETED {n}\r\n" + protocol.render_static_result(labels, probs, timing) + "> ")
    t = protocol.parse_static_transcript(text)
    assert t.ok and t.chunk_size == chunk and t.acks == acks and t.completed == n
    assert list(t.result.predictions.values()) == [printed(p, 6) for p in probs]
    assert t.result.timing["classification_ms"] == printed(timing[1], 3)


@given(st.one_of(st.text(), st.binary()))
@settings(deadline=None)
def test_garbage_never_crashes_the_parsers(data):
    protocol.parse_results(data)  # tolerant: garbage holds no results, and that is all
    for parse in (protocol.parse_config, protocol.parse_static_transcript):
        try:
            parse(data)
        except ProtocolParseError:
            pass


@given(st.lists(st.sampled_from(["Timing: DSP 1 ms, inference 2 ms, anomaly 3 ms", "#Classification predictions:",
                                 "Predictions:", "  a: 0.5", "    b: \t0.25", "Anomaly prediction: 0.1",
                                 "Predictions (DSP: 1 ms., Classification: 2 ms., Anomaly: 0 ms.): ",
                                 "Object detection bounding boxes:", "  c (0.5) [ x: 1, y: 2, width: 3, height: 4 ]",
                                 "OK CHUNK=32", "OK 6 ", "RESULT 0", "END OUTPUT", "TIMEOUT", "ERR: x", "garbage", ""]),
                max_size=30))
@settings(deadline=None)
def test_shuffled_protocol_lines_never_crash_the_parsers(lines):
    text = "\r\n".join(lines)
    for result in protocol.parse_results(text):
        assert result.predictions or result.boxes or result.anomaly is not None
    try:
        protocol.parse_static_transcript(text)
    except ProtocolParseError:
        pass


# -- base64 chunks ---------------------------------------------------------------------------


@given(st.lists(st.floats(width=32, allow_nan=False), max_size=300), st.sampled_from([16, 32, 48, 128]))
@settings(deadline=None)
def test_chunks_decode_on_their_own_to_the_values(values, chunk):
    chunks = protocol.encode_chunks(values, chunk)
    assert all(len(c) == chunk for c in chunks)
    assert len(chunks) == protocol.chunk_count(len(values), chunk)
    decoded = b"".join(protocol.decode_chunk(c) for c in chunks)
    assert decoded == struct.pack(f"<{len(values)}f", *values)


def test_chunk_size_must_be_a_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        protocol.encode_chunks([1.0], 20)


# -- Sampling: replies and the signed acquisition file -------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_sampling_parsers_take_anything_or_raise_their_error(text):
    for parse in (sampling.parse_sample_reply, sampling.decode_read_buffer, sampling.parse_sample_settings):
        try:
            parse(text)
        except ProtocolParseError:
            pass


def test_the_sample_reply_is_read_as_the_daemon_reads_it():
    reply = ("Sampling settings:\r\n\tFile name: /fs/wave\r\nSampling...\r\nDone sampling\r\n"
             "Not uploading file, not connected to WiFi. Used buffer, from=0, to=1234.\r\n")
    assert sampling.parse_sample_reply(reply) == sampling.SampleReply("/fs/wave", 0, 1234)
    with pytest.raises(ProtocolParseError, match="could not sample: ERR: Failed to find sensor 'x'"):
        sampling.parse_sample_reply("ERR: Failed to find sensor 'x' in the sensor list\n")
    assert sampling.decode_read_buffer("OK\r\nAAEC\r\nAw==\r\n\r\nOK\r\n") == b"\x00\x01\x02\x03"


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9).flatmap(lambda axes: st.lists(st.lists(finite32, min_size=axes, max_size=axes),
                                                        min_size=1, max_size=40)),
       st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
       st.floats(0.01, 1000.0))
def test_a_signed_acquisition_round_trips_and_verifies(values, key, interval):
    import cbor2

    from pipeline.data.edge_impulse import parse_acquisition

    data = sampling.encode_acquisition("AA:BB", "board", interval, values, key)
    doc = cbor2.loads(data)
    assert doc["protected"] == {"ver": "v1", "alg": "HS256" if key else "none"}
    assert doc["payload"]["interval_ms"] == interval
    assert doc["payload"]["values"] == [[float(struct.unpack("<f", struct.pack("<f", v))[0]) for v in row]
                                        for row in values]
    assert doc["signature"] == (sampling.acquisition_hmac(data, key) if key else sampling.SIGNATURE_ZEROS)
    assert parse_acquisition(data, "sample").values.shape == (len(values), len(values[0]))
    if key:  # one bit flipped anywhere in the values: the signature no longer matches
        tampered = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
        assert cbor2.loads(tampered)["signature"] != sampling.acquisition_hmac(tampered, key)
