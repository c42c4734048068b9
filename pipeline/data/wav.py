"""Folders of WAV files (``--dataset folder/``): spoken digits, keywords, sounds.

Two layouts:

- flat: every file in the folder, its label and group taken from its name through
  ``[data] wav_pattern`` (default ``{label}_{group}_{index}.wav``, the Free Spoken Digit
  Dataset's ``7_george_12.wav``);
- per-label folders: ``folder/<label>/*.wav``, the label from the folder; the group from the
  file name when the pattern names one and matches (Speech Commands' ``yes/0a7c2a8d_nohash_0.wav``
  takes ``{group}_nohash_{index}.wav``), else each file is its own group.

Only 16-bit PCM mono at 8 to 48 kHz is read; any other WAV (stereo, 24-bit, float, A-law,
a rate outside that range) is refused in one line naming the file and what it holds. The
values are kept as int16 numbers in float32 (what Edge Impulse's audio exports hold), and
files at another rate than the most common are resampled like any other sample
(``pipeline.data.rates``). The RIFF header is parsed here, not with the ``wave`` module,
which refuses WAVE_FORMAT_EXTENSIBLE headers before saying what they hold.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.safe_io import read_file_bytes
from pipeline.data.dataset import Dataset, labels_to_ints
from pipeline.data.rates import one_rate

DEFAULT_PATTERN = "{label}_{group}_{index}.wav"
FIELDS = ("label", "group", "index")
MIN_RATE_HZ, MAX_RATE_HZ = 8000, 48000
# Format tags of the fmt chunk (Microsoft's mmreg.h): what the one-line error names.
FORMAT_NAMES = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "mu-law", 0x11: "IMA ADPCM", 0x55: "MP3",
                0xFFFE: "extensible"}
PCM_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"  # KSDATAFORMAT_SUBTYPE_PCM after its tag


def has_wav_files(folder: Path) -> bool:
    """True when ``folder`` or one of its sub-folders holds a .wav file."""
    return any(_wavs(folder)) or any(_wavs(d) for d in folder.iterdir() if d.is_dir())


def _wavs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav")


def pattern_regex(pattern: str) -> re.Pattern:
    """The regular expression of a file-name pattern: ``{label}``, ``{group}``, ``{index}``
    each match a run of characters without a path separator; the rest is literal."""
    parts = re.split(r"(\{[^{}]*\})", pattern)
    out = []
    seen = set()
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if name not in FIELDS:
                raise PipelineError(f"[data] wav_pattern {pattern!r}: unknown field {part}",
                                    hint="fields are {label}, {group} and {index}")
            if name in seen:
                raise PipelineError(f"[data] wav_pattern {pattern!r}: field {part} appears twice")
            seen.add(name)
            out.append(f"(?P<{name}>[^/\\\\]+?)")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out) + "$", re.IGNORECASE)


def read_wav(path: Path) -> tuple[np.ndarray, int, list[str]]:
    """(int16 values as float32 of shape (T, 1), rate in Hz, repairs made) of one WAV file.

    Refuses, naming the file and what it holds, anything but 16-bit PCM mono at 8 to 48 kHz.
    A data chunk that claims more bytes than the file has (a recorder stopped before it
    rewrote the header) is read to the file's end and said so.
    """
    data = read_file_bytes(path)
    src = str(path)
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PipelineError(f"{src}: not a WAV file (expected a RIFF/WAVE header, got {data[:12]!r})")
    fmt, pcm, repairs = None, None, []
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = _fmt_chunk(body, src)
        elif cid == b"data":
            if len(body) < size:
                repairs.append(f"data chunk claims {size} bytes, the file holds {len(body)}: read to the end")
            pcm = body
            break
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    if fmt is None:
        raise PipelineError(f"{src}: no 'fmt ' chunk before the data; expected a WAV file")
    _check_format(fmt, src)
    if pcm is None:
        raise PipelineError(f"{src}: no 'data' chunk")
    n = len(pcm) // 2
    if n == 0:
        raise PipelineError(f"{src}: no audio (empty data chunk)")
    values = np.frombuffer(pcm[:2 * n], dtype="<i2").astype(np.float32).reshape(-1, 1)
    return values, fmt["rate"], repairs


def _fmt_chunk(body: bytes, src: str) -> dict:
    if len(body) < 16:
        raise PipelineError(f"{src}: 'fmt ' chunk of {len(body)} bytes; expected at least 16")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == 0xFFFE and len(body) >= 40:
        # WAVE_FORMAT_EXTENSIBLE: the real format is the sub-format GUID's first two bytes.
        sub = struct.unpack_from("<H", body, 24)[0]
        tag = sub if body[26:40] == PCM_GUID_TAIL else 0xFFFE
    return {"tag": tag, "channels": channels, "rate": rate, "bits": bits}


def _check_format(fmt: dict, src: str) -> None:
    ok = (fmt["tag"] == 1 and fmt["bits"] == 16 and fmt["channels"] == 1
          and MIN_RATE_HZ <= fmt["rate"] <= MAX_RATE_HZ)
    if not ok:
        name = FORMAT_NAMES.get(fmt["tag"], f"format tag {fmt['tag']:#x}")
        raise PipelineError(
            f"{src}: {fmt['channels']} channel(s), {fmt['bits']}-bit {name} at {fmt['rate']} Hz; "
            f"expected 16-bit PCM mono at {MIN_RATE_HZ // 1000} to {MAX_RATE_HZ // 1000} kHz",
            hint="convert it, e.g. `sox in.wav -c 1 -b 16 out.wav` or `ffmpeg -i in.wav -ac 1 -sample_fmt s16 out.wav`")


def _entries(folder: Path, regex: re.Pattern, pattern: str) -> tuple[list[tuple[Path, str, str | None]], str, Counter]:
    """(file, label, group or None) of every WAV file, the layout, and the files skipped."""
    skipped: Counter = Counter()
    flat = _wavs(folder)
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and _wavs(d))
    if flat and subdirs:
        raise PipelineError(f"{folder}: holds WAV files both at its top and in sub-folders "
                            f"({subdirs[0].name}/)", hint="use one layout: label in the file name, or one folder per label")
    out = []
    if flat:
        if "{label}" not in pattern:
            raise PipelineError(f"[data] wav_pattern {pattern!r}: names no {{label}}, and {folder} has no per-label folders")
        for p in flat:
            m = regex.match(p.name)
            if m is None:
                skipped["name does not match [data] wav_pattern"] += 1
                continue
            out.append((p, m.group("label"), m.groupdict().get("group"), p.name[:m.start("label")] + p.name[m.end("label"):]))
        if not out:
            raise PipelineError(f"{folder}: no WAV file name matches [data] wav_pattern {pattern!r} "
                                f"(e.g. {flat[0].name!r})", hint="set [data] wav_pattern to how the files are named")
        # In the name's order without its label (speaker, then take), not sorted by label: a
        # listing sorted by class would make the sample order alone predict the class.
        out.sort(key=lambda e: (e[3], e[1]))
        return [e[:3] for e in out], "flat", skipped
    for d in subdirs:
        for p in _wavs(d):
            m = regex.match(p.name)
            out.append((p, d.name, m.groupdict().get("group") if m else None))
    return out, "per-label folders", skipped


def load_wav_folder(folder: str | Path, pattern: str = DEFAULT_PATTERN, rate_hz="auto") -> Dataset:
    """A folder of WAV files (see the module's docstring for the layouts)."""
    folder = Path(folder)
    src = str(folder)
    regex = pattern_regex(pattern)
    entries, layout, skipped = _entries(folder, regex, pattern)
    samples, rates, notes = [], [], {"loader": [], "group_word": "speaker"}
    repaired = 0
    for p, _, _ in entries:
        values, rate, repairs = read_wav(p)
        samples.append(values)
        rates.append(float(rate))
        repaired += bool(repairs)
    if repaired:
        notes["loader"].append(f"{repaired} WAV file(s) with a data chunk longer than the file: read to the file's end")
    if skipped:
        notes["loader"].append(f"{sum(skipped.values())} WAV file(s) whose name does not match {pattern!r} skipped")
    rate, samples, originals, resampled = one_rate(src, rates, samples, rate_hz)
    if resampled:
        notes["resampled"] = resampled
        notes["loader"].append(f"{resampled['samples_resampled']} of {len(samples)} WAV files resampled to {rate:g} Hz")
    ids = [str(p.relative_to(folder).with_suffix("")).replace("\\", "/") for p, _, _ in entries]
    groups = [g for _, _, g in entries]
    has_groups = all(g is not None for g in groups)
    if not has_groups:
        if any(g is not None for g in groups):
            notes["loader"].append(f"{groups.count(None)} WAV file(s) name no group through {pattern!r}: "
                                   "every file is its own group")
        else:
            notes["loader"].append(f"no group (speaker) in the file names through {pattern!r}: the split keeps files "
                                   "whole, and the scores estimate new recordings, not new speakers")
    labels, label_names = labels_to_ints([lab for _, lab, _ in entries], src)
    notes["loader"].insert(0, f"{len(entries)} WAV files ({layout}), 16-bit PCM mono at "
                              + ", ".join(f"{r:g} Hz" for r in sorted(set(rates))))
    return Dataset(
        name=folder.name, source=src, kind="timeseries", samples=samples, labels=labels,
        label_names=label_names, recording_ids=np.asarray(ids),
        group_ids=np.asarray([g if has_groups else i for g, i in zip(groups, ids, strict=True)]),
        # WAV files carry no time of recording (a file's mtime is its copy's): every start is 0.
        start_times=np.zeros(len(ids)), sample_ids=np.asarray(ids), rate_hz=rate, channel_names=("audio",),
        has_groups=has_groups, has_recordings=False, skipped=dict(skipped), notes=notes,
        meta={"rate_hz": np.asarray([f"{r:g}" for r in rates])}, originals=originals,
    )
