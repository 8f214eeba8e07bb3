"""Systematics sweeps: zero-width sweep, extinction by quadrature, the age scale, paired
calibration refits (cached by the weights themselves), failed components, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from chronoflow.artifact import load_model
from chronoflow.flow import FlowConfig
from chronoflow.systematics import model_fingerprint, refit_count, systematics_sweep
from chronoflow.training import TrainConfig, train

TINY = FlowConfig(n_transforms=2, n_bins=6, hidden=16)


@pytest.fixture(scope="module")
def model():
    return load_model()


def _tiny(catalogue, seed=0, epochs=6):
    cfg = TrainConfig(seed=seed, max_epochs=epochs, patience=100, batch_size=64, val_clusters=(), refit_all=False)
    return train(catalogue, TINY, cfg, progress=False, train_baseline=False).model


@pytest.fixture(scope="module")
def toy():
    from conftest import make_toy_catalogue

    return make_toy_catalogue()


def test_zero_width_sweep_gives_zero_for_every_component(toy, tmp_path):
    flow = _tiny(toy)
    res = systematics_sweep(toy, "D", model=flow, reddening_sigma=0.0, membership_thresholds=(), alt_membership=None,
                            age_scale_dex=0.0, calibration_catalogue=toy, calibration_scale_dex=0.0, n_calibration=2,
                            cache=tmp_path, progress=False)  # fmt: skip
    b = res.budget.set_index("component")
    assert b.loc["calibration", "systematic_dex"] == 0.0
    assert "extinction" not in b.index and "membership" not in b.index and "age_scale" not in b.index
    assert np.isnan(b.loc["model", "systematic_dex"])  # one flow: no ensemble spread, said so
    assert "single flow" in b.loc["model", "note"]
    assert b.loc["total", "systematic_dex"] == pytest.approx(b.loc["statistical", "systematic_dex"], abs=1e-12)
    assert b.loc["statistical", "systematic_dex"] == pytest.approx((res.nominal.summary["p84"] - res.nominal.summary["p16"]) / 2)
    assert res.settings["target_in_calibration_set"] == "removed before the refits"


def test_two_different_unsaved_models_never_share_a_refit(toy, tmp_path):
    a, b = _tiny(toy, seed=0), _tiny(toy, seed=1)
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a) == model_fingerprint(load_model_roundtrip(a, tmp_path))
    kwargs = dict(reddening_sigma=0.0, membership_thresholds=(), alt_membership=None, age_scale_dex=0.0, calibration_catalogue=toy,
                  n_calibration=1, cache=tmp_path / "refits", progress=False)  # fmt: skip
    before = refit_count()
    ra = systematics_sweep(toy, "C", model=a, **kwargs)
    assert refit_count() == before + 3  # unperturbed, null and one perturbed refit
    rb = systematics_sweep(toy, "C", model=b, **kwargs)
    assert refit_count() == before + 6  # nothing taken from a's refits
    assert not np.array_equal(ra.variants["log10_age_median"], rb.variants["log10_age_median"])
    again = systematics_sweep(toy, "C", model=a, **kwargs)
    assert refit_count() == before + 6  # a's refits came from the cache
    np.testing.assert_array_equal(ra.variants["log10_age_median"], again.variants["log10_age_median"])
    # other weights under a copied card (what a fine-tune does): still their own refits
    b.card = dict(a.card)
    systematics_sweep(toy, "C", model=b, **kwargs)
    assert refit_count() == before + 9
    assert not list((tmp_path / "refits").glob("*.tmp"))  # writes are atomic: no partial files left


def load_model_roundtrip(flow, tmp_path):
    from chronoflow.artifact import save_model

    path = save_model(flow, tmp_path / "m.pt")
    return load_model(path)


def test_paired_calibration_refits_remove_the_training_noise_floor(toy, tmp_path):
    flow = _tiny(toy)
    res = systematics_sweep(toy, "D", model=flow, reddening_sigma=0.0, membership_thresholds=(), alt_membership=None,
                            age_scale_dex=0.0, calibration_catalogue=toy, calibration_scale_dex=0.1, n_calibration=2,
                            cache=tmp_path, progress=False)  # fmt: skip
    v = res.variants.set_index("component")
    base = v.loc["calibration_base", "log10_age_median"]
    perturbed = v.loc["calibration"]
    np.testing.assert_allclose(perturbed["shift_dex"], perturbed["log10_age_median"] - base)  # paired, not against flow
    row = res.component("calibration")
    raw = np.sqrt(np.mean(perturbed["shift_dex"] ** 2))
    floor = abs(v.loc["calibration_null", "shift_dex"])
    assert row["systematic_dex"] == pytest.approx(np.sqrt(max(raw**2 - floor**2, 0)))
    assert row["uncertainty_dex"] > 0 and "noise floor" in row["note"]


def test_age_scale_shift_moves_every_cluster_age_with_it(model, catalogue):
    for name in ("Pleiades", "M37", "Praesepe", "NGC6811"):
        res = systematics_sweep(catalogue, name, model=model, reddening_sigma=0.0, membership_thresholds=(), alt_membership=None,
                                age_scale_dex=0.1, progress=False)  # fmt: skip
        shifts = res.variants.set_index("variant")["shift_dex"]
        assert shifts["calibration ages +0.1 dex"] == pytest.approx(0.1, abs=0.005)
        assert shifts["calibration ages -0.1 dex"] == pytest.approx(-0.1, abs=0.005)
        assert res.component("age_scale")["systematic_dex"] == pytest.approx(0.1, abs=0.005)


def test_shifted_in_age_equals_a_refit_on_shifted_ages(toy):
    flow = _tiny(toy, epochs=3)
    older = toy.assign(fiducial_age_Myr=toy["fiducial_age_Myr"] * 10**0.2)
    refit = _tiny(older, epochs=3)
    shifted = flow.shifted_in_age(0.2)
    ctx = np.array([[np.log10(300.0) + 0.2, 1.2, -1.5], [np.log10(20.0) + 0.2, 0.9, -1.8]])
    np.testing.assert_allclose(shifted.log_prob(np.array([0.9, 0.4]), ctx), refit.log_prob(np.array([0.9, 0.4]), ctx), rtol=1e-5, atol=1e-5)
    assert shifted.domain.log10_age_myr == pytest.approx(refit.domain.log10_age_myr)
    assert flow.domain.log10_age_myr != shifted.domain.log10_age_myr  # the original is untouched


def test_extinction_by_quadrature_and_membership_noise(model, catalogue):
    res = systematics_sweep(catalogue, "Praesepe", model=model, reddening_sigma=0.03, age_scale_dex=0.0, progress=False)
    v = res.variants
    ext = v[v["component"] == "extinction"]
    assert len(ext) == 5 and ext["weight"].sum() == pytest.approx(1.0)
    mean = float((ext["weight"] * ext["log10_age_median"]).sum())
    sigma = float(np.sqrt((ext["weight"] * (ext["log10_age_median"] - mean) ** 2).sum()))
    row = res.component("extinction")
    assert row["systematic_dex"] == pytest.approx(sigma) and row["shift_dex"] == pytest.approx(mean - res.nominal.summary["median"])
    assert np.isfinite(row["uncertainty_dex"])
    # Bluer intrinsic colours at fixed periods: the model expects them to spin faster, so older.
    plus = ext.loc[ext["variant"].str.contains(r"\+0\.0857"), "shift_dex"]
    minus = ext.loc[ext["variant"].str.contains(r"-0\.0857"), "shift_dex"]
    assert plus.iloc[0] > 0 > minus.iloc[0]
    cuts = v[v["variant"].str.startswith("cut p >=")]
    assert (cuts["noise_dex"] > 0).all()  # a cut is a subsample: its statistical noise is removed
    assert "noise" in res.component("membership")["note"]


def test_a_component_whose_every_variant_fails_is_named_not_dropped(model, catalogue):
    with pytest.warns(RuntimeWarning, match="membership"):
        res = systematics_sweep(catalogue, "NGC6811", model=model, reddening_sigma=0.0, membership_thresholds=(1.5,),
                                alt_membership=None, age_scale_dex=0.0, progress=False)  # fmt: skip
    row = res.component("membership")
    assert np.isnan(row["systematic_dex"]) and not row["in_total"] and "every variant failed" in row["note"]
    assert "membership" in res.component("total")["note"]
    assert np.isfinite(res.component("total")["systematic_dex"])


def test_total_quadrature_uses_the_larger_of_out_of_sample_and_the_per_cluster_parts(model, catalogue):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = systematics_sweep(catalogue, "Hyades", model=model, progress=False)
    b = res.budget.set_index("component")
    used = b[b["in_total"] & (b.index != "total")]
    assert b.loc["total", "systematic_dex"] == pytest.approx(np.sqrt((used["systematic_dex"] ** 2).sum()))
    per_cluster = b.loc[[c for c in ("extinction", "membership") if c in b.index], "systematic_dex"]
    assert b.loc["out_of_sample", "in_total"] == (b.loc["out_of_sample", "systematic_dex"] ** 2 >= (per_cluster**2).sum())
    assert b.loc["total", "systematic_dex"] >= res.nominal.error_dex["total"] - 1e-12  # never below the age's own total


def test_cli_json(catalogue_path):
    res = subprocess.run([sys.executable, "-m", "chronoflow.cli", "sweep", str(catalogue_path), "--cluster", "NGC6811",
                          "--no-refits", "--json"], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert {"extinction", "membership", "age_scale", "model", "out_of_sample"} <= set(payload["components"])
    for comp in payload["components"].values():
        assert {"systematic_dex", "uncertainty_dex", "shift_dex", "n_variants"} <= set(comp)
    assert payload["total_dex"] >= payload["statistical_dex"] > 0
    assert set(payload) >= {"log10_age_median", "statistical_dex", "total_dex", "components"}


@pytest.mark.slow
def test_full_budget_statistical_term_and_agreement_with_the_fast_budget(model, catalogue):
    from chronoflow.hierarchical import full_cluster_age

    sampler = dict(draws=400, tune=400, chains=2, cores=2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        full = systematics_sweep(catalogue, "NGC2548", model=model, method="full", full_kwargs=sampler, progress=False)
        fast = systematics_sweep(catalogue, "NGC2548", model=model, progress=False)
        fixed = full_cluster_age(catalogue, "NGC2548", model=model, reddening_prior_mag=0.0, f_out_fixed=0.05, progressbar=False, **sampler)
    # statistical = the width of the full posterior with everything fixed (the same seeded run)
    draws = fixed.idata.posterior["log10_age"].values.ravel()
    assert full.component("statistical")["systematic_dex"] == pytest.approx(np.std(draws, ddof=1), rel=1e-9)
    payload = full.to_dict()
    assert {"rhat_max", "divergences"} <= set(payload) and payload["rhat_max"] < 1.05
    assert all("uncertainty_dex" in c for c in payload["components"].values())
    # the model choice is freed in its own run (a latent ensemble member); the larger of it and
    # the members' spread is in the total
    choice, spread = full.component("model_choice"), full.component("model")
    assert np.isfinite(choice["uncertainty_dex"]) and "latent ensemble member" in choice["note"]
    assert choice["in_total"] != spread["in_total"]
    assert (choice["in_total"]) == (choice["systematic_dex"] > spread["systematic_dex"])
    # the fast and the full budget agree within their stated uncertainties (2 sigma)
    for comp in ("extinction", "membership"):
        a, b = fast.component(comp), full.component(comp)
        allowed = 2 * np.hypot(a["uncertainty_dex"], b["uncertainty_dex"])
        assert abs(a["systematic_dex"] - b["systematic_dex"]) <= allowed, (comp, a["systematic_dex"], b["systematic_dex"], allowed)
    ta, tb = fast.component("total"), full.component("total")
    assert abs(ta["systematic_dex"] - tb["systematic_dex"]) <= 2 * np.hypot(ta["uncertainty_dex"], tb["uncertainty_dex"])
