"""The `tinyml` CLI: every stage has --help, startup is light, bad input is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tinyml_cli import STAGES, main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tinyml_cli", *args], capture_output=True, text=True,
        cwd=cwd or ROOT, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )


def test_help_lists_every_stage():
    out = run_cli("--help")
    assert out.returncode == 0
    for stage in ("train", "quantize", "flash", "eval", "monitor", "report", "audit", "emulate", "ports"):
        assert stage in out.stdout
    assert set(STAGES) >= {"train", "quantize", "flash", "eval", "monitor", "report"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([stage, "--help"])
    assert exit_.value.code == 0
    assert "usage: tinyml " + stage in capsys.readouterr().out


def test_startup_does_not_import_tensorflow():
    code = (
        "import sys, tinyml_cli; tinyml_cli.build_parser(); "
        "heavy = [m for m in ('tensorflow', 'keras', 'tflite_micro', 'ai_edge_litert', 'sklearn', 'matplotlib') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_unknown_stage_is_a_usage_error():
    out = run_cli("bake")
    assert out.returncode == 2 and "invalid choice: 'bake'" in out.stderr


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_bad_config_key_exits_2_naming_it(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepoch = 3\n")
    out = run_cli("train", "--config", str(cfg), "--run", str(tmp_path / "run"))
    assert out.returncode == 2
    assert "unknown key 'epoch'" in _one_error_line(out.stderr)
    assert "hint: known keys" in out.stderr


def test_missing_dataset_exits_2(tmp_path):
    out = run_cli("audit", "--dataset", str(tmp_path / "nowhere"), "--run", str(tmp_path / "run"))
    assert out.returncode == 2
    assert "no such file or folder" in _one_error_line(out.stderr)


def test_malformed_dataset_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("recording,label,t,ax\nr1,a,0,1\nr1,a,0.1,oops\n")
    out = run_cli("audit", "--dataset", str(bad), "--run", str(tmp_path / "run"))
    assert out.returncode == 2
    line = _one_error_line(out.stderr)
    assert "bad.csv" in line and "line 3" in line and "'ax'" in line


def test_quantize_without_training_exits_2(tmp_path):
    out = run_cli("quantize", "--run", str(tmp_path / "empty"))
    assert out.returncode == 2
    assert "float.keras" in _one_error_line(out.stderr)
