"""Systematics sweeps: zero-width sweep, the extinction sign, quadrature total, cached refits."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from chronoflow.artifact import load_model
from chronoflow.systematics import refit_count, systematics_sweep


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_zero_width_sweep_has_zero_systematic(model, catalogue):
    res = systematics_sweep(catalogue, "NGC6811", model=model, reddening_offsets=(0.0, 0.0), membership_thresholds=(),
                            alt_membership=None, progress=False)
    budget = res.budget.set_index("component")["systematic_dex"]
    assert budget["extinction"] == 0.0
    assert budget["total"] == pytest.approx(budget["statistical"], abs=1e-12)


def test_more_reddening_makes_an_fgk_cluster_older(model, catalogue):
    res = systematics_sweep(catalogue, "Praesepe", model=model, reddening_offsets=(-0.03, 0.03), membership_thresholds=(),
                            alt_membership=None, progress=False)
    shifts = res.variants.set_index("variant")["shift_dex"]
    # Bluer intrinsic colours at fixed periods: the model expects them to spin faster, so older.
    assert shifts["E(BP-RP) +0.03 mag"] > 0 > shifts["E(BP-RP) -0.03 mag"]


def test_total_is_the_quadrature_sum_and_refits_are_cached(model, catalogue, tmp_path):
    kwargs = dict(model=model, calibration_catalogue=catalogue, n_calibration=1, n_seeds=1, fine_tune_epochs=1,
                  cache=tmp_path, progress=False)
    before = refit_count()
    res = systematics_sweep(catalogue, "NGC6811", **kwargs)
    assert refit_count() == before + 2
    again = systematics_sweep(catalogue, "NGC6811", **kwargs)
    assert refit_count() == before + 2  # both refits came from the cache
    np.testing.assert_array_equal(res.variants["log10_age_median"], again.variants["log10_age_median"])
    budget = res.budget.set_index("component")["systematic_dex"]
    parts = budget.drop(["statistical", "total"])
    assert set(parts.index) == {"extinction", "membership", "calibration", "model"}
    assert budget["total"] == pytest.approx(np.sqrt(budget["statistical"] ** 2 + (parts**2).sum()))
    stat = (res.nominal.summary["p84"] - res.nominal.summary["p16"]) / 2
    assert budget["statistical"] == pytest.approx(stat)


def test_cli_json(catalogue_path):
    res = subprocess.run([sys.executable, "-m", "chronoflow.cli", "sweep", str(catalogue_path), "--cluster", "NGC6811",
                          "--no-refits", "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert set(payload["components"]) == {"extinction", "membership"}
    assert payload["total_dex"] >= payload["statistical_dex"] > 0
