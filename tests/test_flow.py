"""The conditional density: normalization, sampling, CDF, broadcasting, domain flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from chronoflow.flows.flow import (
    DomainWarning,
    FlowConfig,
    Standardization,
    TrainingDomain,
    build_model,
    make_context,
)

SCALING = Standardization(0.8, 0.5, (2.3, 1.2, -1.6), (0.9, 0.6, 0.3))
DOMAIN = TrainingDomain((0.2, 3.6), (-0.1, 3.5), (-2.6, 0.1))
CONTEXTS = [(5.0, 0.7, 0.01), (120.0, 1.2, 0.02), (700.0, 2.0, 0.05), (3000.0, 1.0, 0.2)]


def _random_model(kind="spline_flow", seed=3):
    model = build_model(FlowConfig(kind=kind), SCALING, DOMAIN, seed=seed)
    # Push the weights away from the near-identity initialisation so the density has structure.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.15 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


@pytest.fixture(params=["random_flow", "random_gaussian", "shipped"])
def model(request):
    if request.param == "shipped":
        from chronoflow.flows.artifact import load_model

        return load_model()
    return _random_model("spline_flow" if request.param == "random_flow" else "gaussian")


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_density_integrates_to_one(model, ctx):
    x = np.linspace(-8, 9, 40001)
    lp = model.log_prob(x, make_context(*ctx))
    assert np.all(np.isfinite(lp))
    assert np.trapezoid(np.exp(lp), x) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("ctx", CONTEXTS[:2])
def test_samples_follow_the_density(model, ctx):
    context = make_context(*ctx)
    draws = model.sample(context, 4000, seed=11)
    assert draws.shape == (4000,)
    res = stats.kstest(draws, lambda v: model.cdf(np.asarray(v), context))
    assert res.pvalue > 1e-3


def test_cdf_matches_integral_of_density():
    model = _random_model()
    context = make_context(300.0, 1.1, 0.03)
    x = np.linspace(-8, 3, 30001)
    numeric = np.trapezoid(np.exp(model.log_prob(x, context)), x)
    assert float(model.cdf(3.0, context)) == pytest.approx(numeric, abs=2e-4)


def test_broadcasting_and_numpy_torch_agree():
    model = _random_model()
    log_prot = np.linspace(-0.5, 1.5, 7)[:, None]  # 7 periods x 5 ages
    ctx = make_context(np.geomspace(10, 2000, 5), 1.0, 0.02)[None, :, :]
    lp = model.log_prob(log_prot, ctx)
    assert lp.shape == (7, 5) and lp.dtype == np.float64
    single = [model.log_prob(float(log_prot[i, 0]), ctx[0, j]) for i in range(7) for j in range(5)]
    # float32 network: batch composition changes the BLAS path at the 1e-5 level
    np.testing.assert_allclose(lp.ravel(), np.array(single, dtype=float), atol=2e-4)
    t = model.log_prob(torch.as_tensor(log_prot), torch.as_tensor(ctx))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.detach().double().numpy(), lp, atol=1e-6)


def test_log_prob_is_differentiable_in_inputs():
    model = _random_model()
    y = torch.tensor([0.3, 1.1], dtype=torch.float64, requires_grad=True)
    ctx = torch.as_tensor(make_context([50.0, 900.0], [0.9, 1.4], 0.02), dtype=torch.float64).requires_grad_(True)
    model.log_prob(y, ctx).sum().backward()
    assert torch.all(torch.isfinite(y.grad)) and torch.all(torch.isfinite(ctx.grad))


def test_sampling_is_seeded():
    model = _random_model()
    ctx = make_context([10.0, 500.0], 1.0, 0.02)
    a, b, c = (model.sample(ctx, 50, seed=s) for s in (1, 1, 2))
    assert a.shape == (50, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match="n must be >= 1"):
        model.sample(ctx, 0)


def test_domain_flags_and_warns():
    model = _random_model()
    ctx = make_context([100.0, 100.0], [1.0, 4.5], 0.02)
    np.testing.assert_array_equal(DOMAIN.contains(ctx), [True, False])
    with pytest.warns(DomainWarning, match="1 of 2 inputs lie outside the training domain"):
        model.log_prob([0.5, 0.5], ctx, check_domain=True)
    # Ages beyond the calibrators can be exempted (posterior grids scan them on purpose).
    old = make_context(13000.0, 1.0, 0.02)
    assert not DOMAIN.contains(old) and DOMAIN.contains(old, age=False)


def test_bad_context_shape():
    with pytest.raises(ValueError, match="context must have 3 values"):
        _random_model().log_prob(0.5, np.zeros((4, 2)))


def test_quantiles_invert_the_cdf(model):
    ctx = make_context([20.0, 600.0], [0.9, 1.6], 0.02)
    q = np.array([[0.025], [0.5], [0.975]])
    lp = model.quantile(q, ctx[None, :, :])
    assert lp.shape == (3, 2) and np.all(np.diff(lp, axis=0) > 0)
    np.testing.assert_allclose(model.cdf(lp, ctx[None, :, :]), np.broadcast_to(q, (3, 2)), atol=2e-4)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        model.quantile(1.0, ctx)


@pytest.mark.parametrize("which", ["random_flow", "shipped_member"])
def test_fast_density_equals_nflows_everywhere_in_the_domain(which):
    """The fast spline (the stars x ages grid and the differentiable row path the hierarchical
    model uses) is the same density as nflows' ``log_prob``: in float64 they agree to 1e-6 nats
    on a grid that spans the whole training domain (and the tails beyond the spline bound)."""
    import copy

    if which == "shipped_member":
        from chronoflow.flows.artifact import load_model

        flow = load_model()
        flow = getattr(flow, "members", [flow])[0]
    else:
        flow = _random_model()
    flow = copy.deepcopy(flow).double().eval()
    d = flow.domain
    ages = np.linspace(*d.log10_age_myr, 9)
    colours = np.linspace(*d.bprp0, 7)
    errors = np.linspace(*d.log10_e_bprp0, 4)
    lo, hi = d.log10_prot if np.isfinite(d.log10_prot).all() else (-1.5, 2.3)  # a hand-made domain has no period range
    log_prot = np.linspace(lo - 0.3, hi + 0.3, 41)
    c, e, p = (a.ravel() for a in np.meshgrid(colours, errors, log_prot, indexing="ij"))
    grid = flow.log_prob_grid(p, c, e, ages)  # [stars, ages]
    ctx = np.stack(np.broadcast_arrays(ages[None, :], c[:, None], e[:, None]), axis=-1)  # [stars, ages, 3]
    with torch.no_grad():
        reference = flow.log_prob(torch.as_tensor(np.broadcast_to(p[:, None], grid.shape).copy()), torch.as_tensor(ctx),
                                  check_domain=False).numpy()  # fmt: skip
        rows = flow.log_prob_pairs(torch.as_tensor(np.broadcast_to(p[:, None], grid.shape).reshape(-1).copy()),
                                   torch.as_tensor(ctx.reshape(-1, 3))).numpy().reshape(grid.shape)  # fmt: skip
    assert np.isfinite(reference).all()
    np.testing.assert_allclose(grid, reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rows, reference, rtol=0, atol=1e-6)
