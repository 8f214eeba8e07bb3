"""Systematics sweeps: known-answer budgets from controlled variant ages, each component responding
to its own input, the age scale, paired calibration refits (cached by the weights themselves),
failed components, the CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from chronoflow.analysis import systematics
from chronoflow.inference.ages import ClusterAge
from chronoflow.flows.artifact import load_model
from chronoflow.flows.flow import FlowConfig, Standardization, TrainingDomain, build_model
from chronoflow.analysis.systematics import model_fingerprint, refit_count, systematics_sweep
from chronoflow.flows.training import TrainConfig, train

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


# -- known answers: variant ages controlled by a stand-in for cluster_age ------------------------
#
# The sweep's arithmetic (quadrature, noise removal, pairing, noise floor, the total's choice) is
# checked on variant ages whose budget is known independently: a stand-in for
# ``chronoflow.analysis.systematics.cluster_age`` returns, for the stars it is given,
#
#     median = mean(_age) + A x + Q x^2 + B x^3 + (age shift of the model)
#     statistical = S / sqrt(n)
#
# with x [mag] how much bluer the stars are than the cluster's catalogue colour (so the
# extinction sweep's colour offset), n the number of stars, and the model's age shift the one
# ``RotationModel.shifted_in_age`` applied (0 for the flow passed in). Every star has the same
# colour, so membership cuts move the median only through ``_age``. The numbers below are
# hand-computed from these definitions, not from the code.

COLOUR = 1.2  # mag, every star of the stand-in cluster
A, Q, B = 1.5, 50.0, 1250.0  # dex/mag, dex/mag^2, dex/mag^3
SIGMA_E = 0.02  # mag: reddening_sigma of the known-answer sweeps; A*SIGMA_E = 0.03, Q*SIGMA_E^2 = 0.02, B*SIGMA_E^3 = 0.01
S = 0.3  # dex: statistical width of one star, so 0.03 dex for the 100 stars of the cluster
M0 = 2.5  # log10 Myr: the nominal median


def _stand_in_catalogue(name="Toy"):
    """100 stars of one colour: 36 at membership 0.95, 28 at 0.6, 36 at 0.3.

    ``_age`` offsets are chosen so that the mean over all 100 is M0, over the 64 with p >= 0.5 is
    M0 + 0.0375 and over the 36 with p >= 0.9 is M0 + 0.05 (36 h + 28 m + 36 l = 0,
    (36 h + 28 m) / 64 = 0.0375, h = 0.05)."""
    h = 0.05
    low = -64 * 0.0375 / 36
    mid = (64 * 0.0375 - 36 * h) / 28
    parts = [
        pd.DataFrame({"cluster": name, "subgroup": name, "BPRP_0": COLOUR, "e_BPRP_0": 0.02, "Prot": 5.0,
                      "mem_prob_source": p, "_age": M0 + d}, index=range(n))
        for n, p, d in ((36, 0.95, h), (28, 0.6, mid), (36, 0.3, low))
    ]  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def _stand_in_cluster_age(calibrated_dex):
    def cluster_age(df, cluster=None, *, by="cluster", model=None, membership="mem_prob_source", **kwargs):
        rows = df[df[by].astype(str) == cluster]
        x = COLOUR - float(rows["BPRP_0"].mean())
        median = float(rows["_age"].mean()) + A * x + Q * x**2 + B * x**3 + float(model.scaling.context_mean[0])
        stat = S / math.sqrt(len(rows))
        return ClusterAge(
            cluster=cluster, grid=np.array([median]), posterior=np.array([1.0]),
            summary={"median": median, "p16": median - stat, "p84": median + stat, "map": median}, stars=rows,
            n_rows=len(rows), n_used=len(rows), model="stand-in",
            error_dex={"statistical": stat, "ensemble": 0.0, "calibrated": calibrated_dex, "extrapolation": 0.0,
                       "model": calibrated_dex, "total": math.hypot(stat, calibrated_dex)},
        )  # fmt: skip

    return cluster_age


class _StandInRefits:
    """Stand-in for the calibration refits: each returns the flow shifted in age by a chosen amount.

    The refit on the fiducial ages sits 0.10 dex from the flow (refits differ from the model they
    copy: the pairing must remove that), the null refit 0.03 dex from that one (the training-noise
    floor), the perturbed refits +0.05 and -0.05 dex from it. Records the calibration clusters."""

    def __init__(self):
        self.perturbed = [0.10 + 0.05, 0.10 - 0.05]
        self.clusters: list[list[str]] = []

    def __call__(self, model, fingerprint, catalogue, catalogue_sha, offsets, directory):
        self.clusters.append(sorted(catalogue["cluster"].unique()))
        if not offsets:
            shift = 0.10
        elif all(abs(v) <= 2 * systematics.NULL_PERTURBATION_DEX for v in offsets.values()):
            shift = 0.10 + 0.03
        else:
            shift = self.perturbed.pop(0)
        return model.shifted_in_age(shift)


def _known_answer_sweep(monkeypatch, calibrated_dex, refits=None, **kwargs):
    refits = refits if refits is not None else _StandInRefits()
    monkeypatch.setattr(systematics, "cluster_age", _stand_in_cluster_age(calibrated_dex))
    monkeypatch.setattr(systematics, "_refit", refits)
    flow = build_model(TINY, Standardization(), TrainingDomain(), seed=0)  # untrained: the stand-in ages it
    cat = _stand_in_catalogue()
    calibration = pd.concat([cat.assign(cluster=c, subgroup=c) for c in ("Toy", "X", "Y")], ignore_index=True)
    settings = {"model": flow, "reddening_sigma": SIGMA_E, "membership_thresholds": (0.5, 0.9), "alt_membership": None,
                "age_scale_dex": 0.1, "calibration_catalogue": calibration, "n_calibration": 2, "progress": False}  # fmt: skip
    res = systematics_sweep(cat, "Toy", **{**settings, **kwargs})
    return res, res.budget.set_index("component"), refits


def test_known_answer_extinction_from_gaussian_moments(monkeypatch):
    """For median = M0 + A x + Q x^2 + B x^3 and x ~ N(0, s^2) (E x^2 = s^2, E x^4 = 3 s^4,
    E x^6 = 15 s^6): mean shift Q s^2 = 0.02 dex and variance
    (A s)^2 + 6 (A s)(B s^3) + 15 (B s^3)^2 + 2 (Q s^2)^2 = 0.0009 + 0.0018 + 0.0015 + 0.0008 = 0.0050.
    The 3-node rule integrates x^6 to 9 s^6 (nodes 0, +-sqrt(3) s; weights 2/3, 1/6, 1/6), so its
    variance is 0.0044: the stated uncertainty is sqrt(0.0050) - sqrt(0.0044)."""
    res, b, _ = _known_answer_sweep(monkeypatch, 0.01)
    ext = b.loc["extinction"]
    # tolerances: float rounding only (the 5-node rule is exact for these degree <= 6 integrands)
    assert ext["n_variants"] == 5
    assert ext["shift_dex"] == pytest.approx(0.02, abs=1e-12)
    assert ext["systematic_dex"] == pytest.approx(math.sqrt(0.0050), abs=1e-12)
    assert ext["uncertainty_dex"] == pytest.approx(math.sqrt(0.0050) - math.sqrt(0.0044), abs=1e-12)
    nodes = res.variants[res.variants["component"] == "extinction"]
    assert nodes["weight"].sum() == pytest.approx(1.0, abs=1e-12)


def test_known_answer_membership_cuts_with_their_subsample_noise_removed(monkeypatch):
    """Cut p >= 0.5 keeps 64 stars: shift 0.0375 dex, statistical 0.3 / 8 = 0.0375 against 0.03 for
    all 100, so noise sqrt(0.0375^2 - 0.03^2) = 0.0225. Cut p >= 0.9 keeps 36: shift 0.05,
    statistical 0.05, noise 0.04. Both leave 0.0009 dex^2 of systematic shift (0.0375^2 - 0.0225^2 =
    0.05^2 - 0.04^2), so the component is 0.03 dex, with a mean shift of 0.04375 dex."""
    res, b, _ = _known_answer_sweep(monkeypatch, 0.01)
    cuts = res.variants[res.variants["component"] == "membership"].set_index("variant")
    assert list(cuts["n_used"]) == [64, 36]
    np.testing.assert_allclose(cuts["shift_dex"], [0.0375, 0.05], atol=1e-12)
    np.testing.assert_allclose(cuts["noise_dex"], [0.0225, 0.04], atol=1e-12)
    row = b.loc["membership"]
    assert row["systematic_dex"] == pytest.approx(0.03, abs=1e-12)
    assert row["shift_dex"] == pytest.approx(0.04375, abs=1e-12)
    assert row["uncertainty_dex"] > 0  # never a false certainty after the noise removal


def test_known_answer_calibration_refits_are_paired_and_lose_their_noise_floor(monkeypatch):
    """Perturbed refits at +-0.05 dex from the unperturbed refit (which itself sits 0.10 dex from
    the flow), a null refit 0.03 dex from it: paired shifts +-0.05 (not 0.15 / 0.05 against the
    nominal age), rms 0.05, minus the 0.03 floor in quadrature: 0.04 dex."""
    res, b, refits = _known_answer_sweep(monkeypatch, 0.01)
    v = res.variants.set_index("variant")
    calib = res.variants[res.variants["component"] == "calibration"]
    np.testing.assert_allclose(sorted(calib["shift_dex"]), [-0.05, 0.05], atol=1e-12)
    assert v.loc["refit, fiducial ages", "log10_age_median"] == pytest.approx(M0 + 0.10, abs=1e-12)
    row = b.loc["calibration"]
    assert row["n_variants"] == 2
    assert row["systematic_dex"] == pytest.approx(0.04, abs=1e-12)
    assert "0.0300" in row["note"]  # the floor removed is the null refit's shift
    # the target is left out of the calibration set of every refit
    assert refits.clusters == [["X", "Y"]] * 4 and res.settings["target_in_calibration_set"] == "removed before the refits"


def test_known_answer_total_takes_the_per_cluster_parts_when_they_exceed_out_of_sample(monkeypatch):
    """statistical 0.03, age scale 0.1 (the stand-in moves with the model's age exactly), extinction
    sqrt(0.005), membership 0.03, calibration 0.04; out_of_sample 0.01 < the per-cluster parts
    (0.005 + 0.0009 + 0.0016 = 0.0075 dex^2). A single flow has no ensemble spread (NaN, not in
    the total). total^2 = 0.0009 + 0.01 + 0.0075 = 0.0184; without the age scale 0.0084."""
    _, b, _ = _known_answer_sweep(monkeypatch, 0.01)
    assert b.loc["age_scale", "systematic_dex"] == pytest.approx(0.1, abs=1e-12)
    assert b.loc["statistical", "systematic_dex"] == pytest.approx(0.03, abs=1e-12)
    assert np.isnan(b.loc["model", "systematic_dex"]) and not b.loc["model", "in_total"]
    assert "single flow" in b.loc["model", "note"]
    assert b.loc["out_of_sample", "systematic_dex"] == pytest.approx(0.01, abs=1e-12)
    assert not b.loc["out_of_sample", "in_total"]
    assert b.loc[["extinction", "membership", "calibration"], "in_total"].all()
    assert b.loc["total", "systematic_dex"] == pytest.approx(math.sqrt(0.0184), abs=1e-12)
    assert b.loc["total_relative", "systematic_dex"] == pytest.approx(math.sqrt(0.0084), abs=1e-12)


def test_known_answer_total_takes_out_of_sample_when_it_exceeds_the_per_cluster_parts(monkeypatch):
    """The same variants with an out-of-sample term of 0.5 dex (0.25 dex^2 > 0.0075): it replaces
    extinction, membership and calibration. total^2 = 0.0009 + 0.01 + 0.25 = 0.2609."""
    _, b, _ = _known_answer_sweep(monkeypatch, 0.5)
    assert b.loc["out_of_sample", "in_total"]
    assert not b.loc[["extinction", "membership", "calibration"], "in_total"].any()
    assert b.loc["total", "systematic_dex"] == pytest.approx(math.sqrt(0.2609), abs=1e-12)
    assert b.loc["total_relative", "systematic_dex"] == pytest.approx(math.sqrt(0.2509), abs=1e-12)
    assert "out_of_sample in place of" in b.loc["total", "note"]


def test_calibration_component_scales_with_the_assumed_calibration_error(monkeypatch):
    """Refits whose target age moves by the mean of the calibration offsets: the sweep draws the
    offsets as Normal(0, calibration_scale_dex) of one seed, so doubling the scale doubles every
    paired shift and the component, and leaves every other component as it was."""

    def linear_refit(model, fingerprint, catalogue, catalogue_sha, offsets, directory):
        return model.shifted_in_age(float(np.mean(list(offsets.values()))) if offsets else 0.0)

    (r1, b1, _), (r2, b2, _) = (_known_answer_sweep(monkeypatch, 0.01, refits=linear_refit, calibration_scale_dex=scale)
                                for scale in (0.05, 0.1))  # fmt: skip
    assert b1.loc["calibration", "systematic_dex"] > 0
    # rel 1e-6: the null refit's floor (offsets of +-1e-6 dex) enters in quadrature, ~1e-12 relative
    assert b2.loc["calibration", "systematic_dex"] == pytest.approx(2 * b1.loc["calibration", "systematic_dex"], rel=1e-6)
    c1, c2 = (r.variants[r.variants["component"] == "calibration"]["shift_dex"].to_numpy() for r in (r1, r2))
    np.testing.assert_allclose(c2, 2 * c1, rtol=1e-9, atol=1e-12)  # paired shifts linear in the scale (float rounding only)
    others = ["extinction", "membership", "age_scale", "statistical"]
    pd.testing.assert_frame_equal(b1.loc[others], b2.loc[others])


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
    from chronoflow.flows.artifact import save_model

    path = save_model(flow, tmp_path / "m.pt")
    return load_model(path)


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


@pytest.fixture(scope="module")
def ngc6811_sweeps(model, catalogue):
    """One cluster swept three times: nominal widths, twice the reddening error, twice the age scale."""
    widths = {"nominal": (0.03, 0.1), "wider_reddening": (0.06, 0.1), "wider_age_scale": (0.03, 0.2)}
    return {key: systematics_sweep(catalogue, "NGC6811", model=model, reddening_sigma=red, age_scale_dex=scale, progress=False)
            for key, (red, scale) in widths.items()}  # fmt: skip


def _rows(res, components):
    v = res.variants
    return v[v["component"].isin(components)].reset_index(drop=True)


def _terms(res, components):
    """Budget rows without ``in_total``: which of out_of_sample and the per-cluster parts enters the
    total may flip when one part grows, the parts themselves must not change."""
    return res.budget.set_index("component").loc[components].drop(columns="in_total")


def test_a_wider_reddening_error_changes_only_the_extinction_term_and_widens_it(ngc6811_sweeps):
    nominal, wider = ngc6811_sweeps["nominal"], ngc6811_sweeps["wider_reddening"]
    assert wider.component("extinction")["systematic_dex"] > nominal.component("extinction")["systematic_dex"] > 0
    # every other variant is aged on the same stars with the same model: bit-identical
    pd.testing.assert_frame_equal(_rows(wider, ["membership", "age_scale"]), _rows(nominal, ["membership", "age_scale"]))
    others = ["membership", "age_scale", "model", "out_of_sample", "statistical"]
    pd.testing.assert_frame_equal(_terms(wider, others), _terms(nominal, others))


def test_a_wider_age_scale_changes_only_the_age_scale_term(ngc6811_sweeps):
    nominal, wider = ngc6811_sweeps["nominal"], ngc6811_sweeps["wider_age_scale"]
    # abs 0.01 (0.005 per 0.1 dex, as in test_age_scale_shift_moves_every_cluster_age_with_it): the
    # age grid and prior may cut the shifted posterior slightly
    assert wider.component("age_scale")["systematic_dex"] == pytest.approx(0.2, abs=0.01)
    assert nominal.component("age_scale")["systematic_dex"] == pytest.approx(0.1, abs=0.005)
    pd.testing.assert_frame_equal(_rows(wider, ["extinction", "extinction_3", "membership"]),
                                  _rows(nominal, ["extinction", "extinction_3", "membership"]))  # fmt: skip
    others = ["extinction", "membership", "model", "out_of_sample", "statistical"]
    pd.testing.assert_frame_equal(_terms(wider, others), _terms(nominal, others))
    # the age scale is the only difference between the total and the relative total
    for res in (nominal, wider):
        total, rel = res.component("total")["systematic_dex"], res.component("total_relative")["systematic_dex"]
        assert total**2 - rel**2 == pytest.approx(res.component("age_scale")["systematic_dex"] ** 2, rel=1e-9)


def test_extinction_nodes_and_membership_noise_of_a_real_cluster(ngc6811_sweeps):
    res = ngc6811_sweeps["nominal"]
    v = res.variants
    ext = v[v["component"] == "extinction"]
    assert len(ext) == 5 and ext["weight"].sum() == pytest.approx(1.0)
    assert np.isfinite(res.component("extinction")["uncertainty_dex"])
    # Bluer intrinsic colours at fixed periods: the model expects them to spin faster, so older.
    plus = ext.loc[ext["variant"].str.contains(r"\+0\.0857"), "shift_dex"]
    minus = ext.loc[ext["variant"].str.contains(r"-0\.0857"), "shift_dex"]
    assert plus.iloc[0] > 0 > minus.iloc[0]
    cuts = v[v["variant"].str.startswith("cut p >=")]
    assert (cuts["n_used"] < res.nominal.n_used).all()
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


def test_cli_json_is_the_budget_of_the_same_sweep_in_python(run_cli, catalogue_path, model):
    """The CLI passes its options on: its JSON equals the Python budget of the same options (the
    non-default widths show they are not the defaults)."""
    from chronoflow.data.catalogue import read_table

    res = run_cli("sweep", str(catalogue_path), "--cluster", "NGC6811", "--reddening-sigma", "0.05", "--age-scale", "0.2",
                  "--no-refits", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    api = systematics_sweep(read_table(catalogue_path), "NGC6811", model=model, reddening_sigma=0.05, age_scale_dex=0.2,
                            calibration_catalogue=None, progress=False).to_dict()  # fmt: skip
    assert {"extinction", "membership", "age_scale", "model", "out_of_sample"} <= set(payload["components"])
    assert set(payload["components"]) == set(api["components"])
    assert payload["settings"]["reddening_sigma_mag"] == 0.05 and payload["settings"]["age_scale_dex"] == 0.2
    assert payload["settings"]["n_calibration"] == 0 and "calibration" not in payload["components"]  # --no-refits

    # The same computation through the command line; only the float reduction order of torch's
    # threads can differ (a test earlier in this worker may have changed its thread count). The ages agree
    # to ~1e-10 dex; a component is a difference of two such ages, so it is compared to 1e-9 dex
    # absolute (measured: 1.0e-10 dex apart, on a 0.00097 dex component).
    def same(got, want):
        return got is None and want is None or got == pytest.approx(want, rel=1e-9, abs=1e-9)

    for name, comp in api["components"].items():
        for key in ("systematic_dex", "uncertainty_dex", "shift_dex"):
            assert same(payload["components"][name][key], comp[key]), (name, key)
        assert payload["components"][name]["in_total"] == comp["in_total"]
    for key in ("log10_age_median", "statistical_dex", "total_dex", "total_uncertainty_dex", "total_relative_dex"):
        assert same(payload[key], api[key]), key
    assert payload["components"]["age_scale"]["systematic_dex"] == pytest.approx(0.2, abs=0.01)  # the option's width, not 0.1


@pytest.mark.slow
def test_full_budget_statistical_term_and_agreement_with_the_fast_budget(model, catalogue):
    from chronoflow.inference.hierarchical import full_cluster_age

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
    # The fast and the full budget agree within their stated uncertainties, at 3 sigma. The full
    # budget's Monte Carlo error is real noise from run to run: with the same seed and code this
    # test passed in one clean-clone CI run and failed in another (extinction 0.03933 fast vs
    # 0.03530 full, 0.00404 apart with 0.00403 allowed at 2 sigma). At 2 sigma each of the three
    # comparisons fails about 5 % of runs by chance; at 3 sigma about 0.3 %.
    for comp in ("extinction", "membership"):
        a, b = fast.component(comp), full.component(comp)
        allowed = 3 * np.hypot(a["uncertainty_dex"], b["uncertainty_dex"])
        assert abs(a["systematic_dex"] - b["systematic_dex"]) <= allowed, (comp, a["systematic_dex"], b["systematic_dex"], allowed)
    ta, tb = fast.component("total"), full.component("total")
    assert abs(ta["systematic_dex"] - tb["systematic_dex"]) <= 3 * np.hypot(ta["uncertainty_dex"], tb["uncertainty_dex"])
