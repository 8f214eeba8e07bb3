"""Training: cluster split, reproducibility, loss reduction, card contents."""

from __future__ import annotations

import numpy as np
import pytest

from chronoflow.catalogue import REVISED_CLUSTERS, training_sample
from chronoflow.errors import ChronoflowError
from chronoflow.flow import FlowConfig
from chronoflow.training import TrainConfig, split_by_cluster, train

TINY = FlowConfig(n_transforms=2, n_bins=6, hidden=16)


def _train(catalogue, **kw):
    cfg = TrainConfig(max_epochs=kw.pop("max_epochs", 25), patience=100, batch_size=64, val_clusters=("C", "E"), **kw)
    return train(catalogue, TINY, cfg, baseline_config=FlowConfig(kind="gaussian", hidden=16), progress=False)


def test_short_training_is_reproducible_and_learns(toy_catalogue):
    a = _train(toy_catalogue, refit_all=False)
    b = _train(toy_catalogue, refit_all=False)
    for name in ("flow", "baseline"):
        assert a.card["validation"][name]["nll"] == b.card["validation"][name]["nll"]
    ctx = np.array([[2.3, 1.0, -1.5]])
    np.testing.assert_array_equal(a.model.log_prob(0.5, ctx), b.model.log_prob(0.5, ctx))
    assert a.card["split"]["val_clusters"] == ["C", "E"]
    assert "C" not in a.card["clusters"]


def test_loss_goes_down(toy_catalogue):
    res = _train(toy_catalogue, refit_all=False, max_epochs=30)
    from chronoflow.flow import build_model
    from chronoflow.training import _arrays

    untrained = build_model(TINY, res.model.scaling, res.model.domain, seed=0)
    y, ctx, _, _ = _arrays(toy_catalogue[toy_catalogue["cluster"].isin(["C", "E"])])
    before = -untrained.log_prob(y, ctx).mean()
    after = res.card["validation"]["flow"]["nll"]
    assert after < before - 0.5


def test_refit_uses_all_clusters_and_best_epoch(toy_catalogue):
    res = _train(toy_catalogue, refit_all=True, max_epochs=10)
    assert res.card["clusters"] == sorted("ABCDEFG")
    assert res.card["epochs"]["final"] == res.card["epochs"]["flow_split_best"]
    assert res.card["n_training_stars"] == len(toy_catalogue)


def test_membership_weighting_changes_the_fit(toy_catalogue):
    plain = _train(toy_catalogue, refit_all=False, max_epochs=5)
    weighted = _train(toy_catalogue, refit_all=False, max_epochs=5, membership_weighted=True)
    assert plain.card["validation"]["flow"]["nll"] != weighted.card["validation"]["flow"]["nll"]


def test_unknown_validation_cluster(toy_catalogue):
    with pytest.raises(ChronoflowError, match=r"unknown validation cluster\(s\) \['Nope'\]"):
        train(toy_catalogue, TINY, TrainConfig(val_clusters=("Nope",)), progress=False)


def test_split_never_holds_out_extremes_or_revised(catalogue):
    kept, _ = training_sample(catalogue)
    for seed in range(5):
        train_c, val_c = split_by_cluster(kept, 5, seed)
        assert len(val_c) == 5 and not set(val_c) & set(train_c)
        assert not set(val_c) & {"Taurus", "HPer", "Ruprecht147", "M67", *REVISED_CLUSTERS}
    assert split_by_cluster(kept, 5, 0) == split_by_cluster(kept, 5, 0)


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_card(catalogue):
    """The shipped model's card records its seed and config: training again gives its metrics."""
    from chronoflow.artifact import load_model

    card = load_model().card
    cfg = TrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in card["training"].items()})
    res = train(catalogue, FlowConfig(**card["architecture"]), cfg,
                baseline_config=FlowConfig(**card["baseline_architecture"]), progress=False)
    assert res.card["catalogue_sha256"] == card["catalogue_sha256"]
    assert res.card["split"] == card["split"]
    assert res.card["epochs"] == card["epochs"]
    for name in ("flow", "baseline"):
        assert res.card["validation"][name]["nll"] == pytest.approx(card["validation"][name]["nll"], abs=1e-6)
