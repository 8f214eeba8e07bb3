"""The flow ensemble: mixture density, one member = one flow, artifact round trip, training, ages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chronoflow.inference.ages import cluster_age, star_ages
from chronoflow.flows.artifact import load_model, save_model, weights_sha256
from chronoflow.flows.ensemble import FlowEnsemble, member_log_prob_grid, train_ensemble
from chronoflow.errors import ChronoflowError
from chronoflow.flows.flow import FlowConfig, make_context
from chronoflow.flows.training import TrainConfig, train

TINY = FlowConfig(n_transforms=2, n_bins=6, hidden=16)


def _cfg(**kw):
    return TrainConfig(max_epochs=kw.pop("max_epochs", 8), patience=100, batch_size=64, val_clusters=("C", "E"), **kw)


@pytest.fixture(scope="module")
def toy_ensemble():
    from conftest import make_toy_catalogue

    cat = make_toy_catalogue()
    return cat, train_ensemble(cat, 3, TINY, _cfg(), progress=False, baseline=False)


def test_mixture_density_integrates_to_one_and_is_the_member_mean(toy_ensemble):
    _, res = toy_ensemble
    ens = res.model
    y = np.linspace(-3.0, 4.0, 4001)
    for ctx in ([1.0, 0.8, -1.6], [2.5, 1.6, -1.4], [3.4, 2.2, -1.8]):
        lp = ens.log_prob(y, np.tile(ctx, (len(y), 1)), check_domain=False)
        assert np.trapezoid(np.exp(lp), y) == pytest.approx(1.0, abs=2e-3)
        members = np.stack([m.log_prob(y, np.tile(ctx, (len(y), 1)), check_domain=False) for m in ens.members])
        np.testing.assert_allclose(np.exp(lp), np.exp(members).mean(axis=0), rtol=1e-9, atol=1e-12)
    # the mixture CDF is the mean of the members' CDFs and its quantiles invert it
    ctx = np.array([[2.5, 1.6, -1.4]] * 3)
    q = ens.quantile(np.array([0.16, 0.5, 0.84]), ctx)
    np.testing.assert_allclose(ens.cdf(q, ctx), [0.16, 0.5, 0.84], atol=1e-5)


def test_one_member_reproduces_the_single_flow(toy_catalogue):
    single = train(toy_catalogue, TINY, _cfg(), progress=False, train_baseline=False).model
    ens = FlowEnsemble([single])
    ctx = make_context(np.array([5.0, 120.0, 3000.0]), np.array([0.8, 1.5, 2.1]), 0.02)
    y = np.array([0.1, 0.9, 1.4])
    np.testing.assert_allclose(ens.log_prob(y, ctx), single.log_prob(y, ctx), rtol=0, atol=1e-12)
    grid = np.linspace(0.5, 3.6, 40)
    np.testing.assert_allclose(ens.log_prob_grid(y, ctx[:, 1], ctx[:, 2], grid), single.log_prob_grid(y, ctx[:, 1], ctx[:, 2], grid),
                               rtol=0, atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(ens.sample(ctx, 5, seed=1).shape, (5, 3))
    # member 0 of a "none" ensemble is exactly the flow train() gives for the same seed
    first = train_ensemble(toy_catalogue, 2, TINY, _cfg(), bootstrap="none", progress=False, baseline=False).model.members[0]
    for a, b in zip(first.state_dict().values(), single.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_members_differ_and_grid_is_the_mixture(toy_ensemble):
    _, res = toy_ensemble
    ens = res.model
    y, col, err = np.array([0.3, 1.2]), np.array([0.9, 1.8]), np.log10([0.02, 0.03])
    grid = np.linspace(0.2, 3.6, 30)
    each = member_log_prob_grid(ens, y, col, err, grid)
    assert each.shape == (3, 2, 30)
    assert np.abs(each[0] - each[1]).max() > 1e-3  # seeds and bootstrap resamples give other fits
    np.testing.assert_allclose(ens.log_prob_grid(y, col, err, grid), np.log(np.exp(each).mean(axis=0)), rtol=1e-5, atol=1e-5)  # float32 flow
    card = res.card["ensemble"]
    assert card["n_members"] == 3 and card["seeds"] == [0, 1, 2] and card["bootstrap"] == "stars"
    assert res.card["split"]["val_clusters"] == ["C", "E"]


def test_artifact_round_trip(toy_ensemble, tmp_path):
    cat, res = toy_ensemble
    path = save_model(res.model, tmp_path / "ens.pt")
    back = load_model(path)
    assert isinstance(back, FlowEnsemble) and back.n_members == 3
    ctx = make_context(np.array([30.0, 650.0]), np.array([1.0, 1.9]), 0.02)
    np.testing.assert_array_equal(back.log_prob(np.array([0.5, 1.1]), ctx), res.model.log_prob(np.array([0.5, 1.1]), ctx))
    assert back.card["ensemble"]["n_members"] == 3


def test_cluster_age_reports_ensemble_spread_and_errors(toy_ensemble):
    cat, res = toy_ensemble
    out = cluster_age(cat, "D", model=res.model)
    e = out.error_dex
    assert len(out.member_medians) == 3 and e["ensemble"] == pytest.approx(np.std(out.member_medians, ddof=1))
    assert e["ensemble"] > 0
    assert e["total"] >= e["statistical"] and e["total"] >= e["model"]
    assert e["total"] == pytest.approx(np.hypot(e["statistical"], e["model"]))
    d = out.to_dict()
    assert set(d["error_dex"]) == {"statistical", "model", "total"}
    assert d["error_dex"]["statistical"] == pytest.approx((d["log10_age_myr"]["p84"] - d["log10_age_myr"]["p16"]) / 2)
    assert "model_error_uncalibrated" in d["flag"]  # no leave-one-out calibration in this toy card
    # the dense and adaptive grids agree on the mixture and on the members
    dense = cluster_age(cat, "D", model=res.model, method="dense")
    assert dense.summary["median"] == pytest.approx(out.summary["median"], abs=5e-3)
    np.testing.assert_allclose(dense.member_medians, out.member_medians, atol=5e-3)


def test_star_ages_use_the_mixture(toy_ensemble):
    """A star's posterior is the prior times the mixture likelihood, mean_k p_k: computed here from
    the members' own (nflows) log_prob on the same grid, independently of the ensemble's grid path."""
    from chronoflow.inference.posterior import age_grid, quantiles

    cat, res = toy_ensemble
    ens = res.model
    stars = cat.iloc[::60].head(7)  # one star of each toy cluster, 5 Myr to 3.5 Gyr
    a, post = star_ages(stars, model=ens, include_out_of_domain=True, return_posteriors=True, method="dense", model_error=False)
    grid = age_grid()
    y = np.log10(stars["Prot"].to_numpy())
    col = stars["BPRP_0"].to_numpy()
    err = np.maximum(np.log10(stars["e_BPRP_0"].to_numpy()), ens.domain.log10_e_bprp0[0])  # the floor star_ages applies
    ctx = np.stack(np.broadcast_arrays(grid[None, :], col[:, None], err[:, None]), axis=-1)  # [stars, ages, 3]
    yy = np.broadcast_to(y[:, None], ctx.shape[:2]).copy()
    each = np.stack([np.exp(m.log_prob(yy, ctx, check_domain=False)) for m in ens.members])  # [members, stars, ages]
    like = each.mean(axis=0)  # the mixture; the log-flat prior is constant in log age
    expected = like / np.trapezoid(like, grid, axis=1)[:, None]
    # float32 flows: the fast grid path and nflows agree to ~1e-5 in ln p, so the densities to 1e-4 relative
    assert np.isfinite(post).all() and a["flag"].str.contains("zero_likelihood").sum() == 0
    np.testing.assert_allclose(post, expected, rtol=1e-4, atol=1e-6 * expected.max())
    np.testing.assert_allclose(a["log10_age_median"], quantiles(expected, grid, (0.5,))[:, 0], atol=1e-4)
    # the mixture median lies between the members' posterior medians, and is not member 0's
    member_medians = quantiles(each / np.trapezoid(each, grid, axis=2)[..., None], grid, (0.5,))[..., 0]  # [members, stars]
    med = a["log10_age_median"].to_numpy()
    assert np.all(member_medians.min(axis=0) - 1e-3 <= med) and np.all(med <= member_medians.max(axis=0) + 1e-3)
    assert np.abs(med - member_medians[0]).max() > 1e-2
    # the default (adaptive grid, honest-error path without a calibrated term) gives the same medians to 0.005 dex
    fast = star_ages(stars, model=ens, include_out_of_domain=True)
    np.testing.assert_allclose(fast["log10_age_median"], med, atol=5e-3)


def test_bad_ensemble_arguments(toy_catalogue):
    with pytest.raises(ChronoflowError, match="n >= 1"):
        train_ensemble(toy_catalogue, 0, TINY, _cfg(), progress=False)
    with pytest.raises(ChronoflowError, match="member_epochs needs one value per member"):
        train_ensemble(toy_catalogue, 2, TINY, _cfg(), member_epochs=[3], progress=False)
    with pytest.raises(ChronoflowError, match="bootstrap='bogus'"):
        TrainConfig(bootstrap="bogus")
    with pytest.raises(ChronoflowError, match="age_noise_dex must be >= 0"):
        TrainConfig(age_noise_dex=-0.1)


def test_validate_loo_calibrates_the_model_error_into_the_card(toy_ensemble, tmp_path):
    """`chronoflow validate loo --calibrate`: the whole recipe per fold, nested coverage, the curve in the card."""
    from typer.testing import CliRunner

    from chronoflow.cli import app

    cat, res = toy_ensemble
    cat_path, model_path = tmp_path / "toy.csv", save_model(res.model, tmp_path / "ens.pt")
    cat.to_csv(cat_path, index=False)
    parent_sha = load_model(model_path).card["weights_sha256"]  # the card save_model wrote: must exist
    assert parent_sha == weights_sha256(res.model.state_dict())  # and be the hash of the trained weights
    out = tmp_path / "loo.md"
    run = CliRunner().invoke(app, ["validate", "loo", "--catalogue", str(cat_path), "--model", str(model_path), "--members", "2",
                                   "--subset", "1", "--jobs", "1", "--out", str(out), "--calibrate", str(model_path)])  # fmt: skip
    assert run.exit_code == 0, run.output
    import pandas as pd

    table = pd.read_csv(out.with_suffix(".csv"))
    assert len(table) == 7 and set(table["n_members"]) == {2}
    assert {"total_dex", "inside_total", "statistical_dex", "ensemble_dex"} <= set(table.columns)
    assert (table["total_dex"] >= table["statistical_dex"]).all()
    assert (table["inside_total"] == (table["residual_dex"].abs() <= table["total_dex"])).all()
    assert set(pd.read_csv(tmp_path / "loo_members.csv")["n_members"]) == {1, 2}
    assert "| k = 1 | k = 2 |" in out.read_text()
    assert "2 of 3 members per fold" in out.read_text()
    calibrated = load_model(model_path)
    assert calibrated.card["model_error"]["curve"]["n_clusters"] == 7
    assert calibrated.card["model_error"]["source"].startswith("chronoflow validate loo: architecture ")
    # calibration writes only the card: the weights, their hash and the densities are the parent's
    assert calibrated.card["weights_sha256"] == parent_sha == weights_sha256(calibrated.state_dict())
    ctx = make_context(np.array([30.0, 650.0]), np.array([1.0, 1.9]), 0.02)
    np.testing.assert_array_equal(calibrated.log_prob(np.array([0.5, 1.1]), ctx), res.model.log_prob(np.array([0.5, 1.1]), ctx))
    age = cluster_age(cat, "D", model=calibrated)
    assert "model_error_uncalibrated" not in age.flag and age.error_dex["calibrated"] >= 0
    assert age.error_dex["model"] >= age.error_dex["ensemble"]
