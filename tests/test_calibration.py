"""Model checks: predictive check table and coverage of the fast age intervals."""

from __future__ import annotations

import pytest

from chronoflow.artifact import load_model
from chronoflow.calibration import age_coverage, predictive_check


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_predictive_check_table(model, catalogue):
    table = predictive_check(catalogue, model)
    assert {"cluster", "colour_lo", "colour_hi", "n", "ks", "p_value"} <= set(table.columns)
    assert (table["n"] >= 10).all() and table["ks"].between(0, 1).all()
    # A cluster whose label the paper revised is described worse than a well-sampled one.
    worst = table.groupby("cluster")["ks"].median()
    assert worst["NGC1647"] > worst["Praesepe"]
    assert table.groupby("cluster")["fiducial_age_myr"].nunique().max() == 1


def test_intervals_cover_synthetic_truth(model):
    cov = age_coverage(model, n_clusters=4, n_stars=60, n_single=400, seed=2)
    assert cov["clusters"]["n"] == 4 and cov["single_stars"]["n"] == 400
    assert 0.85 <= cov["single_stars"]["coverage_95"] <= 1.0
    assert 0.55 <= cov["single_stars"]["coverage_68"] <= 0.85
    assert cov["clusters"]["median_abs_error_dex"] < 0.2
