"""The WAV folder loader: both layouts, the file-name pattern, formats refused in one line."""

from __future__ import annotations

import struct
import wave

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.load import load_dataset
from pipeline.data.wav import load_wav_folder, pattern_regex, read_wav
from pipeline.data.windows import cut_windows


def write_wav(path, values, rate=8000, channels=1, width=2):
    """A WAV file through the stdlib writer (PCM of ``width`` bytes per sample)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes(np.asarray(values, "<i2").tobytes())
        else:  # 24-bit: three little-endian bytes per value
            raw = np.asarray(values, "<i4").tobytes()
            w.writeframes(b"".join(raw[i:i + 3] for i in range(0, len(raw), 4)))


def tone(freq, n, rate=8000, amp=8000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    return (amp * np.sin(2 * np.pi * freq * t) + rng.normal(0, 200, n)).astype(np.int16)


def flat_folder(root, speakers=("ann", "bob", "cy"), labels=("0", "1"), takes=3, n=800, rate=8000):
    """The fsdd layout: ``{label}_{speaker}_{index}.wav`` in one folder."""
    for s, spk in enumerate(speakers):
        for k, lab in enumerate(labels):
            for i in range(takes):
                write_wav(root / f"{lab}_{spk}_{i}.wav", tone(300 + 400 * k + 20 * s, n - 40 * i, rate, seed=i), rate)
    return root


def label_folders(root, labels=("yes", "no"), speakers=("a1b2", "c3d4"), takes=2, n=800):
    """The Speech Commands layout: ``<label>/<speaker>_nohash_<index>.wav``."""
    for k, lab in enumerate(labels):
        for s, spk in enumerate(speakers):
            for i in range(takes):
                write_wav(root / lab / f"{spk}_nohash_{i}.wav", tone(500 + 500 * k + 30 * s, n, seed=i))
    return root


def test_flat_folder_label_and_group_from_the_name(tmp_path):
    ds = load_dataset(str(flat_folder(tmp_path / "d")))
    assert ds.label_names == ("0", "1") and len(ds) == 18
    assert ds.has_groups and sorted(set(ds.group_ids)) == ["ann", "bob", "cy"]
    assert ds.rate_hz == 8000 and ds.channel_names == ("audio",)
    i = list(ds.sample_ids).index("1_bob_2")
    assert ds.labels[i] == 1 and ds.group_ids[i] == "bob"
    # int16 values kept as numbers (Edge Impulse's audio exports hold the same)
    ref = tone(300 + 400 + 20, 800 - 80, seed=2)
    np.testing.assert_array_equal(ds.samples[i][:, 0], ref.astype(np.float32))


def test_per_label_folders_with_a_group_pattern(tmp_path):
    root = label_folders(tmp_path / "kw")
    ds = load_wav_folder(root, "{group}_nohash_{index}.wav")
    assert ds.label_names == ("no", "yes") and len(ds) == 8
    assert ds.has_groups and sorted(set(ds.group_ids)) == ["a1b2", "c3d4"]
    assert "yes/a1b2_nohash_1" in set(ds.sample_ids)
    # The default pattern does not name a group here ({label}_{group}_{index} would take
    # "nohash" as a group): the folder gives the label, and a name the pattern cannot read
    # leaves each file its own group, said in the notes.
    other = load_wav_folder(root, "{group}-{index}.wav")
    assert not other.has_groups and any("own group" in n or "no group" in n for n in other.notes["loader"])


def test_names_that_do_not_match_are_skipped_and_counted(tmp_path):
    root = flat_folder(tmp_path / "d")
    write_wav(root / "stray.wav", tone(100, 800))
    ds = load_wav_folder(root)
    assert ds.skipped == {"name does not match [data] wav_pattern": 1} and len(ds) == 18
    with pytest.raises(PipelineError, match="no WAV file name matches"):
        load_wav_folder(root, "{label}-{group}.wav")


@pytest.mark.parametrize("kind, expected", [
    ("stereo", "2 channel(s), 16-bit PCM at 8000 Hz"),
    ("24bit", "1 channel(s), 24-bit PCM at 8000 Hz"),
    ("rate", "1 channel(s), 16-bit PCM at 4000 Hz"),
    ("float", "1 channel(s), 32-bit IEEE float at 16000 Hz"),
])
def test_other_formats_get_one_line_naming_the_file(tmp_path, kind, expected):
    root = flat_folder(tmp_path / "d")
    bad = root / "1_cy_9.wav"
    if kind == "stereo":
        write_wav(bad, np.repeat(tone(300, 800), 2), channels=2)
    elif kind == "24bit":
        write_wav(bad, tone(300, 800).astype(np.int32) * 256, width=3)
    elif kind == "rate":
        write_wav(bad, tone(300, 800, rate=4000), rate=4000)
    else:  # WAVE_FORMAT_EXTENSIBLE with the IEEE-float sub-format, as Audacity writes 32-bit float
        pcm = np.zeros(100, "<f4").tobytes()
        guid = struct.pack("<H", 3) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 16000, 64000, 4, 32, 22, 32, 4) + guid
        body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
        bad.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(PipelineError) as err:
        load_dataset(str(root))
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and expected in msg and "expected 16-bit PCM mono" in msg


def test_extensible_pcm_is_read_and_a_short_data_chunk_repaired(tmp_path):
    pcm = tone(440, 500).astype("<i2").tobytes()
    guid = struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 16000, 32000, 2, 16, 22, 16, 4) + guid
    # The header claims twice the data the file holds (a recorder stopped early).
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 2 * len(pcm)) + pcm
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    values, rate, repairs = read_wav(path)
    assert rate == 16000 and values.shape == (500, 1) and repairs
    with pytest.raises(PipelineError, match="not a WAV file"):
        (tmp_path / "y.wav").write_bytes(b"OggS" + bytes(40))
        read_wav(tmp_path / "y.wav")


def test_mixed_rates_are_resampled_and_short_utterances_zero_padded(tmp_path):
    root = flat_folder(tmp_path / "d", n=800)
    write_wav(root / "0_ann_7.wav", tone(300, 1600, rate=16000), rate=16000)
    ds = load_wav_folder(root)
    assert ds.rate_hz == 8000 and ds.notes["resampled"]["samples_resampled"] == 1
    lengths = ds.lengths
    w = cut_windows(ds, np.arange(len(ds)), int(lengths.max()), int(lengths.max()), {}, pad="zero")
    assert len(w) == len(ds) and w.padded.max() == lengths.max() - lengths.min()


def test_pattern_fields_are_checked():
    assert pattern_regex("{label}_{group}_{index}.wav").match("7_george_12.WAV").group("group") == "george"
    with pytest.raises(PipelineError, match="unknown field"):
        pattern_regex("{speaker}_{label}.wav")


def test_audio_window_holds_nine_utterances_in_ten_and_pads_every_shorter_one(tmp_path):
    """fsdd's digits run 0.14-2.28 s: the motion rule (the lower quartile, pad only samples
    at least half a window long) would cut three in four and drop the shortest."""
    from pipeline.data.windows import choose_window

    root = tmp_path / "d"
    lengths = np.linspace(300, 3000, 20).astype(int)  # 0.04..0.38 s at 8 kHz
    for i, n in enumerate(lengths):
        write_wav(root / f"{i % 2}_spk{i % 4}_{i}.wav", tone(300 + 400 * (i % 2), int(n), seed=i))
    ds = load_wav_folder(root)
    choice = choose_window(ds)
    assert choice.length == int(np.floor(np.quantile(lengths, 0.9)))
    assert "90% of the utterances" in choice.why
    w = cut_windows(ds, np.arange(len(ds)), choice.length, choice.stride, skipped := {}, pad="zero")
    assert len(w) == len(ds) and not skipped  # the 300-step one is padded, not dropped
    assert w.padded.max() == choice.length - lengths.min()
