"""The two files appended in place (device_eval.jsonl, test_ledger.jsonl) survive a kill:
each line is one write, a torn last line is dropped and said, a damaged line elsewhere is
an error naming the file and the line. Real files, a real killed process, a real file-size
limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.artifacts import append_line, read_json_lines
from pipeline.core.errors import PipelineError
from pipeline.core.ledger import LEDGER, read_ledger, record_test_look
from pipeline.device.scoring import read_results

ROOT = Path(__file__).resolve().parents[1]


def result(i: int) -> dict:
    return {"window_id": f"w{i}", "probabilities": [0.25, 0.75], "device_labels": ["a", "b"]}


def look(run: Path, n: int, say=None) -> dict:
    return record_test_look(run, "quantize", f"purpose {n}", "ab" * 32, {"accuracy": 0.5 + n / 100}, warn=say)


def test_a_half_line_after_a_kill_is_dropped_and_said(tmp_path):
    path = tmp_path / "device_eval.jsonl"
    for i in range(3):
        append_line(path, result(i))
    whole = path.read_bytes()
    half = json.dumps(result(3)).encode()
    with open(path, "ab") as f:
        f.write(half[: len(half) // 2])  # what a kill mid-line would leave
    said = []
    records, torn = read_results(path, warn=said.append)
    assert [r["window_id"] for r in records] == ["w0", "w1", "w2"] and torn == 1
    assert said == [f"warning: {path}: line 4 is torn (no newline at its end: its writer was stopped mid-line); dropped"]
    assert path.read_bytes() == whole + half[: len(half) // 2]  # a reader changes nothing

    said.clear()
    append_line(path, result(4), warn=said.append)  # the next writer cuts the torn piece first
    assert said == [f"warning: {path}: its last line was torn ({len(half) // 2} bytes without a newline: its writer "
                    "was stopped mid-line); cut before appending"]
    assert path.read_bytes() == whole + (json.dumps(result(4)) + "\n").encode()
    assert read_results(path, warn=said.append) == ([result(i) for i in (0, 1, 2, 4)], 0)


def test_a_last_line_that_is_not_json_is_torn_too(tmp_path):
    path = tmp_path / "device_eval.jsonl"
    append_line(path, result(0))
    with open(path, "ab") as f:
        f.write(b'{"window_id": "w1", "probab\x00\x00\n')  # a power cut: the tail written, garbled
    said = []
    assert read_results(path, warn=said.append) == ([result(0)], 1)
    assert said == [f"warning: {path}: line 2 is torn (not valid JSON: its writer was stopped mid-line); dropped"]
    found = read_json_lines(path, warn=said.append, cut=True)  # what a writer does before appending
    assert found.records == [(1, result(0))] and path.read_text() == json.dumps(result(0)) + "\n"


@pytest.mark.parametrize("reader", ["results", "ledger"])
def test_a_torn_line_in_the_middle_is_an_error_naming_the_file_and_line(tmp_path, reader):
    name = "device_eval.jsonl" if reader == "results" else LEDGER
    path = tmp_path / name
    lines = [json.dumps(result(i)) for i in range(4)] if reader == "results" else None
    if reader == "ledger":
        for n in range(4):
            look(tmp_path, n)
        lines = path.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # torn, then whole lines after it: not a kill
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    with pytest.raises(PipelineError) as err:
        read_results(path) if reader == "results" else read_ledger(tmp_path)
    assert err.value.message.startswith(f"{path}: line 2: not valid JSON")
    assert "only the last line of an appended file can be torn" in err.value.hint
    if reader == "ledger":  # nor does the next look write past it
        with pytest.raises(PipelineError, match=f"{path}: line 2: not valid JSON"):
            look(tmp_path, 9)
    assert path.read_bytes() == before


def test_the_ledger_drops_a_torn_last_look_and_goes_on(tmp_path, capsys):
    for n in range(2):
        look(tmp_path, n)
    path = tmp_path / LEDGER
    with open(path, "a") as f:
        f.write('{"time": "2024-01-01T00:00:00", "stage": "tr')
    assert [e["purpose"] for e in read_ledger(tmp_path)] == ["purpose 0", "purpose 1"]
    assert "line 3 is torn (no newline at its end" in capsys.readouterr().err
    said = []
    entry = look(tmp_path, 0, said.append)  # a second look for purpose 0, after the torn one
    assert entry["look"] == 2 and said[0].endswith("line 3 is torn (no newline at its end: its writer was stopped "
                                                   "mid-line); cut from the file")
    assert [e["purpose"] for e in read_ledger(tmp_path)] == ["purpose 0", "purpose 1", "purpose 0"]


WRITER = """
import sys
from pipeline.core.artifacts import append_line
path = sys.argv[1]
for i in range(10**9):
    append_line(path, {"window_id": f"w{i}", "probabilities": [0.5] * 2000})
"""


def test_a_writer_killed_at_any_moment_leaves_whole_lines(tmp_path):
    """A real process appending lines of 12 KB (more than one buffer), killed with SIGKILL:
    every line but the last is whole, and the last, if the kill cut its write (Linux may
    stop a write to a file between pages for a fatal signal), is dropped and said."""
    path = tmp_path / "device_eval.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 200_000):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    said = []
    records, torn = read_results(path, warn=said.append)
    assert len(records) >= 16 and len(said) == torn <= 1
    assert [r["window_id"] for r in records] == [f"w{i}" for i in range(len(records))]


def test_a_write_the_disk_cuts_short_leaves_no_torn_line(tmp_path):
    """A file-size limit (the kernel's EFBIG) in the middle of a line: the error names the
    file, and the part of the line that got in is taken out again."""
    path = tmp_path / "test_ledger.jsonl"
    append_line(path, {"look": 1})
    size = path.stat().st_size
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 100}, {size + 100}))\n"
            "from pipeline.core.artifacts import append_line\n"
            "from pipeline.core.errors import PipelineError\n"
            f"try: append_line({str(path)!r}, {{'look': 2, 'pad': 'x' * 500}}, 'the earlier looks are kept')\n"
            "except PipelineError as e: print(e); sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == f"{path}: cannot write (File too large); the earlier looks are kept"
    assert path.read_text() == '{"look": 1}\n'
