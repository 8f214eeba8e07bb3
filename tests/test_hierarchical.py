"""Hierarchical cluster model: the flow inside PyTensor, the tabulated likelihood, recovery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pymc")

from pytensor.gradient import verify_grad  # noqa: E402

from chronoflow.flows.artifact import load_model  # noqa: E402
from chronoflow.flows.flow_ops import FlowLogpOp, StarTables, flow_logp_with_grad, tabulated_logp  # noqa: E402
from chronoflow.analysis.forward import synthetic_cluster  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return load_model()


def _stars(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 1.3, n), rng.uniform(0.6, 2.4, n), np.log10(rng.uniform(0.01, 0.05, n))


def test_flow_op_equals_torch_and_has_exact_gradients(model):
    import copy

    import torch

    log_p, colour, log_err = _stars(6)
    ctx = np.column_stack([np.linspace(1.5, 3.4, 6), colour, log_err])
    op = FlowLogpOp(model)
    value = op(log_p, ctx)[0].eval()
    reference = copy.deepcopy(model).double().log_prob(torch.as_tensor(log_p), torch.as_tensor(ctx), check_domain=False)
    np.testing.assert_allclose(value, reference.numpy(), atol=1e-6)  # the criterion: equal to torch to 1e-6 (float64)
    verify_grad(lambda y, c: op(y, c)[0], [log_p, ctx], rng=np.random.default_rng(1), abs_tol=1e-4, rel_tol=1e-4)


def test_tables_match_the_exact_flow(model):
    import pytensor
    import pytensor.tensor as pt

    log_p, colour, log_err = _stars(60, seed=3)
    tables = StarTables(model, log_p, colour, log_err, np.arange(2.0, 3.6, 0.005), np.linspace(-0.08, 0.08, 33))
    ages, offset = pt.dmatrix(), pt.dscalar()
    fn = pytensor.function([ages, offset], tabulated_logp(tables, ages, offset))
    a = np.random.default_rng(4).uniform(2.3, 3.3, (60, 5))
    approx = fn(a, 0.0123)
    exact = flow_logp_with_grad(model, np.repeat(log_p, 5), np.column_stack([a.ravel(), np.repeat(colour - 0.0123, 5),
                                                                           np.repeat(log_err, 5)]))[0].reshape(60, 5)
    assert np.abs(approx - exact).max() < 0.03
    assert np.abs((approx - exact).sum(axis=0)).max() < 0.1  # summed over 60 stars, per node


def test_table_and_exact_models_agree(model):
    from chronoflow.inference.hierarchical import build_cluster_model

    df = synthetic_cluster(500.0, 40, seed=5, model=model)
    models = [build_cluster_model(df, model, center=np.log10(500.0), likelihood=k) for k in ("table", "exact")]
    points = [models[0].initial_point()]
    points.append({k: v + 0.05 for k, v in points[0].items()})
    for point in points:
        lp = [m.compile_logp()(point) for m in models]
        assert lp[0] == pytest.approx(lp[1], abs=0.05)


@pytest.mark.slow
def test_recovery_membership_and_seeds(model):
    from chronoflow.inference.hierarchical import full_cluster_age

    truth = {"age": 400.0, "spread": 0.03, "offset": 0.015}
    df = synthetic_cluster(truth["age"], 200, colours=np.linspace(0.6, 2.5, 100), reddening_offset=truth["offset"],
                           age_spread_dex=truth["spread"], seed=11, model=model)
    # Data drawn at colour errors below the training floor are tighter than the model (which ages
    # them at the floor) allows: keep the recovery inside the domain.
    df = df[df["e_BPRP_0"] >= 10 ** model.domain.log10_e_bprp0[0]].reset_index(drop=True)
    field = df.head(5).assign(GaiaDR3_ID=-np.arange(1001, 1006), Prot=120.0, BPRP_0=0.9, mem_prob_source=0.6,
                              is_member=False)  # fmt: skip
    res = full_cluster_age(pd.concat([df, field], ignore_index=True), model=model, draws=400, tune=400,
                           chains=2, seed=3, progressbar=False)  # fmt: skip
    post = res.idata.posterior
    for name, value in (("log10_age", np.log10(truth["age"])), ("age_spread_dex", truth["spread"]),
                        ("reddening_offset", truth["offset"])):  # fmt: skip
        lo, hi = np.percentile(post[name].values.ravel(), [2.5, 97.5])
        assert lo <= value <= hi, (name, lo, value, hi)
    used = res.stars[res.stars["used"]]
    assert (used.tail(5)["p_member"] < 0.1).all() and used.head(150)["p_member"].median() > 0.8
    assert res.rhat_max <= 1.02 and res.to_dict()["method"] == "full"
    again = full_cluster_age(pd.concat([df, field], ignore_index=True), model=model, draws=400, tune=400,
                             chains=2, seed=3, progressbar=False)  # fmt: skip
    np.testing.assert_array_equal(post["log10_age"].values, again.idata.posterior["log10_age"].values)


@pytest.mark.slow
def test_full_agrees_with_fast_on_a_real_cluster(model, catalogue):
    from chronoflow.inference.hierarchical import full_cluster_age

    full = full_cluster_age(catalogue, "NGC6811", model=model, draws=400, tune=400, chains=2, seed=0,
                            progressbar=False)  # fmt: skip
    fast = full.fast.summary
    assert abs(full.to_dict()["log10_age_myr"]["median"] - fast["median"]) <= fast["p84"] - fast["p16"]
    # nutpie is a dependency, so this is its path (the package default)
    assert full.settings["sampler"] == "nutpie"


@pytest.mark.slow
def test_cli_full_json(catalogue_path, tmp_path):
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "chronoflow.cli", "age-cluster", str(catalogue_path), "--cluster", "NGC752",
                          "--method", "full", "--draws", "100", "--tune", "100", "--chains", "2", "--json", "--out",
                          str(tmp_path / "idata.nc")], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    payload = json.loads(res.stdout)
    assert set(payload) == {"cluster", "n_rows", "n_used", "log10_age_myr", "age_myr", "method", "model",
                            "age_spread_dex", "reddening_offset", "rhat_max", "divergences", "error_dex", "flag"}  # fmt: skip
    assert payload["method"] == "full" and payload["cluster"] == "NGC752"
    assert isinstance(payload["divergences"], int) and payload["divergences"] >= 0
    e, q = payload["error_dex"], payload["log10_age_myr"]
    assert e["statistical"] == pytest.approx((q["p84"] - q["p16"]) / 2) and e["total"] >= max(e["statistical"], e["model"])
    # The observed periods are a likelihood term per star: the saved InferenceData has a pointwise
    # log_likelihood group, and PSIS-LOO runs on it.
    import arviz as az

    idata = az.from_netcdf(tmp_path / "idata.nc")
    assert idata.log_likelihood["log10_prot"].shape == (2, 100, payload["n_used"])
    loo = az.loo(idata, pointwise=True)
    assert np.isfinite(loo.elpd_loo) and len(loo.loo_i) == payload["n_used"]


def test_full_and_fast_refuse_each_others_arguments(catalogue, catalogue_path):
    import subprocess
    import sys

    from chronoflow.inference.ages import cluster_age
    from chronoflow.errors import ChronoflowError
    from chronoflow.inference.hierarchical import full_cluster_age

    with pytest.raises(ChronoflowError, match="full_cluster_age"):
        cluster_age(catalogue, "NGC752", method="full")
    with pytest.raises(TypeError, match="prior"):
        full_cluster_age(catalogue, "NGC752", prior="flat")
    with pytest.raises(TypeError, match="draws"):
        cluster_age(catalogue, "NGC752", draws=100)
    for args, word in ((["--method", "full", "--f-out", "0.1", "--prior", "flat"], "--f-out, --prior are not used by --method full"),
                       (["--chains", "2"], "--chains is not used by --method fast")):  # fmt: skip
        res = subprocess.run([sys.executable, "-m", "chronoflow.cli", "age-cluster", str(catalogue_path), "--cluster", "NGC752",
                              *args], capture_output=True, text=True)  # fmt: skip
        assert res.returncode == 2 and word in res.stderr and "Traceback" not in res.stderr, res.stderr
