"""CLI: version, help, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from chronoflow import __version__


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "chronoflow.cli", *args], capture_output=True, text=True, env=env)


def test_version_and_help():
    res = _run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"chronoflow {__version__}"
    res = _run("--help")
    assert res.returncode == 0 and "catalogue" in res.stdout


def test_error_is_one_line_without_traceback(tmp_path):
    res = _run("catalogue", "check", str(tmp_path / "missing.csv"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("error: catalogue file not found")


def test_catalogue_summary(catalogue_path):
    res = _run("catalogue", "summary", str(catalogue_path))
    assert res.returncode == 0, res.stderr
    assert "Pleiades" in res.stdout and "7271" in res.stdout
