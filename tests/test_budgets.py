"""Error-budget tables (chronoflow.analysis.budgets): known answers on tables and sweeps built here."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from chronoflow.analysis.budgets import budget_table, with_total_relative

#: The clusters of the test catalogue: (fiducial ages of its rows [Myr], what the fake sweep reports).
#: "Mid" has the larger mean age (1800 Myr) but the smaller median (300 Myr) than "Old" (1000 Myr):
#: the table orders by the median.
CLUSTERS = {
    "Old": ([1000.0, 1000.0], {"median": 3.0, "n_used": 40, "statistical": 0.03, "total": 0.13, "total_relative": 0.12}),
    "Young": ([10.0], {"median": 1.0, "n_used": 10, "statistical": 0.01, "total": 0.11, "total_relative": 0.10}),
    "Mid": ([100.0, 300.0, 5000.0], {"median": 2.5, "n_used": 25, "statistical": 0.02, "total": 0.12, "total_relative": 0.11}),
}


def _budget(name):
    v = CLUSTERS[name][1]
    rows = [  # component, systematic, uncertainty, in_total, note
        ("extinction", 0.02, 0.005, True, ""),
        ("membership", 0.03 if name != "Young" else np.nan, 0.01, name != "Mid", "every variant failed" if name == "Young" else ""),
        ("age_scale", 0.05, 0.0, True, "exact"),
        ("statistical", v["statistical"], 0.0, True, "(p84 - p16) / 2"),
        ("total", v["total"], 0.004, True, f"note of {name}"),
        ("total_relative", v["total_relative"], 0.004, True, ""),
    ]
    return pd.DataFrame(rows, columns=["component", "systematic_dex", "uncertainty_dex", "in_total", "note"])


@pytest.fixture
def fake_sweep(monkeypatch):
    """systematics_sweep replaced by a fake that returns the budgets above and records its calls."""
    import chronoflow.analysis.systematics as systematics
    import chronoflow.flows.artifact as artifact

    calls = []

    def sweep(catalogue, name, *, model, calibration_catalogue, progress, **kwargs):
        calls.append({"name": name, "model": model, "calibration_is_catalogue": calibration_catalogue is catalogue,
                      "progress": progress, **kwargs})  # fmt: skip
        v = CLUSTERS[name][1]
        nominal = SimpleNamespace(n_used=v["n_used"], summary={"median": v["median"]})
        return SimpleNamespace(budget=_budget(name), nominal=nominal, settings={"target_in_calibration_set": f"{name} removed"})

    monkeypatch.setattr(systematics, "systematics_sweep", sweep)
    monkeypatch.setattr(artifact, "resolve_model", lambda m: ("resolved", m))
    return calls


def _catalogue():
    return pd.DataFrame([(name, age) for name, (ages, _) in CLUSTERS.items() for age in ages], columns=["cluster", "fiducial_age_Myr"])


def test_budget_table_tabulates_each_sweep(fake_sweep):
    cat = _catalogue()
    table = budget_table(cat, model="my_model.pt", jobs=1, progress=False, n_calibration=3, seed=7)
    # every cluster once, youngest first by its median fiducial age; one sweep each, the kwargs passed on
    assert table["cluster"].tolist() == ["Young", "Mid", "Old"]
    assert [c["name"] for c in fake_sweep] == ["Young", "Mid", "Old"]
    for c in fake_sweep:
        assert c["model"] == ("resolved", "my_model.pt") and c["calibration_is_catalogue"] and c["progress"] is False
        assert c["n_calibration"] == 3 and c["seed"] == 7
    row = table.set_index("cluster")
    np.testing.assert_array_equal(row["n_used"], [10, 25, 40])
    np.testing.assert_allclose(row["log10_age_median"], [1.0, 2.5, 3.0], rtol=0, atol=0)
    np.testing.assert_allclose(row["age_myr"], [10.0, 316.22776601683796, 1000.0], rtol=1e-12)  # 10 ** median
    np.testing.assert_allclose(row["statistical_dex"], [0.01, 0.02, 0.03], rtol=0, atol=0)
    np.testing.assert_allclose(row["extinction_dex"], 0.02, rtol=0, atol=0)
    np.testing.assert_allclose(row["extinction_unc_dex"], 0.005, rtol=0, atol=0)
    assert row["extinction_in_total"].tolist() == [True, True, True]
    assert np.isnan(row.loc["Young", "membership_dex"]) and row.loc["Mid", "membership_dex"] == 0.03
    assert row["membership_in_total"].tolist() == [True, False, True]
    np.testing.assert_allclose(row["total_dex"], [0.11, 0.12, 0.13], rtol=0, atol=0)
    np.testing.assert_allclose(row["total_relative_dex"], [0.10, 0.11, 0.12], rtol=0, atol=0)
    np.testing.assert_allclose(row["total_unc_dex"], 0.004, rtol=0, atol=0)
    assert row["total_note"].tolist() == ["note of Young", "note of Mid", "note of Old"]
    assert row["calibration_set"].tolist() == ["Young removed", "Mid removed", "Old removed"]
    # components the sweeps did not report get no columns; those they did, all three
    assert not any(c.startswith(("calibration_dex", "model_", "out_of_sample_")) for c in table.columns)
    assert {"age_scale_dex", "age_scale_unc_dex", "age_scale_in_total"} <= set(table.columns)
    # clusters= picks and orders the clusters as given
    again = budget_table(cat, ["Old", "Young"], jobs=1, progress=False)
    assert again["cluster"].tolist() == ["Old", "Young"] and fake_sweep[-1]["model"] == ("resolved", None)


def test_with_total_relative_known_answers():
    old = pd.DataFrame({"total_dex": [0.13, 0.13, 0.05], "age_scale_dex": [0.05, 0.05, 0.1], "age_scale_in_total": [True, False, True]})
    got = with_total_relative(old)
    # sqrt(0.13^2 - 0.05^2) = 0.12; an age scale outside the total is not taken out; never below 0
    np.testing.assert_allclose(got["total_relative_dex"], [0.12, 0.13, 0.0], rtol=1e-12, atol=1e-15)
    assert "total_relative_dex" not in old.columns  # the input is left as it was
    newer = got.assign(total_relative_dex=[1.0, 2.0, 3.0])
    assert with_total_relative(newer) is newer  # a table that has the column is returned as it is
    no_scale = with_total_relative(pd.DataFrame({"total_dex": [0.07]}))
    assert no_scale["total_relative_dex"].tolist() == [0.07]


def test_budget_table_of_a_real_sweep(catalogue):
    """One catalogue cluster, through the real sweep with only the age-scale and model terms: the
    age-scale term is the scale shift itself (0.05 dex: the whole age scale moves with it), and the
    total without it is sqrt(total^2 - 0.05^2)."""
    from chronoflow.analysis.systematics import systematics_sweep
    from chronoflow.flows.artifact import load_model

    light = {"reddening_sigma": 0.0, "membership_thresholds": (), "alt_membership": None, "age_scale_dex": 0.05, "n_calibration": 0}
    (row,) = budget_table(catalogue, ["NGC6811"], jobs=1, progress=False, **light).to_dict("records")
    direct = systematics_sweep(catalogue, "NGC6811", model=load_model(), calibration_catalogue=catalogue, progress=False, **light)
    b = direct.budget.set_index("component")
    assert row["cluster"] == "NGC6811" and row["n_used"] == direct.nominal.n_used
    assert row["log10_age_median"] == pytest.approx(direct.nominal.summary["median"], abs=1e-9)
    assert row["age_myr"] == pytest.approx(10 ** row["log10_age_median"], rel=1e-12)
    assert row["age_scale_dex"] == pytest.approx(0.05, abs=1e-3)  # exact shift of the standardization, float32 flow
    assert row["total_dex"] == pytest.approx(b.loc["total", "systematic_dex"], abs=1e-9)
    assert row["total_relative_dex"] == pytest.approx(np.sqrt(row["total_dex"] ** 2 - row["age_scale_dex"] ** 2), abs=1e-9)
    assert row["statistical_dex"] == pytest.approx(b.loc["statistical", "systematic_dex"], abs=1e-9)
    assert "extinction_dex" not in row and "calibration_dex" not in row  # not swept here
