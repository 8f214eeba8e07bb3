"""Fast age posteriors: recovery, normalization, adaptive-vs-dense accuracy, flags and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from chronoflow.inference.ages import cluster_age, cluster_ages, star_ages
from chronoflow.flows.artifact import load_model
from chronoflow.data.catalogue import training_sample
from chronoflow.errors import ChronoflowError, DomainError
from chronoflow.flows.flow import make_context
from chronoflow.inference.posterior import age_grid, quantiles


@pytest.fixture(scope="module")
def model():
    return load_model()


def _synthetic_cluster(model, catalogue, age_myr, n=150, seed=0):
    rng = np.random.default_rng(seed)
    colours = rng.choice(catalogue.loc[catalogue["cluster"] == "Praesepe", "BPRP_0"].dropna().to_numpy(), n)
    colours = colours[(colours > 0.4) & (colours < 3.0)]
    err = np.full(len(colours), 0.02)
    log_p = model.sample(make_context(age_myr, colours, err), 1, seed=seed)[0]
    return pd.DataFrame({"Prot": 10**log_p, "BPRP_0": colours, "e_BPRP_0": err, "mem_prob_source": 1.0, "cluster": "synthetic"})


@pytest.mark.parametrize(("age_myr", "seed"), [(40.0, 1), (300.0, 2), (1500.0, 3)])
def test_synthetic_cluster_age_is_recovered(model, catalogue, age_myr, seed):
    df = _synthetic_cluster(model, catalogue, age_myr, seed=seed)
    res = cluster_age(df, model=model, f_out=0.0)
    lo, hi = quantiles(res.posterior, res.grid, (0.025, 0.975))
    assert lo <= np.log10(age_myr) <= hi, (lo, np.log10(age_myr), hi)
    assert res.n_used == res.n_rows == len(df)


def test_posteriors_are_normalized(model, catalogue):
    res = cluster_age(catalogue, "Pleiades", model=model)
    assert np.trapezoid(res.posterior, res.grid) == pytest.approx(1.0, abs=1e-9)
    sub = catalogue[catalogue["cluster"] == "M37"].dropna(subset=["BPRP_0"]).head(40)
    _, post = star_ages(sub, model=model, return_posteriors=True)
    np.testing.assert_allclose(np.trapezoid(post, age_grid(), axis=1), 1.0, atol=1e-9)


def test_adaptive_matches_dense_for_stars(model, catalogue):
    rng = np.random.default_rng(0)
    sub = catalogue.iloc[rng.choice(len(catalogue), 400, replace=False)]
    fast = star_ages(sub, model=model)
    dense = star_ages(sub, model=model, method="dense")
    for col in ("log10_age_p16", "log10_age_median", "log10_age_p84"):
        diff = np.abs(fast[col] - dense[col]).to_numpy()
        assert np.nanmax(diff) < 0.005, (col, np.nanmax(diff))


@pytest.mark.slow
def test_adaptive_matches_dense_for_every_catalogue_star(model, catalogue):
    # The default node count is set by this test: every star of the shared catalogue.
    fast = star_ages(catalogue, model=model)
    dense = star_ages(catalogue, model=model, method="dense")
    for col in ("log10_age_p16", "log10_age_median", "log10_age_p84"):
        assert fast[col].isna().equals(dense[col].isna())
        diff = np.abs(fast[col] - dense[col]).to_numpy()
        assert np.nanmax(diff) < 0.005, (col, np.nanmax(diff))


def _assert_adaptive_matches_dense(model, catalogue, name):
    fast = cluster_age(catalogue, name, model=model)
    dense = cluster_age(catalogue, name, model=model, method="dense")
    for key in ("p16", "median", "p84"):
        assert abs(fast.summary[key] - dense.summary[key]) < 0.005, (name, key)
    if dense.member_medians is not None:
        np.testing.assert_allclose(fast.member_medians, dense.member_medians, atol=0.005, err_msg=name)
    np.testing.assert_allclose(fast.stars["p_outlier"], dense.stars["p_outlier"], atol=0.005, err_msg=name)


@pytest.mark.parametrize("name", ["Pleiades", "NGC6811", "HPer"])
def test_adaptive_matches_dense_for_clusters(model, catalogue, name):
    _assert_adaptive_matches_dense(model, catalogue, name)


@pytest.mark.slow
def test_adaptive_matches_dense_for_every_catalogue_cluster(model, catalogue):
    for name in sorted(catalogue["cluster"].unique()):
        _assert_adaptive_matches_dense(model, catalogue, name)


@pytest.mark.parametrize("stride", [0, 1.5, -2])
def test_refine_stride_must_be_a_positive_integer(model, catalogue, stride):
    with pytest.raises(DomainError, match="refine_stride"):
        cluster_age(catalogue, "Pleiades", model=model, refine_stride=stride)


def test_star_rows_are_kept_and_flagged(model):
    df = pd.DataFrame(
        {"Prot": [8.0, np.nan, -1.0, 8.0, 8.0], "BPRP_0": [1.2, 1.2, 1.2, 9.0, 1.2], "e_BPRP_0": [0.02, 0.02, 0.02, 0.02, 0.0],
         "name": list("abcde")},
        index=[10, 11, 12, 13, 14],
    )  # fmt: skip
    out = star_ages(df, model=model)
    assert list(out.index) == [10, 11, 12, 13, 14] and out["name"].tolist() == list("abcde")
    assert out["flag"].tolist() == ["", "missing_value", "nonpositive", "colour_outside_domain;colour_impossible", "nonpositive"]
    assert np.isfinite(out.loc[10, "log10_age_median"])
    assert out.loc[[11, 12, 13, 14], "log10_age_median"].isna().all()  # out of the domain: no number
    assert out.loc[10, "log10_age_p16"] < out.loc[10, "log10_age_median"] < out.loc[10, "log10_age_p84"]
    assert out.loc[10, "age_myr_median"] == pytest.approx(10 ** out.loc[10, "log10_age_median"])
    assert "log10_age_median" not in df.columns  # caller's frame untouched


# One row per domain edge: (Prot [d], BPRP_0 [mag], e_BPRP_0 [mag]) and the flag the rule gives.
EDGE_ROWS = [
    ((8.0, 1.2, 0.02), ""),
    ((500.0, 1.2, 0.02), "period_outside_domain"),  # beyond the training stars' 172 d
    ((0.01, 1.2, 0.02), "period_outside_domain"),  # below their 0.031 d
    ((8.0, 4.5, 0.02), "colour_outside_domain"),  # beyond the training colours (4.28 mag), a colour stars have
    ((8.0, -0.5, 0.02), "colour_outside_domain"),
    ((8.0, 1.2, 0.9), "error_above_domain"),
    ((8.0, 1.2, 0.001), "error_below_domain"),
    ((np.inf, 1.2, 0.02), "missing_value"),
    ((8.0, 1.2, -0.1), "nonpositive"),
]


def test_every_domain_edge_is_flagged_and_aged_by_one_rule(model, catalogue):
    """star_ages and cluster_age apply the same rule: out-of-domain rows get no age (NaN) and
    are not used, unless include_out_of_domain; a too-small error is aged at the domain's floor."""
    rows = pd.DataFrame([r for r, _ in EDGE_ROWS], columns=["Prot", "BPRP_0", "e_BPRP_0"])
    rows["mem_prob_source"], rows["cluster"] = 1.0, "edges"
    expected = [f for _, f in EDGE_ROWS]
    out = star_ages(rows, model=model)
    assert out["flag"].tolist() == expected
    aged = [f in ("", "error_below_domain") for f in expected]
    assert np.isfinite(out["log10_age_median"]).tolist() == aged
    # The floor: an error below the domain ages exactly as one at the floor does.
    floor = 10 ** model.domain.log10_e_bprp0[0]
    at_floor = star_ages(rows.iloc[[6]].assign(e_BPRP_0=floor), model=model)
    assert out["log10_age_median"].iloc[6] == pytest.approx(at_floor["log10_age_median"].iloc[0], abs=1e-12)
    # cluster_age uses exactly the rows star_ages ages.
    res = cluster_age(rows, model=model, cuts=False)
    assert res.stars["used"].tolist() == aged and res.stars["flag"].tolist() == expected
    # include_out_of_domain: both age the out-of-domain rows (extrapolated, still flagged).
    wide = star_ages(rows, model=model, include_out_of_domain=True)
    usable = [f not in ("missing_value", "nonpositive") for f in expected]
    assert np.isfinite(wide["log10_age_median"]).tolist() == usable
    assert all(w.startswith(f) for w, f in zip(wide["flag"], expected))
    res = cluster_age(rows, model=model, cuts=False, include_out_of_domain=True)
    assert res.stars["used"].tolist() == usable


def test_ages_beyond_the_calibration_clusters_are_flagged_and_open(model):
    """A K dwarf spinning at 60 d is older than M67 (3.87 Gyr): its interval reaches beyond the
    calibration ages, says so, and is open there (its upper end is the grid's end)."""
    df = pd.DataFrame({"Prot": [60.0, 8.0], "BPRP_0": [1.5, 1.2], "e_BPRP_0": [0.02, 0.02]})
    out, dens = star_ages(df, model=model, return_posteriors=True)
    grid = age_grid()
    assert "age_above_calibration" in out["flag"].iloc[0] and out["flag"].iloc[1] == ""
    assert out["log10_age_p84"].iloc[0] == grid[-1] and out["age_myr_p84"].iloc[0] == pytest.approx(10 ** grid[-1])
    # The median is the posterior's own, and its 84 % point lies beyond the calibration ages.
    p16, med, p84 = quantiles(dens[0], grid)
    assert out["log10_age_median"].iloc[0] == pytest.approx(med, abs=1e-12) and p84 > model.domain.log10_age_myr[1]
    assert out["log10_age_p16"].iloc[0] == pytest.approx(p16, abs=1e-12)
    assert out["log10_age_p84"].iloc[1] == pytest.approx(quantiles(dens[1], grid)[2], abs=1e-12)


def test_duplicate_index_labels_do_not_mark_cut_rows_used(model, catalogue):
    """A row removed by the cuts stays unused even when a kept row shares its index label."""
    ple = catalogue[catalogue["cluster"] == "Pleiades"].copy()
    kept = training_sample(ple)[0].index
    cut = ple.index[~ple.index.isin(kept)]
    assert len(cut) > 0
    dup = ple.copy()
    dup.index = np.where(dup.index.isin(cut), kept[0], dup.index)
    ref, res = cluster_age(ple, model=model), cluster_age(dup, model=model)
    assert res.n_used == ref.n_used and res.stars["used"].tolist() == ref.stars["used"].tolist()
    assert res.summary["median"] == pytest.approx(ref.summary["median"], abs=1e-12)


@pytest.mark.parametrize(
    ("grid", "match"),
    [([1.0, 0.5, 2.0], "strictly increasing"), ([0.0, np.nan, 2.0], "finite"), ([1.0, 2.0], "at least 3"),
     ([[0.0, 1.0, 2.0]], "1-D"), ("abc", "numbers")],
)  # fmt: skip
def test_a_bad_grid_is_refused_in_one_line(model, catalogue, grid, match):
    star = pd.DataFrame({"Prot": [8.0], "BPRP_0": [1.2], "e_BPRP_0": [0.02]})
    for call in (lambda: star_ages(star, model=model, grid=grid), lambda: cluster_age(catalogue, "Pleiades", model=model, grid=grid)):
        with pytest.raises(DomainError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_a_prior_zero_everywhere_is_refused(model, catalogue):
    star = pd.DataFrame({"Prot": [8.0], "BPRP_0": [1.2], "e_BPRP_0": [0.02]})
    nowhere = lambda g: np.full_like(g, -np.inf)  # noqa: E731
    with pytest.raises(DomainError, match="prior is zero"):
        star_ages(star, model=model, prior=nowhere)
    with pytest.raises(DomainError, match="zero or undefined at every age"):
        cluster_age(catalogue, "Pleiades", model=model, prior=nowhere)


def test_priors(model):
    df = pd.DataFrame({"Prot": [5.0], "BPRP_0": [1.0], "e_BPRP_0": [0.02]})
    logflat = star_ages(df, model=model)["log10_age_median"].iloc[0]
    flat = star_ages(df, model=model, prior="flat")["log10_age_median"].iloc[0]
    assert flat > logflat  # a prior flat in age favours old ages
    custom = star_ages(df, model=model, prior=lambda g: np.where(g < 2, 0.0, -np.inf))["log10_age_p84"].iloc[0]
    assert custom <= 2.0 + 1e-9
    with pytest.raises(DomainError, match="unknown prior"):
        star_ages(df, model=model, prior="jeffreys")


def test_cluster_errors(model, catalogue):
    with pytest.raises(ChronoflowError, match="unknown cluster 'Atlantis'; the table holds: APer"):
        cluster_age(catalogue, "Atlantis", model=model)
    with pytest.raises(ChronoflowError, match=r"holds 27 clusters .*choose one with cluster=NAME"):
        cluster_age(catalogue, model=model)
    empty = catalogue[catalogue["cluster"] == "NGC752"].assign(Prot=np.nan)
    with pytest.raises(ChronoflowError, match=r"no usable star in cluster 'NGC752' \(8 rows: \{'missing_value': 8\}\)"):
        cluster_age(empty, model=model)
    bad = catalogue[catalogue["cluster"] == "NGC752"].assign(mem_prob_source=1.5)
    with pytest.raises(ChronoflowError, match=r"column 'mem_prob_source': 8 used stars .*allowed: a probability in \[0, 1\]"):
        cluster_age(bad, model=model)
    with pytest.raises(ChronoflowError, match="missing column 'e_BPRP_0'"):
        cluster_age(catalogue.drop(columns="e_BPRP_0"), "Pleiades", model=model)
    with pytest.raises(DomainError, match="f_out must be in"):
        cluster_age(catalogue, "Pleiades", model=model, f_out=1.0)


def test_cluster_counts_and_outliers(model, catalogue):
    res = cluster_age(catalogue, "Pleiades", model=model)
    assert res.n_rows == 864 and res.n_rows == len(res.stars)
    assert res.n_used == int(res.stars["used"].sum()) < res.n_rows  # the cuts remove some rows
    used = res.stars[res.stars["used"]]
    assert used["p_outlier"].between(0, 1).all() and res.stars.loc[~res.stars["used"], "p_outlier"].isna().all()
    # Inject field stars far from the sequence: they come out as likely outliers.
    field = used.head(5).assign(GaiaDR3_ID=-np.arange(1, 6), Prot=120.0, BPRP_0=0.9)
    res2 = cluster_age(pd.concat([catalogue, field]), "Pleiades", model=model)
    assert (res2.stars.tail(5)["p_outlier"] > 0.9).all()


def test_many_clusters_and_subgroups(model, catalogue):
    summary, results = cluster_ages(catalogue, ["Pleiades", "Hyades"], model=model)
    assert summary["cluster"].tolist() == ["Pleiades", "Hyades"] and set(results) == {"Pleiades", "Hyades"}
    assert summary.loc[0, "log10_age_median"] < summary.loc[1, "log10_age_median"]
    sub = catalogue[catalogue["cluster"] == "ScoCen"]
    summary, _ = cluster_ages(sub, by="subgroup", model=model)
    assert len(summary) == sub["subgroup"].nunique()


def test_inference_data(model, catalogue):
    """The draws follow the grid posterior: its 16/50/84 % points, and its whole CDF (KS test)."""
    from scipy import stats

    from chronoflow.inference.posterior import cdf

    res = cluster_age(catalogue, "Hyades", model=model)
    n = 4000
    idata = res.to_inference_data(n_draws=n, seed=1)
    draws = idata.posterior["log10_age"].to_numpy()
    assert draws.shape == (1, n) and idata.attrs["cluster"] == "Hyades"
    draws = draws[0]
    assert res.grid[0] <= draws.min() and draws.max() <= res.grid[-1]
    # The share of draws below each reported percentile is binomial: sd sqrt(q (1 - q) / n) <= 0.0079
    # for n = 4000; allow 4 sd. (A quantile comparison in dex would need the density; this does not.)
    for q, key in ((0.16, "p16"), (0.5, "median"), (0.84, "p84")):
        share = np.mean(draws <= res.summary[key])
        assert share == pytest.approx(q, abs=4 * np.sqrt(q * (1 - q) / n)), (key, share)
    grid_cdf = cdf(res.posterior, res.grid)
    assert stats.kstest(draws, lambda v: np.interp(v, res.grid, grid_cdf)).pvalue > 1e-3
    # seeded: the same seed gives the same draws, another seed other draws (from the same posterior)
    same = res.to_inference_data(n_draws=n, seed=1).posterior["log10_age"].to_numpy()[0]
    other = res.to_inference_data(n_draws=n, seed=2).posterior["log10_age"].to_numpy()[0]
    np.testing.assert_array_equal(draws, same)
    assert not np.any(draws == other)
    assert stats.ks_2samp(draws, other).pvalue > 1e-3


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "chronoflow.cli", *args], capture_output=True, text=True, env=env)


def test_cli_json_schema(catalogue_path, tmp_path):
    res = _cli("age-cluster", str(catalogue_path), "--cluster", "Hyades", "--json", "--plot", str(tmp_path / "h.png"))
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)  # exactly one JSON object on stdout
    assert set(payload) == {"cluster", "n_rows", "n_used", "log10_age_myr", "age_myr", "method", "model", "error_dex", "flag"}
    e = payload["error_dex"]
    assert set(e) == {"statistical", "model", "total"} and all(isinstance(v, float) for v in e.values())
    assert e["statistical"] == pytest.approx((payload["log10_age_myr"]["p84"] - payload["log10_age_myr"]["p16"]) / 2)
    assert e["total"] >= e["statistical"] and e["total"] >= e["model"] and isinstance(payload["flag"], str)
    assert payload["cluster"] == "Hyades" and payload["method"] == "fast" and isinstance(payload["model"], str)
    assert isinstance(payload["n_rows"], int) and isinstance(payload["n_used"], int)
    for key in ("log10_age_myr", "age_myr"):
        assert set(payload[key]) == {"median", "p16", "p84"}
        assert payload[key]["p16"] < payload[key]["median"] < payload[key]["p84"]
    assert (tmp_path / "h.png").stat().st_size > 10_000


def test_cli_age_stars(tmp_path):
    src = tmp_path / "stars.csv"
    pd.DataFrame({"Prot": [3.0, np.nan, 12.0], "BPRP_0": [0.9, 1.0, 1.5], "e_BPRP_0": [0.02, 0.02, 0.03]}).to_csv(src, index=False)
    res = _cli("age-stars", str(src), "--out", str(tmp_path / "ages.parquet"))
    assert res.returncode == 0, res.stderr
    out = pd.read_parquet(tmp_path / "ages.parquet")
    assert len(out) == 3 and out["flag"].tolist() == ["", "missing_value", ""]
    res = _cli("age-cluster", str(src), "--cluster", "x")
    assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr


def test_cluster_ages_without_the_by_column_is_refused_in_one_line(model, catalogue):
    with pytest.raises(ChronoflowError, match="missing column 'subgroup'"):
        cluster_ages(catalogue.drop(columns="subgroup"), by="subgroup", model=model)
