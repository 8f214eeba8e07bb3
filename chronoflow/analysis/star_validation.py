"""Single-star ages out of sample: leave-one-cluster-out posteriors and the cross-fitted check of
the single-star model-error term (:mod:`chronoflow.inference.star_error`).

The pipeline the shipped term was fitted and judged with (``docs/validation/star_loo.py`` and
``docs/validation/star_error.py`` run it on the shipped recipe; a slow test runs it on a reduced
recipe):

1. :func:`star_loo_posteriors`: every cluster left out of training in turn (the whole recipe,
   :func:`chronoflow.analysis.validation.fold_model`), and each of its stars aged on its own by
   the fold's flow (its posterior alone, log-flat prior, the default grid);
2. :func:`cross_fit_star_error`: the stars of each held-out cluster get the term fitted on the
   *other* clusters' stars only, and their intervals (with ``star_ages``' open ends at the fold's
   calibration ages) are scored against their cluster's age by :func:`interval_scores`;
3. :func:`coverage_table`: coverage and widths by true-age band and by bin of the posterior
   median, star-weighted and cluster-weighted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data.catalogue import training_sample
from ..inference.ages import open_interval_ends, star_ages
from ..inference.posterior import age_grid, quantiles
from ..inference.star_error import SHIPPED_FORM, StarErrorModel, fit_star_error, pit_values

__all__ = [
    "AGE_BANDS_MYR",
    "MEDIAN_BINS",
    "coverage_table",
    "cross_fit_star_error",
    "interval_scores",
    "star_loo_posteriors",
    "star_rows",
    "star_weights",
]

#: True-age bands [Myr] of the coverage tables.
AGE_BANDS_MYR = ((0.0, 30.0), (30.0, 300.0), (300.0, np.inf))
#: Bins of the posterior median [log10 Myr] of the coverage tables.
MEDIAN_BINS = (-np.inf, 1.5, 2.0, 2.5, 3.0, np.inf)
_LEVELS = (0.025, 0.16, 0.5, 0.84, 0.975)


def star_weights(n_cluster: np.ndarray) -> np.ndarray:
    """Weight of each star in the fit: 1 / sqrt(stars of its cluster), between counting every star
    once (the largest clusters decide) and every cluster once (a few stars decide)."""
    return 1.0 / np.sqrt(np.asarray(n_cluster, float))


def star_loo_posteriors(
    catalogue: pd.DataFrame, clusters: Sequence[str], fold: Any, *, grid: np.ndarray | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Out-of-sample posteriors of the stars of each cluster.

    Parameters
    ----------
    catalogue
        The catalogue (its training sample is used).
    clusters
        Clusters to leave out, one at a time.
    fold
        ``fold(name) -> RotationModel``: the recipe retrained without cluster ``name``.
    grid
        Age grid [log10 Myr] (default: the package's).

    Returns
    -------
    stars : pandas.DataFrame
        One row per aged star: ``cluster``, ``GaiaDR3_ID``, ``truth`` (log10 of the cluster's or
        subgroup's age [log10 Myr]), ``colour`` [mag], ``median`` (of the flow posterior),
        ``pit`` (its CDF at the truth), ``calib_lo``/``calib_hi`` (the fold's calibration ages,
        log10 Myr), ``n_cluster``.
    posteriors : numpy.ndarray ``[stars, ages]``
        The flow posteriors (per dex).
    """
    grid = age_grid() if grid is None else grid
    kept = training_sample(catalogue)[0]
    rows, posts = [], []
    for name in clusters:
        model = fold(name)
        stars = kept[kept["cluster"] == name]
        table, post = star_ages(stars, model=model, grid=grid, return_posteriors=True, model_error=False)
        aged = table["log10_age_median"].notna().to_numpy()
        rows.append(star_rows(name, stars[aged], np.log10(stars["fiducial_age_Myr"].to_numpy(float))[aged], post[aged], grid,
                              model.domain.log10_age_myr))  # fmt: skip
        posts.append(post[aged])
    return pd.concat(rows, ignore_index=True), np.concatenate(posts)


def star_rows(cluster: str, stars: pd.DataFrame, truth: np.ndarray, post: np.ndarray, grid: np.ndarray,
              calibrated: tuple[float, float]) -> pd.DataFrame:  # fmt: skip
    """The per-star table of :func:`star_loo_posteriors` for one held-out cluster: its aged
    ``stars`` (catalogue rows), their true log ages [log10 Myr], out-of-sample posteriors ``post``
    on ``grid`` and the fold's calibration ages ``(lo, hi)`` [log10 Myr]."""
    return pd.DataFrame({
        "cluster": cluster, "GaiaDR3_ID": stars["GaiaDR3_ID"].to_numpy(), "truth": truth,
        "colour": stars["BPRP_0"].to_numpy(float), "median": quantiles(post, grid, (0.5,))[:, 0],
        "pit": pit_values(post, grid, truth), "calib_lo": calibrated[0], "calib_hi": calibrated[1], "n_cluster": len(stars),
    })  # fmt: skip


def interval_scores(stars: pd.DataFrame, post: np.ndarray, grid: np.ndarray) -> pd.DataFrame:
    """Score each star's intervals against its truth, with ``star_ages``' open ends (an end beyond
    the fold's calibration ages ``calib_lo``/``calib_hi`` set to the grid's end).

    Returns ``in68``, ``in95``, ``half_width`` ((p84 - p16) / 2 [dex]), ``abs_error`` (|median -
    truth| [dex]) and ``honest_median`` [log10 Myr], indexed like ``stars``."""
    q = quantiles(post, grid, _LEVELS)
    s = dict(zip(("p2.5", "p16", "median", "p84", "p97.5"), q.T.copy()))
    open_interval_ends(s, grid, (stars["calib_lo"].to_numpy(float), stars["calib_hi"].to_numpy(float)))
    t = stars["truth"].to_numpy(float)
    return pd.DataFrame({
        "in68": (s["p16"] <= t) & (t <= s["p84"]), "in95": (s["p2.5"] <= t) & (t <= s["p97.5"]),
        "half_width": 0.5 * (s["p84"] - s["p16"]), "abs_error": np.abs(s["median"] - t), "honest_median": s["median"],
    }, index=stars.index)  # fmt: skip


def honest_posteriors(error_map: StarErrorModel, post: np.ndarray, grid: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The honest posteriors (log-flat prior) of flow posteriors ``post`` under ``error_map``."""
    from ..inference.posterior import normalize

    with np.errstate(divide="ignore"):
        return normalize(error_map.honest_log_likelihood(post, grid, colour), grid)


def cross_fit_star_error(
    stars: pd.DataFrame, post: np.ndarray, grid: np.ndarray | None = None, *, weighted: bool = False, **fit_kwargs: Any
) -> tuple[pd.DataFrame, np.ndarray]:
    """Score the single-star term out of sample: each cluster's stars under the term fitted on the
    other clusters' stars only (:func:`~chronoflow.inference.star_error.fit_star_error`).

    Parameters
    ----------
    stars, post
        From :func:`star_loo_posteriors`.
    grid
        The posteriors' age grid [log10 Myr].
    weighted
        Weigh stars by :func:`star_weights` in the fit (default: every star once, as the shipped
        term).
    **fit_kwargs
        Passed to :func:`~chronoflow.inference.star_error.fit_star_error` (default: the shipped
        form, :data:`~chronoflow.inference.star_error.SHIPPED_FORM`).

    Returns
    -------
    scores : pandas.DataFrame
        :func:`interval_scores` of every star under its cross-fitted term.
    honest : numpy.ndarray ``[stars, ages]``
        The cross-fitted honest posteriors.
    """
    grid = age_grid() if grid is None else grid
    honest = np.empty_like(post)
    cluster = stars["cluster"].to_numpy()
    for name in pd.unique(cluster):
        test = cluster == name
        train = stars[~test]
        w = star_weights(train["n_cluster"]) if weighted else None
        fitted = fit_star_error(train["median"], train["colour"], train["pit"], w, **(fit_kwargs or SHIPPED_FORM))
        honest[test] = honest_posteriors(fitted, post[test], grid, stars["colour"].to_numpy(float)[test])
    return interval_scores(stars, honest, grid), honest


def coverage_table(stars: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Coverage of the 68 % and 95 % intervals, cluster-weighted 68 % coverage (each cluster once),
    median half-width and median absolute error [dex], by true-age band, for all stars, by bin of
    the flow posterior's median and by bin of the honest median."""
    s = stars.join(scores)
    age = 10 ** s["truth"]
    groups = [(f"true age {lo:g}-{hi:g} Myr", (age >= lo) & (age < hi)) for lo, hi in AGE_BANDS_MYR]
    groups.append(("all", pd.Series(True, index=s.index)))
    for key, label in (("median", "flow median"), ("honest_median", "honest median")):
        for lo, hi in zip(MEDIAN_BINS[:-1], MEDIAN_BINS[1:]):
            groups.append((f"{label} {lo:g}-{hi:g}", (s[key] >= lo) & (s[key] < hi)))
    rows = []
    for label, m in groups:
        g = s[m.to_numpy()]
        rows.append({"group": label, "n_stars": len(g), "n_clusters": g["cluster"].nunique(),
                     "coverage_68": g["in68"].mean(), "coverage_95": g["in95"].mean(),
                     "cluster_weighted_68": g.groupby("cluster")["in68"].mean().mean(),
                     "median_half_width_dex": g["half_width"].median(), "median_abs_error_dex": g["abs_error"].median()})  # fmt: skip
    return pd.DataFrame(rows)
