"""Shared fixtures: the catalogue from ../shared, seeds, and an isolated cache."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CATALOGUE = Path(
    os.environ.get("CHRONOFLOW_TEST_CATALOGUE", ROOT.parent / "shared" / "catalogs" / "prot_catalogue.csv")
)


def pytest_configure(config):
    """Under pytest-xdist (the README's ``-n 2``), share torch's threads among the workers.

    Each worker process would otherwise start torch with one thread per core, and two busy workers
    then run twice as many spinning threads as there are cores: measured on 2 cores, the same dense
    age computation took 86.0 s in each of two concurrent 2-thread processes against 10.1-10.4 s
    with 1 thread each (6.3 s alone with 2). ``OMP_NUM_THREADS`` carries the share to the
    subprocesses the tests start (the CLI, the examples). Results do not depend on it: the tests
    compare floats with stated tolerances where summation order may differ.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "PYTEST_XDIST_WORKER" in os.environ:
        import torch

        threads = max(1, torch.get_num_threads() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA GPU that torch sees; without one they are skipped."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (marker gpu); torch sees none")
        for item in gpu_tests:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    """Seed every RNG and keep tests off the user's cache and environment."""
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass
    monkeypatch.setenv("CHRONOFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("CHRONOFLOW_CATALOGUE", raising=False)


@pytest.fixture(scope="session")
def catalogue_path() -> Path:
    if not SHARED_CATALOGUE.is_file():
        pytest.fail(f"test data missing: {SHARED_CATALOGUE} (clone the project beside ../shared)")
    return SHARED_CATALOGUE


@pytest.fixture(scope="session")
def catalogue(catalogue_path):
    from chronoflow.data.catalogue import load_catalogue

    return load_catalogue(catalogue_path)


def make_toy_catalogue(n_per_cluster: int = 60, seed: int = 0):
    """A small synthetic catalogue in the full schema: 7 clusters, a toy spin-down law."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    ages = {"A": 5.0, "B": 30.0, "C": 120.0, "D": 300.0, "E": 650.0, "F": 1500.0, "G": 3500.0}
    rows = []
    for i, (name, age) in enumerate(ages.items()):
        colour = rng.uniform(0.5, 2.5, n_per_cluster)
        log_p = 0.5 * np.log10(age / 100) + 0.4 * (colour - 1) + 0.6 + rng.normal(0, 0.08 + 0.1 * (age < 100), n_per_cluster)
        rows.append(
            pd.DataFrame(
                {
                    "GaiaDR3_ID": np.arange(n_per_cluster) + 1000 * (i + 1),
                    "cluster": name, "subgroup": name, "data_catalog": "toy", "Prot_source": "toy",
                    "Prot": 10**log_p, "mem_prob_hdbscan": np.nan, "mem_prob_source": rng.uniform(0.5, 1, n_per_cluster),
                    "dr3_parallax_zpt_corrected": 5.0, "dr3_ruwe": 1.0, "G_0": 14.0, "BPRP_0": colour,
                    "e_BPRP_0": rng.uniform(0.01, 0.05, n_per_cluster), "dustmap": "toy", "fiducial_age_Myr": age,
                    "cmd_exclude": 0, "dered_exclude": 0, "phot_exclude": 0,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


@pytest.fixture
def toy_catalogue():
    return make_toy_catalogue()


@pytest.fixture
def run_cli():
    """Run the ``chronoflow`` command line in this process, as the console script does.

    ``run_cli("age-stars", "s.csv", "--out", "o.csv")`` calls :func:`chronoflow.cli.main`, the
    console script's entry point (the wrapper that prints a user error as one line on stderr and
    exits with status 2), with those arguments in ``sys.argv``, inside typer's ``CliRunner``
    isolation (stdout and stderr captured apart). It returns a ``subprocess.CompletedProcess``
    (``returncode``, ``stdout``, ``stderr``) as ``subprocess.run`` would, without the seconds a
    new interpreter spends importing torch and loading the model. An exception that ``main``
    does not turn into an exit status (a traceback, status 1 for a user) propagates and fails the
    test. tests/test_cli.py keeps one test of the installed console script in a subprocess.
    """
    from typer.testing import CliRunner

    from chronoflow.cli import main

    def run(*args, env=None):
        argv = ["chronoflow", *map(str, args)]
        runner = CliRunner()
        saved_argv = sys.argv
        with runner.isolation(env=env) as (stdout, stderr, _):
            sys.argv = argv
            try:
                main()
                code = 0
            except SystemExit as stop:
                code = 0 if stop.code is None else stop.code
            finally:
                sys.argv = saved_argv
                sys.stdout.flush()
                sys.stderr.flush()
            out, err = stdout.getvalue().decode(), stderr.getvalue().decode()
        return subprocess.CompletedProcess(argv, code, out, err)

    return run
