"""The model-error term: calibration on leave-one-out residuals, nested coverage, error budget, flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chronoflow.errors import ChronoflowError
from chronoflow.inference.model_error import ModelErrorCurve, calibrate_model_error, error_budget
from chronoflow.analysis.validation import calibrate_loo, loo_metrics


def test_calibration_recovers_an_injected_age_dependent_scatter():
    """Residuals drawn with sigma 0.4 dex below log age 1.5 and 0.05 dex above: the curve finds both."""
    rng = np.random.default_rng(3)
    ages = rng.uniform(0.2, 3.6, 400)
    true = np.where(ages < 1.5, 0.4, 0.05)
    stat = np.full_like(ages, 0.02)
    res = rng.normal(0, np.hypot(true, stat))
    curve = calibrate_model_error(ages, res, stat, bandwidth_dex=0.2)
    assert curve(0.6) == pytest.approx(0.4, rel=0.2)
    assert curve(3.0) == pytest.approx(0.05, rel=0.25)
    # residuals fully explained by the statistical errors leave no model term
    flat = calibrate_model_error(ages, rng.normal(0, 0.05, 400), np.full(400, 0.05), bandwidth_dex=0.5)
    assert max(flat.sigma_dex) < 0.03  # adds < 17 % in quadrature to the 0.05 dex statistical error


def test_curve_round_trip_and_bad_input():
    curve = ModelErrorCurve((0.0, 1.0, 2.0), (0.3, 0.1, 0.05), 0.5, 10)
    assert ModelErrorCurve.from_dict(curve.to_dict()) == curve
    assert curve(-1.0) == 0.3 and curve(5.0) == 0.05 and curve(1.5) == pytest.approx(0.075)
    with pytest.raises(ChronoflowError, match=">= 3 clusters"):
        calibrate_model_error([1.0, 2.0], [0.1, 0.2], [0.01, 0.01])


def test_error_budget_parts_and_flags():
    curve = ModelErrorCurve((0.0, 4.0), (0.1, 0.1))
    parts, flag = error_budget(2.0, 1.98, 2.04, [1.99, 2.01, 2.03], curve, (0.2, 3.6))
    assert parts["statistical"] == pytest.approx(0.03)
    assert parts["ensemble"] == pytest.approx(np.std([1.99, 2.01, 2.03], ddof=1))
    assert parts["model"] == pytest.approx(np.hypot(parts["ensemble"], 0.1))
    assert parts["total"] == pytest.approx(np.hypot(0.03, parts["model"])) and flag == ""
    # a posterior reaching beyond the oldest calibrator is flagged; a median beyond it adds its distance
    parts, flag = error_budget(3.8, 3.75, 3.85, None, curve, (0.2, 3.6))
    assert flag == "age_above_calibration" and parts["extrapolation"] == pytest.approx(0.2)
    assert parts["total"] > 0.2
    parts, flag = error_budget(0.1, 0.0, 0.3, None, None, (0.2, 3.6))
    assert flag == "age_below_calibration;model_error_uncalibrated" and parts["calibrated"] == 0.0


def _loo_table(n=23, seed=0):
    rng = np.random.default_rng(seed)
    ages = np.sort(rng.uniform(0.3, 3.5, n))
    res = rng.normal(0, np.where(ages < 1.3, 0.4, 0.06))
    return pd.DataFrame({
        "cluster": [f"c{i}" for i in range(n)], "fiducial_age_myr": 10 ** (ages - res), "log10_age_median": ages,
        "log10_age_p16": ages - 0.02, "log10_age_p84": ages + 0.02, "residual_dex": res, "revised_in_paper": False,
        "statistical_dex": 0.02, "ensemble_dex": 0.01, "calibrated_lo": 0.2, "calibrated_hi": 3.6,
        "member_medians": "",
    })  # fmt: skip


def test_nested_calibration_never_uses_the_cluster_itself():
    table = _loo_table()
    a, _ = calibrate_loo(table)
    changed = table.copy()
    changed.loc[5, "residual_dex"] = 3.0  # a wild residual of cluster 5 only
    b, _ = calibrate_loo(changed)
    assert a.loc[5, "calibrated_dex"] == pytest.approx(b.loc[5, "calibrated_dex"], abs=1e-9)
    assert not b.loc[5, "inside_total"]
    assert b.loc[6, "calibrated_dex"] > a.loc[6, "calibrated_dex"]  # its neighbours see it
    m = loo_metrics(a)
    assert m["n_all"] == 23 and m["n_interior"] == 21
    assert 0 <= m["coverage_total_all"] <= 1 and m["coverage_total_all"] > m["coverage_statistical_all"]


def test_revised_clusters_do_not_enter_the_calibration():
    table = _loo_table()
    table.loc[10, "revised_in_paper"] = True
    a, curve_a = calibrate_loo(table)
    table.loc[10, "residual_dex"] = 2.0
    b, curve_b = calibrate_loo(table)
    assert curve_a == curve_b
    assert loo_metrics(b)["n_all"] == 22
