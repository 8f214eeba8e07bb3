"""Model checks: predictive check table and coverage of the fast age intervals.

Data drawn from the model itself must pass every check (the checks have no false alarm built in),
and the same data checked against a deliberately wrong model, one whose ages are shifted by
``WRONG_DEX``, must fail it (the checks have power). Tolerances are set before looking at results:
KS critical values and binomial intervals at ``ALPHA``.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from chronoflow.inference.ages import star_ages
from chronoflow.flows.artifact import load_model
from chronoflow.analysis.calibration import COLOUR_BINS, age_coverage, predictive_check
from chronoflow.data.catalogue import training_sample
from chronoflow.flows.flow import make_context
from chronoflow.analysis.forward import sample_periods, synthetic_cluster
from chronoflow.inference.posterior import age_grid, quantiles

#: False-alarm probability of each check (two-sided binomial intervals, KS critical values).
ALPHA = 1e-3
#: Age shift of the wrong model [dex]: about two cluster 68 % half-widths (~0.08 dex) and half a
#: single star's (~0.35 dex, median error), so a working check must see it.
WRONG_DEX = 0.3


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def truth_range(model):
    """log10 age range [log10 Myr] of the synthetic truths: inside the calibrated ages."""
    lo, hi = model.domain.log10_age_myr
    return lo + 0.05, hi - 0.05


def _binomial_range(n: int, p: float) -> tuple[float, float]:
    """Fractions a calibrated p-interval covers in n trials, except with probability ALPHA."""
    lo, hi = stats.binom.interval(1 - ALPHA, n, p)
    return lo / n, hi / n


def _ks_critical(n: int) -> float:
    return float(stats.kstwo.ppf(1 - ALPHA, n))


# --- predictive check ----------------------------------------------------------------------------


def test_predictive_check_table(model, catalogue):
    table = predictive_check(catalogue, model)
    assert {"cluster", "colour_lo", "colour_hi", "n", "ks", "p_value"} <= set(table.columns)
    assert (table["n"] >= 10).all()
    # Every (cluster, colour bin) of the training sample with >= 10 stars is a row, with its count.
    kept, _ = training_sample(catalogue)
    edges = np.asarray(COLOUR_BINS)
    upper = np.searchsorted(edges, kept["BPRP_0"].to_numpy(), side="left")  # bins are (lo, hi]
    inside = (upper >= 1) & (upper < len(edges))
    lower_edge = pd.Series(edges[np.clip(upper - 1, 0, len(edges) - 1)], index=kept.index)
    counts = kept[inside].groupby([kept["cluster"][inside], lower_edge[inside]]).size()
    counts = counts[counts >= 10]
    got = table.set_index(["cluster", "colour_lo"])["n"]
    assert dict(got) == {k: int(v) for k, v in counts.items()}
    assert np.allclose(table["colour_hi"], [COLOUR_BINS[COLOUR_BINS.index(lo) + 1] for lo in table["colour_lo"]])
    # A cluster whose label the paper revised is described worse than a well-sampled one.
    worst = table.groupby("cluster")["ks"].median()
    assert worst["NGC1647"] > worst["Praesepe"]
    assert table.groupby("cluster")["fiducial_age_myr"].nunique().max() == 1


def test_pit_of_periods_drawn_from_the_model_is_uniform(model, truth_range):
    n = 3000
    rng = np.random.default_rng(11)
    age = 10 ** rng.uniform(*truth_range, n)
    colour, err = rng.uniform(0.5, 3.0, n), rng.uniform(0.015, 0.05, n)
    draws = sample_periods(age, colour, err, seed=5, model=model)
    ctx = make_context(draws["age_myr"].to_numpy(), draws["bprp0"].to_numpy(), draws["e_bprp0"].to_numpy())
    log_p = draws["log10_prot"].to_numpy().copy()
    assert stats.kstest(model.cdf(log_p, ctx), "uniform").statistic < _ks_critical(n)
    wrong = model.shifted_in_age(WRONG_DEX)
    assert stats.kstest(wrong.cdf(log_p, ctx), "uniform").statistic > _ks_critical(n)


@pytest.fixture(scope="module")
def drawn_catalogue(model):
    """Five clusters whose periods the model drew at their fiducial ages (no field, no outliers)."""
    frames = [synthetic_cluster(age, 400, colour_err=(0.015, 0.05), seed=i, model=model, name=f"drawn{age}")
              for i, age in enumerate((30, 120, 400, 1000, 2500))]  # fmt: skip
    df = pd.concat(frames, ignore_index=True)
    df["GaiaDR3_ID"] = -(np.arange(len(df)) + 1)  # unique across the clusters
    return df


def test_predictive_check_passes_on_data_from_the_model_and_fails_for_shifted_ages(model, drawn_catalogue):
    table = predictive_check(drawn_catalogue, model)
    assert len(table) == 25  # 5 clusters x 5 colour bins, all populated
    alpha = ALPHA / len(table)  # Bonferroni: one false alarm in the table with probability <= ALPHA
    assert (table["p_value"] > alpha).all()
    wrong = predictive_check(drawn_catalogue, model.shifted_in_age(WRONG_DEX))
    assert not (wrong["p_value"] > alpha).all()
    # Where periods depend most on age, the slowly spun-down K dwarfs (0.8-1.8 mag) of clusters
    # >= 400 Myr, a 0.3 dex age shift moves the sequence by ~0.15 dex (P ~ t^0.5) against a
    # spread of a few hundredths of a dex: every such bin must reject.
    strong = (wrong["fiducial_age_myr"] >= 400) & wrong["colour_lo"].between(0.8, 1.2)
    assert strong.sum() == 6 and (wrong.loc[strong, "p_value"] < alpha).all()


# --- coverage of the age intervals -----------------------------------------------------------------


def test_intervals_cover_synthetic_truth(model):
    n_clusters = 60
    cov = age_coverage(model, n_clusters=n_clusters, n_stars=60, n_single=400, seed=2)
    assert cov["clusters"]["n"] == n_clusters and cov["single_stars"]["n"] == 400
    for level in (68, 95):
        lo, hi = _binomial_range(n_clusters, level / 100)
        assert lo <= cov["clusters"][f"coverage_{level}"] <= hi, level
    assert cov["clusters"]["median_abs_error_dex"] < 0.2
    # Single stars aged with the prior their truths were drawn from: nominal coverage.
    wide = cov["single_stars_default_prior"]
    assert wide["n"] == 400
    for level in (68, 95):
        lo, hi = _binomial_range(400, level / 100)
        assert lo <= cov["single_stars"][f"coverage_{level}"] <= hi, level
        # The default prior spans the whole grid, wider than the truths: conservative, never
        # below the nominal range.
        assert wide[f"coverage_{level}"] >= lo, level
    # and not so wide as to say nothing (the bounds this test held before the matched prior)
    assert 0.85 <= wide["coverage_95"] <= 1.0
    assert 0.55 <= wide["coverage_68"] <= 0.85

    # The wrong model: periods drawn WRONG_DEX older than the ages the model then infers.
    wrong = copy.deepcopy(model)
    wrong.sample = model.shifted_in_age(WRONG_DEX).sample
    bad = age_coverage(wrong, n_clusters=n_clusters, n_stars=60, n_single=400, seed=2)
    for level in (68, 95):
        assert bad["clusters"][f"coverage_{level}"] < _binomial_range(n_clusters, level / 100)[0], level
    # A 0.3 dex shift is about the size of a single star's 68 % half-width, so the single stars'
    # 68 % intervals must also fall below the nominal range (seed 2 gave 0.565 against >= 0.6025).
    assert bad["single_stars"]["coverage_68"] < _binomial_range(400, 0.68)[0]


def test_star_intervals_are_calibrated_when_truths_follow_the_prior(model, truth_range):
    # Truths drawn from the prior (log-flat on the grid) and periods from the model: the posterior
    # is then exact, so its intervals cover at the nominal rate and the posterior CDF at the truth
    # is uniform (simulation-based calibration).
    n = 2000
    grid = age_grid(*truth_range, 600)
    rng = np.random.default_rng(21)
    truth = rng.uniform(*truth_range, n)
    draws = sample_periods(10**truth, rng.uniform(0.5, 3.0, n), rng.uniform(0.015, 0.05, n), seed=22, model=model)
    stars = pd.DataFrame({"Prot": draws["prot_d"], "BPRP_0": draws["bprp0"], "e_BPRP_0": draws["e_bprp0"]})

    def check(ageing):
        # The flow's posterior alone: the periods were drawn from the model itself.
        _, post = star_ages(stars, model=ageing, grid=grid, include_out_of_domain=True, return_posteriors=True, model_error=False)
        assert np.isfinite(post).all()
        steps = 0.5 * (post[:, 1:] + post[:, :-1]) * np.diff(grid)  # the posterior CDF, trapezoid rule
        cum = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, axis=1)], axis=1)
        rank = np.array([np.interp(t, grid, c / c[-1]) for t, c in zip(truth, cum)])
        q = quantiles(post, grid, (0.025, 0.16, 0.84, 0.975))
        inside = {68: (q[:, 1] <= truth) & (truth <= q[:, 2]), 95: (q[:, 0] <= truth) & (truth <= q[:, 3])}
        return stats.kstest(rank, "uniform").statistic, {k: float(v.mean()) for k, v in inside.items()}

    ks, coverage = check(model)
    assert ks < _ks_critical(n)
    for level, got in coverage.items():
        lo, hi = _binomial_range(n, level / 100)
        assert lo <= got <= hi, level
    ks_wrong, _ = check(model.shifted_in_age(WRONG_DEX))
    assert ks_wrong > _ks_critical(n)
