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
    """The shipped ensemble's card records its seeds and config: training again gives its metrics."""
    from chronoflow.artifact import load_model
    from chronoflow.ensemble import train_ensemble

    card = load_model().card
    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in card["training"].items() if k in fields})
    ens = card["ensemble"]
    res = train_ensemble(catalogue, ens["n_members"], FlowConfig(**card["architecture"]), cfg, bootstrap=ens["bootstrap"],
                         progress=False)  # fmt: skip
    assert res.card["catalogue_sha256"] == card["catalogue_sha256"]
    assert res.card["split"] == card["split"]
    # Training is seeded and single-threaded, so it repeats exactly on one machine (see
    # test_short_training_is_reproducible_and_learns), but not across CPUs: float32 kernels round
    # differently and training is chaotic. Measured on a second machine against the shipped card:
    # early-stopped epochs 96/100, 79/97, 30/30, 35/35, 73/90; held-out NLLs within 0.0099 nats
    # (the baseline's within 0.0012). So: epochs within the patience window, NLLs within 0.02.
    for got, want in zip(res.card["ensemble"]["members"], ens["members"], strict=True):
        assert abs(got["epochs"]["final"] - want["epochs"]["final"]) <= cfg.patience
        assert got["validation_nll"] == pytest.approx(want["validation_nll"], abs=0.02)
    mean = np.mean([m["validation_nll"] for m in res.card["ensemble"]["members"]])
    assert mean == pytest.approx(np.mean([m["validation_nll"] for m in ens["members"]]), abs=0.01)
    assert res.card["validation"]["baseline"]["nll"] == pytest.approx(card["validation"]["baseline"]["nll"], abs=0.005)


def test_age_label_noise_is_seeded_and_convolves_the_age_dependence(toy_catalogue):
    """Noise of sigma dex on the log-age labels blurs the learned law along age: the toy law has
    d log P / d log age = 0.5 and a scatter of 0.08 dex at 300 Myr, so the fitted 16-84 % half-width
    there must grow from ~0.08 to ~sqrt(0.08^2 + (0.5 sigma)^2)."""
    short = _train(toy_catalogue, refit_all=False, max_epochs=5, age_noise_dex=0.2)
    again = _train(toy_catalogue, refit_all=False, max_epochs=5, age_noise_dex=0.2)
    ctx = np.array([[2.3, 1.0, -1.5]])
    np.testing.assert_array_equal(short.model.log_prob(0.5, ctx), again.model.log_prob(0.5, ctx))
    assert short.card["training"]["age_noise_dex"] == 0.2

    def half_width(noise):
        cfg = TrainConfig(max_epochs=120, patience=1000, batch_size=64, learning_rate=5e-3, val_clusters=(), refit_all=False,
                          age_noise_dex=noise)  # fmt: skip
        model = train(toy_catalogue, TINY, cfg, progress=False, train_baseline=False).model
        q = model.quantile(np.array([0.16, 0.84]), np.array([[np.log10(300.0), 1.5, -1.5]] * 2))
        return (q[1] - q[0]) / 2

    assert half_width(0.0) == pytest.approx(0.08, abs=0.03)
    assert half_width(0.4) == pytest.approx(np.hypot(0.08, 0.5 * 0.4), abs=0.04)


def test_gap_noise_widens_the_label_noise_where_ages_are_sparse():
    from chronoflow.training import _noise_scale

    log_age = np.repeat([0.3, 1.0, 1.2, 2.0], 3)
    np.testing.assert_allclose(_noise_scale(log_age, TrainConfig(age_noise_dex=0.1)), 0.1)
    # nearest-neighbour gaps 0.7, 0.2, 0.2, 0.8 dex; half of them, never below age_noise_dex
    sd = _noise_scale(log_age, TrainConfig(age_noise_dex=0.1, age_noise_gap=0.5))
    np.testing.assert_allclose(sd, np.repeat([0.35, 0.1, 0.1, 0.4], 3))
    assert (_noise_scale(np.full(4, 2.0), TrainConfig(age_noise_gap=1.0)) == 0.1).all()  # one age: no gap
    with pytest.raises(ChronoflowError, match="age_noise_gap"):
        TrainConfig(age_noise_gap=-1)


def test_bootstrap_weights_resample_stars_or_clusters():
    from chronoflow.training import _bootstrap_weights

    groups = np.repeat(np.arange(6), 50)
    assert (_bootstrap_weights(groups, "none", 0) == 1).all()
    stars = _bootstrap_weights(groups, "stars", 3)
    assert stars.mean() == pytest.approx(1.0, abs=0.15) and (stars == 0).any() and len(np.unique(stars)) > 2
    clusters = _bootstrap_weights(groups, "clusters", 3)
    assert all(len(np.unique(clusters[groups == g])) == 1 for g in range(6))  # one weight per cluster
    np.testing.assert_array_equal(_bootstrap_weights(groups, "stars", 3), stars)
    assert not np.array_equal(_bootstrap_weights(groups, "stars", 4), stars)
