"""The single-star model-error term (chronoflow.inference.star_error) and its use in star_ages;
the period error (e_Prot)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from chronoflow.errors import DomainError
from chronoflow.flows.artifact import load_model
from chronoflow.inference.ages import star_ages, star_error_model
from chronoflow.inference.posterior import age_grid, normalize, quantiles
from chronoflow.inference.star_error import LEVELS, StarErrorModel, fit_star_error, pit_values, weighted_quantiles

GRID = age_grid()


def _gaussian_stars(scale: float, n: int = 3000, seed: int = 0):
    """Posteriors N(mu, 0.2 dex) whose truths scatter by ``scale`` x 0.2 dex about mu."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(1.0, 3.0, n)
    truth = mu + rng.normal(0.0, scale * 0.2, n)
    colour = rng.uniform(0.5, 3.0, n)
    post = normalize(-0.5 * ((GRID[None] - mu[:, None]) / 0.2) ** 2, GRID)
    return post, truth, colour


def _coverage(post, truth):
    q = quantiles(post, GRID, (0.025, 0.16, 0.84, 0.975))
    return ((q[:, 1] <= truth) & (truth <= q[:, 2])).mean(), ((q[:, 0] <= truth) & (truth <= q[:, 3])).mean(), np.median(q[:, 2] - q[:, 1]) / 2


@pytest.mark.parametrize("scale", [1.5, 0.5])
def test_the_map_restores_nominal_coverage_on_new_stars(scale):
    """Posteriors 1.5x too narrow (or 2x too wide): a map fitted on one set of stars makes the
    intervals of a *new* set hold the truth at the nominal rate (binomial 3-sigma on 3,000 stars:
    +-0.026 at 68 %, +-0.012 at 95 %), and the half-width becomes scale x 0.2 dex (+-10 %)."""
    post, truth, colour = _gaussian_stars(scale, seed=1)
    med = quantiles(post, GRID, (0.5,))[:, 0]
    fitted = fit_star_error(med, colour, pit_values(post, GRID, truth))
    new_post, new_truth, new_colour = _gaussian_stars(scale, seed=2)
    before = _coverage(new_post, new_truth)
    honest = normalize(fitted.honest_log_likelihood(new_post, GRID, new_colour), GRID)
    c68, c95, half = _coverage(honest, new_truth)
    assert abs(before[0] - 0.68) > 0.15  # the flow's intervals were off
    assert abs(c68 - 0.68) < 0.026 and abs(c95 - 0.95) < 0.012
    assert half == pytest.approx(scale * 0.2, rel=0.1)


def test_identity_map_changes_nothing_and_the_card_form_round_trips():
    post, _, colour = _gaussian_stars(1.0, n=50)
    same = normalize(StarErrorModel.identity().honest_log_likelihood(post, GRID, colour), GRID)
    # the density comes back as central differences of the CDF: a [1, 2, 1] / 4 smoothing of the
    # grid values, 1e-3 of the peak on posteriors 0.2 dex wide sampled every 0.004 dex
    assert np.allclose(same, post, rtol=0, atol=1e-3 * post.max())
    q = quantiles(same, GRID, (0.16, 0.5, 0.84)) - quantiles(post, GRID, (0.16, 0.5, 0.84))
    assert np.abs(q).max() < 1e-4
    post, truth, colour = _gaussian_stars(1.5, n=500)
    fitted = fit_star_error(quantiles(post, GRID, (0.5,))[:, 0], colour, pit_values(post, GRID, truth))
    back = StarErrorModel.from_dict(fitted.to_dict())
    assert np.allclose(back.knots(np.array([1.2, 2.7]), np.array([0.9, 2.0])),
                       fitted.knots(np.array([1.2, 2.7]), np.array([0.9, 2.0])), atol=2e-6)  # fmt: skip
    k = back.knots(np.array([1.2]), np.array([0.9]))[0]
    assert k[0] == 0 and k[-1] == 1 and (np.diff(k) > 0).all() and len(k) == len(LEVELS)


def test_weighted_quantiles_and_pit():
    v = np.arange(10.0)
    assert weighted_quantiles(v, np.ones(10), [0.5])[0] == pytest.approx(4.5)
    # a weight of 100 on the last value moves the median next to it: the weighted CDF's mid-points
    # are 8.5/109 at 8 and 59/109 at 9, so level 0.5 interpolates to 8 + (0.5 - 0.078) / 0.463
    assert weighted_quantiles(v, np.r_[np.ones(9), 100.0], [0.5])[0] == pytest.approx(8 + (0.5 - 8.5 / 109) / (50.5 / 109))
    post = normalize(-0.5 * ((GRID - 2.0) / 0.1) ** 2 + 0 * GRID, GRID)[None]
    assert pit_values(post, GRID, np.array([2.0]))[0] == pytest.approx(0.5, abs=1e-3)
    assert pit_values(post, GRID, np.array([2.1]))[0] == pytest.approx(0.8413, abs=2e-3)


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def stars():
    return pd.DataFrame({"Prot": [8.0, 12.0, 0.6, 25.0], "BPRP_0": [1.2, 0.82, 1.6, 1.4], "e_BPRP_0": [0.02, 0.02, 0.03, 0.02]})


def _with_map(model, error_map):
    """A shallow copy of the model with another card (the shipped model is a shared object)."""
    other = copy.copy(model)
    card = dict(model.card)
    if error_map is None:
        card.pop("single_star_error", None)
    else:
        card["single_star_error"] = error_map.to_dict()
    other.card = card
    return other


def test_the_shipped_card_carries_the_term_and_star_ages_apply_it_by_default(model, stars):
    """The term is on the card and applied by default; model_error=False gives the flow's posterior
    in every column (the stat columns are that posterior either way)."""
    error_map = star_error_model(model)
    assert error_map is not None and "leave-one-out" in model.card["single_star_error"]["source"]
    honest = star_ages(stars, model=model, device="cpu")
    flow_only = star_ages(stars, model=model, model_error=False, device="cpu")
    for k in ("p2.5", "p16", "median", "p84", "p97.5"):
        assert np.allclose(honest[f"log10_age_stat_{k}"], flow_only[f"log10_age_{k}"], atol=1e-12)
    assert not np.allclose(honest["log10_age_p16"], flow_only["log10_age_p16"])  # the term changes the intervals
    assert "model_error_uncalibrated" not in "".join(honest["flag"])
    q = honest[[f"log10_age_{k}" for k in ("p2.5", "p16", "median", "p84", "p97.5")]].to_numpy()
    assert (np.diff(q, axis=1) >= 0).all()


def test_honest_interval_contains_the_posterior_only_one_where_the_term_widens(model, stars):
    """A map that only widens (truths 1.5x outside the posteriors): every honest 68 % and 95 %
    interval contains the flow's. (The shipped term may also narrow intervals where the flow's
    are too wide out of sample: young stars.)"""
    post, truth, colour = _gaussian_stars(1.5)
    widening = fit_star_error(quantiles(post, GRID, (0.5,))[:, 0], colour, pit_values(post, GRID, truth))
    k = widening.knots(np.linspace(0.5, 3.5, 7), np.linspace(0.5, 3.0, 7))
    i16, i84 = LEVELS.index(0.16), LEVELS.index(0.84)
    assert (k[:, i16] < 0.16).all() and (k[:, i84] > 0.84).all()
    out = star_ages(stars, model=_with_map(model, widening), device="cpu")
    for lo, hi in (("p16", "p84"), ("p2.5", "p97.5")):
        assert (out[f"log10_age_{lo}"] <= out[f"log10_age_stat_{lo}"] + 1e-9).all()
        assert (out[f"log10_age_{hi}"] >= out[f"log10_age_stat_{hi}"] - 1e-9).all()


def test_a_model_without_the_term_is_flagged(model, stars):
    out = star_ages(stars, model=_with_map(model, None), device="cpu")
    assert out["flag"].str.contains("model_error_uncalibrated").all()
    assert np.allclose(out["log10_age_p16"], out["log10_age_stat_p16"], atol=1e-12)


def test_period_error_known_answers(model, stars):
    """A tiny period error ages like none (within 0.002 dex); a 25 % one widens the flow's 68 %
    interval of slow-sequence stars (a 25 % period error is ~0.1 dex in log Prot, comparable to
    the sequence's own spread). A fast rotator's posterior need not widen: it is set by where the
    period lies in the young stars' broad period distribution, and a star between the young and
    the old branches (6 d at 0.9 mag: 16-84 % 1.285-2.761 without error, 1.455-2.834 with it)
    loses weight on its young branch."""
    none = star_ages(stars, model=model, device="cpu")
    tiny = star_ages(stars.assign(e_Prot=1e-4 * stars["Prot"]), model=model, device="cpu")
    big = star_ages(stars.assign(e_Prot=0.25 * stars["Prot"]), model=model, device="cpu")
    cols = [f"log10_age_stat_{k}" for k in ("p16", "median", "p84")]
    assert np.allclose(tiny[cols], none[cols], atol=2e-3)
    zero = star_ages(stars.assign(e_Prot=0.0), model=model, device="cpu")
    assert np.allclose(zero[cols], none[cols], atol=1e-12)
    slow = pd.DataFrame({"Prot": [8.0, 15.0, 10.0, 12.0], "BPRP_0": [1.2, 1.5, 0.8, 1.0], "e_BPRP_0": [0.02] * 4})
    none = star_ages(slow, model=model, device="cpu")
    big = star_ages(slow.assign(e_Prot=0.25 * slow["Prot"]), model=model, device="cpu")
    w_none = none["log10_age_stat_p84"] - none["log10_age_stat_p16"]
    w_big = big["log10_age_stat_p84"] - big["log10_age_stat_p16"]
    assert (none["log10_age_stat_p84"] < GRID[-1]).all()  # closed intervals: a width to compare
    assert (w_big > w_none + 0.02).all()


@pytest.mark.parametrize("bad", [-0.1, np.nan, np.inf, "x"])
def test_bad_period_errors_are_refused_in_one_line(model, stars, bad):
    e = pd.Series([0.1, bad, 0.1, 0.1], dtype=object)
    with pytest.raises(DomainError) as err:
        star_ages(stars.assign(e_Prot=e), model=model, device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and "e_Prot[1]" in msg and ">= 0 d" in msg


def test_the_shipped_term_only_widens_catalogue_intervals(model, catalogue):
    """The shipped form never moves an interval end inward (its map is min(u_q, q) / max(u_q, q))
    and keeps the median: on 400 catalogue stars the honest 68 % and 95 % intervals contain the
    flow's, to 1e-3 dex (the honest density is a central difference of the recalibrated CDF),
    and somewhere widen it by more than 0.01 dex."""
    stars = catalogue.dropna(subset=["BPRP_0"]).sample(400, random_state=3)
    out = star_ages(stars, model=model, device="cpu")
    aged = out["log10_age_median"].notna()
    out = out[aged]
    assert aged.sum() > 300 and model.card["single_star_error"]["extra"]["symmetric"] == "widen"
    for lo, hi in (("p16", "p84"), ("p2.5", "p97.5")):
        assert (out[f"log10_age_{lo}"] <= out[f"log10_age_stat_{lo}"] + 1e-3).all()
        assert (out[f"log10_age_{hi}"] >= out[f"log10_age_stat_{hi}"] - 1e-3).all()
    assert np.allclose(out["log10_age_median"], out["log10_age_stat_median"], atol=1e-3)
    widened = (out["log10_age_stat_p16"] - out["log10_age_p16"]) + (out["log10_age_p84"] - out["log10_age_stat_p84"])
    assert (widened > 0.01).any()


def test_a_star_with_every_possible_flag_keeps_its_row_and_its_age(model):
    """Hot and fully convective exclude each other by colour, so four rotation flags is the most
    one star can carry: a 0.05 d F star (0.45 mag) with RUWE 3 and non_single_star = 1 is
    off_sequence, hot_star, weakened_braking (tau_c collapses above 6000 K) and likely_binary. It
    keeps its row, its index and its age; a plain row beside it is unaffected."""
    df = pd.DataFrame({"Prot": [0.05, 8.0], "BPRP_0": [0.45, 1.2], "e_BPRP_0": [0.02, 0.02], "ruwe": [3.0, 1.0],
                       "non_single_star": [1, 0], "name": ["every", "plain"]}, index=[7, 9])  # fmt: skip
    out = star_ages(df, model=model, device="cpu")
    assert list(out.index) == [7, 9] and out["name"].tolist() == ["every", "plain"]
    flags = set(out.loc[7, "flag"].split(";"))
    assert {"off_sequence", "hot_star", "weakened_braking", "likely_binary"} <= flags
    assert np.isfinite(out.loc[7, "log10_age_median"])
    alone = star_ages(df.loc[[7]].drop(columns=["ruwe", "non_single_star"]), model=model, device="cpu")
    assert out.loc[7, "log10_age_median"] == pytest.approx(alone.loc[7, "log10_age_median"], abs=1e-9)  # flags never move an age
    assert not {"off_sequence", "hot_star", "weakened_braking", "likely_binary"} & set(out.loc[9, "flag"].split(";"))
