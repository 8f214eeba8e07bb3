"""Every script in examples/ runs offline against ../shared data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.slow  # 25 s to 2 min each; CI runs them (its command does not deselect slow)
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, catalogue_path, tmp_path):
    # The limit only guards against a hang; it is not a speed check. Alone, the slowest example
    # (hierarchical_cluster) runs in about 25 s. Under `pytest -n 2` it shares the two cores with
    # the other worker's tests: before the workers shared torch's threads (conftest.py), it took
    # 129 s on the development machine and over 300 s on a slower CI machine.
    res = subprocess.run([sys.executable, str(script), "--catalogue", str(catalogue_path), "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "MPLBACKEND": "Agg"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert list(tmp_path.glob("*.png")), "the example should write its figure"


def test_there_are_examples():
    assert EXAMPLES
