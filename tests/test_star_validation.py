"""The out-of-sample check of the single-star model-error term, on a reduced recipe (a toy
catalogue and tiny flows): leave-one-cluster-out posteriors, then the term cross-fitted so that
no star's term used its own cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chronoflow.analysis.star_validation import coverage_table, cross_fit_star_error, interval_scores, star_loo_posteriors
from chronoflow.analysis.validation import fold_model
from chronoflow.flows.flow import FlowConfig
from chronoflow.flows.training import TrainConfig
from chronoflow.inference.posterior import age_grid

TINY = FlowConfig(n_transforms=2, n_bins=6, hidden=16)
#: A small map for the toy's 7 clusters (a few nodes, wide kernels).
SMALL_MAP = {"median_nodes": (1.0, 2.0, 3.0), "colour_nodes": (1.0,), "bandwidths": (0.5, float("inf")), "shrink_n": 20.0,
             "symmetric": "widen"}


@pytest.mark.slow
def test_cross_fitted_check_on_a_reduced_recipe(toy_catalogue):
    names = sorted(toy_catalogue["cluster"].unique())
    config = TrainConfig(max_epochs=6, patience=100, batch_size=64, val_clusters=(), refit_all=False, threads=1)
    stars, post = star_loo_posteriors(toy_catalogue, names, lambda name: fold_model(toy_catalogue, name, TINY, config, [6, 6]))
    assert list(pd.unique(stars["cluster"])) == names and len(stars) == len(post)
    assert np.isfinite(post).all() and stars["pit"].between(0, 1).all()
    # The fold's calibration ages exclude the held-out cluster: the oldest cluster's fold stops
    # at the second oldest (1.5 Gyr).
    oldest = stars[stars["cluster"] == "G"]
    assert oldest["calib_hi"].iloc[0] == pytest.approx(np.log10(1500.0))

    scores, honest = cross_fit_star_error(stars, post, **SMALL_MAP)
    assert np.isfinite(honest).all() and scores.index.equals(stars.index)

    # Cross-fitting: what a cluster's own stars say never reaches its own term. Moving every PIT
    # value of cluster A to 0.001 leaves A's honest posteriors exactly as they were, and changes
    # the others'.
    moved = stars.assign(pit=np.where(stars["cluster"] == "A", 0.001, stars["pit"]))
    _, honest_moved = cross_fit_star_error(moved, post, **SMALL_MAP)
    a = (stars["cluster"] == "A").to_numpy()
    assert np.array_equal(honest_moved[a], honest[a])
    assert not np.allclose(honest_moved[~a], honest[~a])

    table = coverage_table(stars, scores).set_index("group")
    assert table.loc["all", "n_stars"] == len(stars) and table.loc["all", "n_clusters"] == len(names)
    # The shipped form only widens: out of sample too, every honest interval contains the flow's,
    # so no star covered by the flow's interval is lost, and the coverage cannot fall.
    flow = interval_scores(stars, post, age_grid())
    assert (scores["half_width"] >= flow["half_width"] - 1e-3).all()
    assert (scores["in68"] | ~flow["in68"]).all() and (scores["in95"] | ~flow["in95"]).all()
    assert table.loc["all", "coverage_68"] >= flow["in68"].mean()
