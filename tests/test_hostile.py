"""The hostile suite: input nobody should send, devices that lie, a disk that fills up.

One test per class of hostile input in issue 13, each through a public entry point (the
CLI or the package API): the outcome is exit 1 or 2 with one error line and no traceback,
or, for what must be accepted (Excel's BOM), a load. Lying devices are the real virtual
device on a real pseudo-terminal, configured to lie. Every parser is fuzzed: any input
either loads or raises the project's one error type (PipelineError; BridgeError is one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import cbor2
import numpy as np
import pytest
from boards import lying_board, prediction_line
from conftest import copy_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reach import NOT_REACHED, must_reach

from firmware_bridge.host import protocol
from firmware_bridge.host.client import Device, parse_model_info
from pipeline.core import config as config_mod
from pipeline.core.artifacts import write_json
from pipeline.core.errors import GateFailed, PipelineError
from pipeline.data.csv_table import load_csv
from pipeline.data.edge_impulse import parse_acquisition
from pipeline.data.load import load_dataset
from pipeline.data.npz import load_npz
from pipeline.device.scoring import read_results
from pipeline.device.stage import evaluate_on_device
from pipeline.device.stage import flash_device as flash
from tinyml_cli import main

ROOT = Path(__file__).resolve().parents[1]
# A fuzz test whose success branch asserts must load something: fail if fewer than this of its
# 60 examples loaded (measured: acquisition 38, info.labels 12-15, csv 6-10, config 6-12;
# before well-formed inputs were mixed in, 3, 0, 0 and 4: those assertions were next to vacuous).
MIN_PARSED = 3
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


def refused(argv, capsys, codes=(2,)) -> str:
    """Run the CLI in-process; it must exit with one of ``codes`` and print one error line
    (a hint line may follow) and no traceback. Returns the error line."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code in codes, f"exit {code}: {err}"
    assert "Traceback" not in err
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1 and lines[0].startswith("error:"), err
    assert all(ln.startswith(("error:", "hint:")) for ln in lines), err
    return lines[0]


def audit_refuses(dataset, tmp_path, capsys) -> str:
    return refused(["audit", "--dataset", str(dataset), "--run", str(tmp_path / "run")], capsys)


# --------------------------------------------------------------------------- fixtures


def acquisition(values, interval_ms=10, device="dev1", iat=1_700_000_000) -> dict:
    return {"protected": {"ver": "v1", "alg": "none", "iat": iat}, "signature": "0" * 64,
            "payload": {"device_name": device, "device_type": "NANO33BLE", "interval_ms": interval_ms,
                        "sensors": [{"name": "accX", "units": "m/s2"}], "values": values}}


def export(root: Path, docs: dict[str, str | bytes], extra_files: list[dict] | None = None) -> Path:
    """An Edge Impulse export: info.labels and training/<label>.<k>.json files."""
    (root / "training").mkdir(parents=True, exist_ok=True)
    files = []
    for name, doc in docs.items():
        (root / "training" / name).write_bytes(doc if isinstance(doc, bytes) else doc.encode())
        files.append({"path": f"training/{name}", "category": "training",
                      "label": {"type": "label", "label": name.split(".")[0]}})
    (root / "info.labels").write_text(json.dumps({"version": 1, "files": files + (extra_files or [])}))
    return root


def good_docs(n=3) -> dict[str, str]:
    docs = {}
    for k in range(n):
        for label in ("idle", "wave"):
            docs[f"{label}.{k}.json"] = json.dumps(acquisition([[float(i % 7)] for i in range(40)], device=f"d{k}"))
    return docs


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def good_npz(**extra) -> dict:
    rng = np.random.default_rng(0)
    return {"X": rng.normal(size=(12, 16, 3)).astype(np.float32), "y": np.arange(12) % 2, **extra}


# --------------------------------------------------------------------------- 1. loaders


@pytest.mark.parametrize("where", ["values", "interval_ms"])
def test_a_number_too_large_for_a_float(tmp_path, capsys, where):
    docs = good_docs()
    doc = json.dumps(acquisition([[1.0]] * 40))
    huge = "9" * 400
    docs["idle.0.json"] = (doc.replace("[[1.0]", f"[[{huge}]", 1) if where == "values"
                           else doc.replace('"interval_ms": 10', f'"interval_ms": {huge}'))
    line = audit_refuses(export(tmp_path / "e", docs), tmp_path, capsys)
    assert "idle.0.json" in line and f"payload.{where}" in line and "too large for a float" in line


def test_json_nested_100000_deep(tmp_path, capsys):
    docs = good_docs()
    docs["idle.0.json"] = '{"payload": ' * 100_000 + "1" + "}" * 100_000
    line = audit_refuses(export(tmp_path / "e", docs), tmp_path, capsys)
    assert "idle.0.json" in line and "nested 100000 deep" in line
    root = tmp_path / "e2"
    root.mkdir()
    (root / "info.labels").write_text("[" * 100_000 + "]" * 100_000)
    assert "info.labels" in audit_refuses(root, tmp_path, capsys)


def _terabyte_header() -> bytes:
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 16, 3)})
    y = io.BytesIO()
    np.save(y, np.arange(12) % 2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("X.npy", head.getvalue() + good_npz()["X"].tobytes())
        z.writestr("y.npy", y.getvalue())
    return buf.getvalue()


def _bad_crc() -> bytes:
    data = bytearray(npz_bytes(**good_npz()))
    data[data.find(b"NUMPY") + 300] ^= 0xFF  # inside X's stored bytes: the CRC no longer matches
    return bytes(data)


def _npy_renamed() -> bytes:
    buf = io.BytesIO()
    np.save(buf, good_npz()["X"])
    return buf.getvalue()


@pytest.mark.parametrize("make, expect", [
    (lambda: npz_bytes(**good_npz(), groups=np.array([object()] * 12, dtype=object)), "holds Python objects"),
    (_bad_crc, "Bad CRC-32"),
    (_terabyte_header, "header declares shape (1000000000000, 16, 3)"),
    (_npy_renamed, "a single .npy array, not an .npz archive"),
    (lambda: npz_bytes(**good_npz())[:700], "not a zip archive"),
], ids=["object-dtype", "bad-crc", "terabyte-header", "npy-renamed", "truncated"])
def test_npz_members_that_fail_to_load(tmp_path, capsys, make, expect):
    path = tmp_path / "d.npz"
    path.write_bytes(make())
    line = audit_refuses(path, tmp_path, capsys)
    assert "d.npz" in line and expect in line


def test_text_where_an_npz_number_belongs(tmp_path, capsys):
    path = tmp_path / "d.npz"
    path.write_bytes(npz_bytes(**good_npz(rate_hz=np.array("fast"))))
    line = audit_refuses(path, tmp_path, capsys)
    assert "rate_hz" in line and "expected one number" in line


def test_a_zero_length_time_axis(tmp_path, capsys):
    path = tmp_path / "d.npz"
    path.write_bytes(npz_bytes(X=np.zeros((12, 0, 3), np.float32), y=np.arange(12) % 2))
    line = audit_refuses(path, tmp_path, capsys)
    assert "is empty (shape (0, 3))" in line


def test_a_csv_cell_over_the_field_limit(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("recording,label,t,ax\nr1,a,0,1\nr2,b,0," + "1" * 200_000 + "\n")
    line = audit_refuses(path, tmp_path, capsys)
    assert "d.csv: line 3" in line and "field larger than field limit" in line


def test_an_excel_csv_with_a_bom_loads(tmp_path):
    path = tmp_path / "excel.csv"
    rows = "".join(f"r{r},{'ab'[r % 2]},{k / 50:.2f},{k % 5}\r\n" for r in range(4) for k in range(50))
    path.write_bytes("recording,label,t,ax\r\n".encode("utf-8-sig") + rows.encode())  # Excel's "CSV UTF-8"
    ds = load_dataset(str(path))
    assert len(ds) == 4 and ds.channel_names == ("ax",)


@pytest.mark.parametrize("escape", ["../outside/idle.9.json", "/etc/hostname", "training/../../outside/idle.9.json"])
def test_info_labels_paths_must_stay_inside_the_export(tmp_path, capsys, escape):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "idle.9.json").write_text(json.dumps(acquisition([[1.0]] * 40)))
    entry = {"path": escape, "category": "training", "label": {"type": "label", "label": "idle"}}
    line = audit_refuses(export(tmp_path / "e", good_docs(), [entry]), tmp_path, capsys)
    assert f"path {escape!r} resolves to" in line and "outside the export folder" in line


def test_an_info_labels_label_of_the_wrong_type(tmp_path, capsys):
    entry = {"path": "training/idle.0.json", "category": "training", "label": {"type": "label", "label": 5}}
    root = export(tmp_path / "e", good_docs())
    info = json.loads((root / "info.labels").read_text())
    info["files"][0] = entry
    (root / "info.labels").write_text(json.dumps(info))
    line = audit_refuses(root, tmp_path, capsys)
    assert "field 'label.label': expected a non-empty string, got 5" in line
    assert "unknown label type 'label'" not in line  # the old self-contradictory message


# --------------------------------------------------------------------------- 2. config


def _numeric_fields():
    """Every int and float field of every config section (and the top-level seed)."""
    yield "", "seed", int
    for section, cls in config_mod.SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            kinds = [t for t in (typing.get_args(tp) or (tp,)) if t in (int, float)]
            if kinds:
                yield section, f.name, kinds[0]


@pytest.mark.parametrize("section, key, tp", list(_numeric_fields()), ids=lambda v: str(getattr(v, "__name__", v)))
def test_every_numeric_config_field_rejects_non_finite_and_out_of_range(tmp_path, section, key, tp):
    bad = ["nan", "inf", "-inf"] if tp is float else ["-1", str(2**40)]
    for text in bad:
        path = tmp_path / "c.toml"
        path.write_text(f"[{section}]\n{key} = {text}\n" if section else f"{key} = {text}\n")
        with pytest.raises(PipelineError) as err:
            config_mod.load_config(path)
        assert (f"[{section}] {key}" if section else f"{path}: {key}") in err.value.message, err.value.message


@pytest.mark.parametrize("setting", ["[split]\nwindow_ms = nan", "[split]\nstride_ms = inf",
                                     "[quantize]\nmin_tflm_agreement = nan", "seed = -3"])
def test_config_nan_inf_and_ranges_via_the_cli(tmp_path, capsys, setting):
    path = tmp_path / "c.toml"
    path.write_text(setting + "\n")
    line = refused(["audit", "--config", str(path), "--run", str(tmp_path / "run")], capsys)
    key = setting.split("\n")[-1].split(" =")[0]
    assert str(path) in line and key in line


# --------------------------------------------------------------------------- 3. artifacts


def test_a_splits_json_of_the_wrong_structure(fast_run, tmp_path, capsys):
    run = copy_run(fast_run, tmp_path / "run")
    man = json.loads((run / "splits.json").read_text())
    man["splits"]["test"] = {"not": "a list"}
    (run / "splits.json").write_text(json.dumps(man))
    line = refused(["eval", "--run", str(run)], capsys)
    assert "splits.json" in line and "field 'splits.test': expected a list" in line
    (run / "splits.json").write_text("[]")
    with pytest.raises(PipelineError, match="splits.json: the top level: expected an object"):
        evaluate_on_device(run_config(run), run)


def test_a_device_eval_line_with_bad_probabilities(fast_run, tmp_path, capsys):
    run = copy_run(fast_run, tmp_path / "run")
    results = run / "device_eval.jsonl"
    lines = results.read_text().splitlines()
    for value in (None, "NaN", [None, 0.5], [2.0, 0.0, 0.0, 0.0]):
        edited = list(lines)
        rec = json.loads(lines[3])
        rec["probabilities"] = value
        edited[3] = json.dumps(rec).replace('"NaN"', "NaN")
        results.write_text("\n".join(edited) + "\n")
        if value is None:  # the case, through the CLI
            line = refused(["eval", "--run", str(run)], capsys)
            assert "device_eval.jsonl: line 4: field 'probabilities': expected a list, got null" in line
        else:
            with pytest.raises(PipelineError) as err:
                evaluate_on_device(run_config(run), run)
            line = err.value.message
            assert "device_eval.jsonl: line 4: field 'probabilities" in line and "--restart" in err.value.hint
        assert rec["window_id"] in line
        assert results.read_text().splitlines() == edited  # named, not dropped or rewritten


def test_a_truncated_sensor_npz(fast_run, tmp_path):
    run = copy_run(fast_run, tmp_path / "run")
    sensor = run / "device" / "flash" / "sensor.npz"
    sensor.write_bytes(sensor.read_bytes()[: sensor.stat().st_size // 2])
    with pytest.raises(PipelineError, match=r"sensor.npz: not a readable .npz file \(not a zip archive\)"):
        evaluate_on_device(run_config(run), run, restart=True)
    assert (run / "device_eval.jsonl").exists()  # refused before --restart discarded anything


def test_eval_on_a_float_model_or_one_the_report_does_not_describe(fast_run, tmp_path, capsys):
    """int8.tflite is trusted only as the model quantize_report.json names by SHA-256."""
    run = copy_run(fast_run, tmp_path / "run")
    results = (run / "device_eval.jsonl").read_bytes()
    (run / "int8.tflite").write_bytes((run / "float.keras").read_bytes())  # a float model in its place
    line = refused(["eval", "--run", str(run)], capsys)
    assert "int8.tflite: SHA-256" in line and "not the model quantize_report.json describes" in line
    with pytest.raises(PipelineError, match="not the model quantize_report.json describes"):
        flash(run_config(run), run)
    assert (run / "device_eval.jsonl").read_bytes() == results  # nothing lost


# --------------------------------------------------------------------------- 4. lying devices


def run_config(run: Path, port: str | None = None):
    """The run's own config, as `tinyml eval --run RUN [--device PORT]` loads it."""
    return config_mod.load_config(run / "config.toml", {"device.port": port})


def lying_device(run: Path, lie):
    """The run's own firmware (the host board flashed by `tinyml flash`) on a real pty, its
    words rewritten by ``lie(line) -> line`` (tests/boards.py: the firmware still computes)."""
    return lying_board(run, lie)


def _labels_of(run: Path) -> list[str]:
    return json.loads((run / "splits.json").read_text())["dataset"]["label_names"]


def _field(name: str, value: str):
    """A lie about one AT+MODELINFO? field."""
    prefix = f"{name}:".encode()

    def lie(line: bytes) -> bytes:
        if not line.startswith(prefix):
            return line
        pad = len(line[len(prefix):]) - len(line[len(prefix):].lstrip(b" "))
        return prefix + b" " * pad + value.encode() + (b"\r\n" if line.endswith(b"\r\n") else b"\n")
    return lie


def _facts(**changes):
    lies = [_field({"sha256": "SHA-256", "input_shape": "Input shape"}[k],
                   v if isinstance(v, str) else json.dumps(list(v))) for k, v in changes.items()]

    def lie(line: bytes) -> bytes:
        for one in lies:
            line = one(line)
        return line
    return lie


def _reversed_labels(run: Path):
    labels = _labels_of(run)
    mirror = dict(zip(labels, labels[::-1], strict=True))

    def lie(line: bytes) -> bytes:
        if line.startswith(b"Labels:"):
            return _field("Labels", json.dumps(labels[::-1]))(line)
        p = prediction_line(line)
        if p is None:
            return line
        indent, label, end = p
        return indent + mirror[label].encode() + line[len(indent) + len(label.encode()):]
    return lie


def test_a_device_listing_its_labels_in_another_order_is_refused(fast_run, tmp_path):
    run = copy_run(fast_run, tmp_path / "run")
    before = (run / "device_eval.jsonl").read_bytes()
    with lying_device(run, _reversed_labels(run)) as port, pytest.raises(GateFailed) as err:
        evaluate_on_device(run_config(run, port), run, restart=True)
    assert ("the device's labels are ['updown', 'circle', 'wave', 'idle'], the model's are "
            "['idle', 'wave', 'circle', 'updown']") in err.value.message
    assert (run / "device_eval.jsonl").read_bytes() == before  # refused before anything was discarded


@pytest.mark.parametrize("lie, expect", [
    (_facts(sha256="ab" * 32), "the device runs model abababababab, int8.tflite is"),
    (_facts(input_shape=(1, 32, 3)), "the device's model takes 96 values (input shape [1, 32, 3]), "
                                     "the test windows have 192"),
], ids=["model-hash", "input-size"])
def test_a_device_reporting_another_model_is_refused(fast_run, tmp_path, lie, expect):
    run = copy_run(fast_run, tmp_path / "run")
    before = (run / "device_report.json").read_bytes()
    with lying_device(run, lie) as port, pytest.raises(GateFailed) as err:
        evaluate_on_device(run_config(run, port), run)
    assert expect in err.value.message
    assert (run / "device_report.json").read_bytes() == before


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
def test_a_device_printing_nan_or_inf_is_refused_and_nothing_is_written(fast_run, tmp_path, capsys, bad):
    run = copy_run(fast_run, tmp_path / "run")
    results = run / "device_eval.jsonl"
    kept = results.read_text().splitlines()[:5]

    second = _labels_of(run)[1]
    text = f"{bad:.6f}".encode()  # nan, inf, -0.500000: as a firmware's printf prints them

    def lie(line: bytes) -> bytes:
        p = prediction_line(line)
        if p is None or p[1] != second:
            return line
        return p[0] + second.encode() + b": " + text + p[2]

    with lying_device(run, lie) as port:
        with Device(port, timeout=5.0) as dev:  # the device on that port, as a resumed line names it
            same = {"port_type": "serial", "device_id": dev.config.device_id, "device_type": dev.config.device_type}
        # Lines of the same device, reached through a plain serial port: these are resumed.
        results.write_text("".join(json.dumps(dict(json.loads(k), device=same)) + "\n" for k in kept))
        if bad != bad:  # NaN, the case, through the CLI
            line = refused(["eval", "--run", str(run), "--device", port], capsys)
        else:
            with pytest.raises(PipelineError) as err:
                evaluate_on_device(run_config(run, port), run)
            line = err.value.message
    assert "window 'subject" in line and f"probability {bad!r} for 'wave'" in line
    after = results.read_text().splitlines()
    assert len(after) == 5 and all("NaN" not in x and "Infinity" not in x for x in after)  # never written
    assert len(read_results(results)[0]) == 5  # and the file still reads


def test_results_of_another_device_are_not_resumed(fast_run, tmp_path, capsys):
    run = copy_run(fast_run, tmp_path / "run")
    emu = [json.loads(x) for x in (run / "device_eval.jsonl").read_text().splitlines()]
    assert {r["device"]["port_type"] for r in emu} == {"host"}  # flashed to the host board
    stale_tmp = run / ".device_report.json.4194999.abcd1234.tmp"  # a killed writer's leftover
    stale_tmp.write_text("{")
    with lying_device(run, lambda line: line) as port:  # an honest device on a serial port
        assert evaluate_on_device(run_config(run, port), run) == 0
    out = capsys.readouterr().out
    assert "holds results of another device" in out and "'port_type': 'host'" in out
    final = [json.loads(x) for x in (run / "device_eval.jsonl").read_text().splitlines()]
    assert len(final) == len(emu) and {r["device"]["port_type"] for r in final} == {"serial"}
    assert [r["probabilities"] for r in final] == [r["probabilities"] for r in emu]
    report = json.loads((run / "device_report.json").read_text())
    assert report["device"]["identity"]["port_type"] == "serial" and report["device"]["labels_verified"]
    assert not stale_tmp.exists()


# --------------------------------------------------------------------------- full disk


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def _limit_file_size(limit: int):
    def preexec():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill, past the limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_full_disk_during_evaluation(fast_run, tmp_path):
    """The real kernel error mid-evaluation: one line naming the file, every result kept.

    A 64 KB tmpfs in a user and mount namespace (ENOSPC) where the kernel allows one, else
    a file-size limit (EFBIG): either way the kernel refuses the write, not a mock."""
    run = copy_run(fast_run, tmp_path / "run")
    results = run / "device_eval.jsonl"
    kept = results.read_text().splitlines(keepends=True)[:100]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tinyml_cli", "eval", "--run", str(run)]
    if _can_mount_tmpfs():
        disk, out, reason = tmp_path / "disk", tmp_path / "kept.jsonl", "No space left on device"
        disk.mkdir()
        results.unlink()
        results.symlink_to(disk / "device_eval.jsonl")  # the results file lives on a 64 KB disk
        script = (f'mount -t tmpfs -o size=64k tmpfs "{disk}" && printf %s "$KEPT" > "{disk}/device_eval.jsonl" '
                  f'&& "$@"; rc=$?; cp "{disk}/device_eval.jsonl" "{out}"; exit $rc')
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *cmd], capture_output=True, text=True,
                              cwd=ROOT, env={**env, "KEPT": "".join(kept)}, timeout=300)
    else:
        out, reason = results, "File too large"
        results.write_text("".join(kept))
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
                              preexec_fn=_limit_file_size(results.stat().st_size + 6000))
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert err[0].startswith("error: ") and "device_eval.jsonl: cannot write" in err[0], err
    assert reason in err[0] and "results before window" in err[0]
    lines = out.read_text().splitlines(keepends=True)
    assert lines[:100] == kept and len(lines) > 100  # the earlier results, and those streamed, are kept


def test_a_full_disk_when_writing_an_artifact_names_the_path(tmp_path):
    code = ("import sys; from pipeline.core.artifacts import write_json\n"
            "from pipeline.core.errors import PipelineError\n"
            f"try: write_json({str(tmp_path / 'big.json')!r}, list(range(100000)))\n"
            "except PipelineError as e: print(e); sys.exit(2)\n")
    (tmp_path / "big.json").write_text("[1]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_limit_file_size(4096))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stdout.startswith(f"{tmp_path / 'big.json'}: cannot write (File too large)")
    assert (tmp_path / "big.json").read_text() == "[1]\n"  # the old file is kept
    assert not list(tmp_path.glob(".big.json.*.tmp"))


def test_temporaries_of_a_killed_writer_are_removed_on_the_next_write(tmp_path):
    dead = tmp_path / ".a.json.4194999.k1ll3d_x.tmp"  # pid above any kernel's pid_max
    old = tmp_path / ".a.json.abcdefgh.tmp"  # the name before writers put their pid in it
    alive = tmp_path / f".a.json.{os.getppid()}.abcdefgh.tmp"  # a writer still running
    other = tmp_path / ".b.json.4194999.abcdefgh.tmp"
    for p in (dead, old, alive, other):
        p.write_text("torn")
    write_json(tmp_path / "a.json", {"ok": True})
    assert not dead.exists() and not old.exists()
    assert alive.exists() and other.exists()


# --------------------------------------------------------------------------- 6. fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)
numbers = st.integers(min_value=-(10**400), max_value=10**400) | st.floats() | st.just(10**400)


@st.composite
def acquisition_docs(draw):
    """Acquisition documents near the real format, each field possibly replaced by junk."""
    doc = acquisition(draw(st.lists(st.lists(numbers, min_size=1, max_size=2), min_size=1, max_size=4)),
                      interval_ms=draw(numbers), iat=draw(numbers))
    for path in draw(st.lists(st.sampled_from(["payload", "payload.sensors", "payload.values",
                                               "payload.interval_ms", "protected", "payload.sensors.0"]),
                              max_size=2)):
        node, *rest = path.split(".")
        target, key = doc, node
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier draw replaced a parent
            for part in rest:
                target, key = target[key], int(part) if part.isdigit() else part
            target[key] = draw(json_values)
    return doc


# Well-formed documents among the junk, so that what loads is checked too (tests/reach.py).
good_acquisitions = st.lists(st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=1), min_size=1,
                             max_size=8).map(acquisition)


@must_reach(MIN_PARSED)
@FUZZ
@given(doc=acquisition_docs() | good_acquisitions, as_cbor=st.booleans())
def test_fuzz_acquisition_json_and_cbor(doc, as_cbor):
    try:
        data = cbor2.dumps(doc) if as_cbor else json.dumps(doc).encode()
    except (ValueError, OverflowError, TypeError):  # values JSON or CBOR cannot hold
        return NOT_REACHED
    try:
        acq = parse_acquisition(data, "x.cbor" if as_cbor else "x.json")
    except PipelineError:
        return NOT_REACHED  # refused, as it may be; what loads must hold up
    assert np.all(np.isfinite(acq.values)) and acq.interval_ms > 0


@FUZZ
@given(data=st.binary(max_size=200) | st.text(alphabet='{}[]":,0123456789.eE-+ \n', max_size=200).map(str.encode))
def test_fuzz_acquisition_raw_bytes(data):
    with contextlib.suppress(PipelineError):
        parse_acquisition(data, "x.json")


info_entries = st.fixed_dictionaries(
    {"path": st.sampled_from(["training/idle.0.json", "training/wave.0.json", "../x.json", "/etc/passwd",
                              "a\x00b", "x" * 5000, "training", "missing.json"]) | json_values},
    optional={"category": st.sampled_from(["training", "testing", "anomaly"]) | json_values,
              "label": st.fixed_dictionaries({"type": st.sampled_from(["label", "unlabeled", "multi-label"])
                                              | json_values},
                                             optional={"label": st.sampled_from(["idle", "wave", ""]) | json_values})
              | json_values},
)


# Entries of the right shape that a real export may hold: unlabelled, another category, a file not there.
odd_entries = st.fixed_dictionaries(
    {"path": st.sampled_from(["training/idle.0.json", "training/wave.0.json", "missing.json", "testing/x.json"]),
     "category": st.sampled_from(["training", "testing", "anomaly"]),
     "label": st.fixed_dictionaries({"type": st.sampled_from(["label", "unlabeled"]),
                                     "label": st.sampled_from(["idle", "wave"])})})
good_entries = [{"path": f"training/{label}.0.json", "category": "training", "label": {"type": "label", "label": label}}
                for label in ("idle", "wave")]


@must_reach(MIN_PARSED)
@FUZZ
@given(files=st.lists(info_entries, max_size=4) | json_values
       | st.tuples(st.permutations(good_entries), st.lists(odd_entries, max_size=2)).map(lambda t: t[0] + t[1]))
def test_fuzz_info_labels(tmp_path_factory, files):
    root = export(tmp_path_factory.mktemp("ei") / "e", good_docs(1))
    (root / "info.labels").write_text(json.dumps({"version": 1, "files": files}))
    try:
        ds = load_dataset(str(root))
    except PipelineError:
        return NOT_REACHED
    assert set(ds.label_names) <= {"idle", "wave"}


def csv_body(seed: int) -> str:
    """Rows of 4 recordings of 2 labels, 12 steps each, values from ``seed``: a table that loads."""
    rng = np.random.default_rng(seed)
    return "".join(f"r{r},{'ab'[r % 2]},{i / 10:g},{rng.normal():.3f}\n" for r in range(4) for i in range(12))


@must_reach(MIN_PARSED)
@FUZZ
@given(body=st.text(alphabet='abr01,.-e"\r\n\tx\x00\ufeffnaif', max_size=200) | st.integers(0, 999).map(csv_body),
       header=st.sampled_from(["", "recording,label,t,ax\n", "\ufeffrecording,label,t,ax,group\n"]))
def test_fuzz_csv(tmp_path_factory, header, body):
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text(header + body, encoding="utf-8", errors="surrogatepass")
    try:
        ds = load_csv(path)
    except PipelineError:
        return NOT_REACHED
    assert all(np.all(np.isfinite(s)) and s.size for s in ds.samples)


npz_arrays = st.sampled_from([
    np.zeros((4, 3, 2), np.float32), np.arange(4), np.array(["a", "b", "a", "b"]), np.array(3.5),
    np.array("text"), np.zeros((0, 2)), np.array([1.0, np.nan, 2.0, 3.0]), np.zeros((4, 2, 2, 1), np.uint8),
    np.array([b"x", b"y", b"x", b"y"]), np.array([True, False, True, False]), np.zeros(4, dtype=complex),
])


@FUZZ
@given(arrays=st.dictionaries(st.sampled_from(["X", "y", "groups", "recordings", "times", "label_names",
                                               "kind", "rate_hz", "extra"]), npz_arrays, max_size=5),
       flips=st.lists(st.tuples(st.integers(-300, 300), st.integers(1, 255)), max_size=3))
def test_fuzz_npz_metadata(tmp_path_factory, arrays, flips):
    data = bytearray(npz_bytes(**arrays))
    for at, bits in flips:  # corrupt the headers: .npy magic, shape and dtype text (from the start),
        data[at % len(data)] ^= bits  # the zip's central directory and its sizes (from the end)
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(bytes(data))
    with contextlib.suppress(PipelineError):
        load_npz(path)


toml_scalars = (st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats() | st.booleans()
                | st.text(max_size=6) | st.lists(st.integers(), max_size=2))
config_keys = [(s, f.name) for s, cls in config_mod.SECTIONS.items() for f in dataclasses.fields(cls)]
# Keys with their default (a valid value), among the junk: so that what loads is round-tripped.
_defaults = {(s, k): getattr(getattr(config_mod.load_config(), s), k) for s, k in config_keys}
good_settings = st.sampled_from(sorted(sk for sk, v in _defaults.items() if isinstance(v, (bool, int, float, str))))


@must_reach(MIN_PARSED)
@FUZZ
@given(entries=st.lists(st.tuples(st.sampled_from(config_keys + [("train", "nope"), ("nope", "x")]), toml_scalars)
                        | good_settings.map(lambda sk: (sk, _defaults[sk])), max_size=4),
       seed=st.none() | toml_scalars)
def test_fuzz_toml_config(tmp_path_factory, entries, seed):
    raw: dict = {} if seed is None else {"seed": seed}
    for (section, key), value in entries:
        raw.setdefault(section, {})[key] = value
    try:
        cfg = config_mod.config_from_dict(raw, "fuzz.toml")
    except PipelineError:
        return NOT_REACHED
    # What loads, loads again from the config.toml a run saves, unchanged.
    path = tmp_path_factory.mktemp("toml") / "config.toml"
    path.write_text(config_mod.to_toml(cfg), encoding="utf-8")
    assert config_mod.to_toml(config_mod.load_config(path)) == config_mod.to_toml(cfg)


@FUZZ
@given(text=st.text(alphabet='[]=abc.#"\'\n 0123456789naif-+e', max_size=120))
def test_fuzz_toml_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text(text)
    with contextlib.suppress(PipelineError):
        config_mod.load_config(path)


at_lines = st.sampled_from([
    "===== Device info =====", "ID:         12:34", "Type:       X", "===== Sensors ======",
    "Name: acc, Max sample length: 10s, Frequencies: [62.5Hz]", "Name: x, Max sample length: zz",
    "Predictions (DSP: 0 ms., Classification: 7 ms., Anomaly: 0 ms.):", "#Classification results:",
    "    idle: nan", "    wave: 1e999", "  idle: 0.5", "  x: -inf", "OK CHUNK=32", "OK CHUNK=7", "OK 12 ",
    "TRANSFER COMPLETED 96", "RESULT -1", "RESULT 0", "Expected 96 items, but got 3", "END OUTPUT",
    "ERR: out of memory", "TIMEOUT", "Anomaly prediction: nan", "Object detection bounding boxes:",
    "  car (0.5) [ x: 1, y: 2, width: 3, height: 4 ]", "SHA-256: abc", "Input shape: [1, 64, 3]",
    "Input shape: [[[[", "Labels: [\"a\", 1]", "Input scale: nan", "Input zero point: 99999999999999999999",
    "Labels: \"abc\"", "Input shape: {}", "", ">",
]) | st.text(max_size=30)


@FUZZ
@given(lines=st.lists(at_lines, max_size=12), crlf=st.booleans())
def test_fuzz_at_replies(lines, crlf):
    text = ("\r\n" if crlf else "\n").join(lines)
    for parse in (protocol.parse_config, protocol.parse_fields, protocol.parse_results,
                  protocol.parse_static_transcript):
        with contextlib.suppress(PipelineError):
            parse(text)
        with contextlib.suppress(PipelineError):
            parse(text.encode("utf-8", "surrogatepass"))
    with contextlib.suppress(PipelineError):
        fields = protocol.parse_fields(text)
        info = parse_model_info(fields)
        assert all(isinstance(x, str) for x in info.labels) and info.input_size > 0


result_records = st.fixed_dictionaries(
    {"window_id": st.text(max_size=5) | json_values, "probabilities": st.lists(numbers | st.none(), max_size=4) | json_values},
    optional={"device_labels": st.lists(st.text(max_size=3), max_size=4) | json_values,
              "model_sha256": st.text(max_size=4) | json_values, "device": json_values},
)


@FUZZ
@given(lines=st.lists(result_records.map(lambda r: json.dumps(r)) | st.text(max_size=40), max_size=6),
       torn=st.booleans())
def test_fuzz_device_eval_jsonl(tmp_path_factory, lines, torn):
    path = tmp_path_factory.mktemp("results") / "device_eval.jsonl"
    text = "\n".join(lines)
    path.write_text(text[: len(text) // 2] if torn else text, errors="surrogatepass")
    with contextlib.suppress(PipelineError):
        records, _ = read_results(path)
        for r in records:
            assert all(0.0 <= p <= 1.0 for p in r["probabilities"])
