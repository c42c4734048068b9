"""CI fails on a skip it should not have (tests/conftest.py): pytest run for real, in a
subprocess, on a small generated test file, with CI=true and without."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

SAMPLE = '''
import pytest

def test_passes():
    assert 1 + 1 == 2

@pytest.mark.skipif(True, reason="g++ is not installed: the C++ core cannot be compiled here")
def test_marked_skip_for_a_missing_tool():
    pass

def test_skip_in_the_body():
    pytest.skip("arm-none-eabi-gcc not installed")

@pytest.fixture
def compiler():
    pytest.skip("needs the Debian packages qemu-system-arm")

def test_skip_in_a_fixture(compiler):
    pass

@pytest.mark.skipif(True, reason="set TINYML_EI_TEST_INFERENCE to Edge Impulse's test_inference.py")
def test_edge_impulse_script():
    pass

@pytest.mark.xfail(reason="an expected failure is not a skip", strict=True)
def test_expected_failure():
    assert False
'''

IMPORT_SKIP = '''
import pytest
pytest.importorskip("a_module_nobody_installed")

def test_never_collected():
    pass
'''


def run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "test_import_skip.py").write_text(IMPORT_SKIP)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    # The project's tests/conftest.py, loaded as a plugin into a pytest rooted at tmp_path.
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT)])
    return subprocess.run([sys.executable, "-m", "pytest", "-v", "-rA", "-p", "no:cacheprovider",
                           "-p", "no:hypothesispytest", "-p", "conftest", "--continue-on-collection-errors"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def outcomes(proc) -> dict[str, str]:
    """{test name: PASSED/FAILED/ERROR/SKIPPED/XFAIL} from pytest -v's lines."""
    found = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"test_sample\.py::(\w+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL)", line)
        if m:
            assert m[1] not in found, f"{m[1]} reported twice:\n{proc.stdout}"
            found[m[1]] = m[2]
    return found


def test_without_ci_a_skip_is_a_skip(tmp_path):
    proc = run_pytest(tmp_path, None)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert outcomes(proc) == {
        "test_passes": "PASSED", "test_marked_skip_for_a_missing_tool": "SKIPPED", "test_skip_in_the_body": "SKIPPED",
        "test_skip_in_a_fixture": "SKIPPED", "test_edge_impulse_script": "SKIPPED", "test_expected_failure": "XFAIL",
    }, proc.stdout[-3000:]
    assert "CI=true" not in proc.stdout and "1 passed, 5 skipped, 1 xfailed" in proc.stdout  # the module too


def test_with_ci_a_skip_for_a_missing_tool_fails(tmp_path):
    proc = run_pytest(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout[-3000:]
    # A skip mark or a skip in a fixture happens at setup: pytest reports it as an error.
    assert outcomes(proc) == {
        "test_passes": "PASSED", "test_marked_skip_for_a_missing_tool": "ERROR", "test_skip_in_the_body": "FAILED",
        "test_skip_in_a_fixture": "ERROR", "test_edge_impulse_script": "SKIPPED", "test_expected_failure": "XFAIL",
    }, proc.stdout[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith(("ERROR ", "FAILED "))]
    assert summary == [
        "ERROR test_import_skip.py - CI=true and this skipped: could not import 'a_module_nobody_installed': "
        "No module named 'a_module_nobody_installed'",
        "ERROR test_sample.py::test_marked_skip_for_a_missing_tool - CI=true and this skipped: g++ is not installed: "
        "the C++ core cannot be compiled here",
        "ERROR test_sample.py::test_skip_in_a_fixture - CI=true and this skipped: needs the Debian packages "
        "qemu-system-arm",
        "FAILED test_sample.py::test_skip_in_the_body - CI=true and this skipped: arm-none-eabi-gcc not installed",
    ], proc.stdout[-3000:]
    assert "(only the TINYML_EI_TEST_INFERENCE tests may skip in CI): install the missing one" in proc.stdout
