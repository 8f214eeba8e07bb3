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


@pytest.mark.parametrize("kind", ["spline_flow", "gaussian"])
def test_log_prob_is_differentiable_in_inputs(kind):
    """Autograd gradients of ln p in log10 Prot and in every context value equal central finite
    differences (float64 model, step 1e-6: truncation and rounding errors ~1e-9, tolerance 1e-6)."""
    import copy

    model = copy.deepcopy(_random_model(kind)).double()
    # inside the spline's bins and, for the last star, beyond its bound (linear tail)
    y0 = torch.tensor([0.3, 1.1, -0.4, 3.5], dtype=torch.float64)
    ctx0 = torch.as_tensor(make_context([50.0, 900.0, 5.0, 2500.0], [0.9, 1.4, 2.2, 0.7], [0.02, 0.05, 0.1, 0.015]),
                           dtype=torch.float64)  # fmt: skip
    y, ctx = y0.clone().requires_grad_(True), ctx0.clone().requires_grad_(True)
    # nflows' log_prob, and (spline flow) the fast row path the hierarchical model differentiates
    paths = {"log_prob": lambda yv, cv: model.log_prob(yv, cv, check_domain=False)}
    if kind == "spline_flow":
        paths["log_prob_pairs"] = model.log_prob_pairs
    h = 1e-6
    for name, f in paths.items():
        y, ctx = y0.clone().requires_grad_(True), ctx0.clone().requires_grad_(True)
        f(y, ctx).sum().backward()  # each star's ln p depends only on its own inputs: the sum's gradient is per star
        with torch.no_grad():
            fd_y = (f(y0 + h, ctx0) - f(y0 - h, ctx0)) / (2 * h)
            torch.testing.assert_close(y.grad, fd_y, rtol=1e-6, atol=1e-6, msg=lambda m: f"{name} d/dy: {m}")
            for j in range(3):
                step = torch.zeros_like(ctx0)
                step[:, j] = h
                fd = (f(y0, ctx0 + step) - f(y0, ctx0 - step)) / (2 * h)
                torch.testing.assert_close(ctx.grad[:, j], fd, rtol=1e-6, atol=1e-6, msg=lambda m: f"{name} d/dctx{j}: {m}")
        assert y.grad.abs().min() > 1e-3 and ctx.grad.abs().max() > 1e-3  # the check is not 0 == 0


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


def _random_inputs(flow, n, seed):
    """Random contexts over the training domain widened by 20 % each side, and periods of which a
    third lie beyond the first spline's bound (its linear tails), a third near it, a third inside."""
    rng = np.random.default_rng(seed)
    d = flow.domain

    def widened(lo, hi, size):
        return rng.uniform(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), size)

    ctx = np.stack([widened(*d.log10_age_myr, n), widened(*d.bprp0, n), widened(*d.log10_e_bprp0, n)], axis=-1)
    s, bound = flow.scaling, flow.config.tail_bound
    z = np.concatenate([rng.uniform(-bound, bound, n - 2 * (n // 3)),  # inside the spline
                        rng.choice([-1, 1], n // 3) * rng.uniform(bound, 2 * bound, n // 3),  # tails
                        rng.choice([-1, 1], n // 3) * (bound + rng.normal(0, 0.05, n // 3))])  # across the bound
    return s.log_prot_mean + s.log_prot_std * rng.permutation(z), ctx


@pytest.mark.parametrize("which", ["random_flow", "shipped_member"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 0.0), (torch.float32, 1e-4)], ids=["float64", "float32"])
def test_fast_density_equals_nflows_at_random_inputs(which, dtype, tol):
    """The fast spline paths (log_prob_pairs, and log_prob_grid with one row of ages per star)
    equal nflows' log_prob at 6,000 random (period, age, colour, error) draws, tails included:
    to 1e-6 nats in float64 (measured: 6e-9), and in float32 to 1e-4 (1 + |ln p|) nats, float32
    rounding of the two orders of operations (measured: 4e-4 at ln p = -50, 3e-5 relative)."""
    atol = 1e-6 if dtype == torch.float64 else tol
    import copy

    if which == "shipped_member":
        from chronoflow.flows.artifact import load_model

        flow = load_model()
        flow = getattr(flow, "members", [flow])[0]
    else:
        flow = _random_model()
    flow = copy.deepcopy(flow).to(dtype).eval()
    n = 6000
    log_prot, ctx = _random_inputs(flow, n, seed=12)
    with torch.no_grad():
        reference = flow.log_prob(torch.as_tensor(log_prot), torch.as_tensor(ctx), check_domain=False).double().numpy()
        rows = flow.log_prob_pairs(torch.as_tensor(log_prot), torch.as_tensor(ctx)).double().numpy()
    assert np.isfinite(reference).all() and reference.min() < -20  # the tails are reached
    np.testing.assert_allclose(rows, reference, rtol=tol, atol=atol)
    # the grid path: star i at its own row of 3 ages, the first of which is its random age
    ages = np.stack([ctx[:, 0], ctx[::-1, 0], np.roll(ctx[:, 0], 1)], axis=-1)  # [stars, 3]
    grid = flow.log_prob_grid(log_prot, ctx[:, 1], ctx[:, 2], ages, max_pairs=4096)  # several chunks
    full = np.stack(np.broadcast_arrays(ages, ctx[:, None, 1], ctx[:, None, 2]), axis=-1)
    with torch.no_grad():
        expected = flow.log_prob(torch.as_tensor(np.repeat(log_prot[:, None], 3, axis=1)), torch.as_tensor(full),
                                 check_domain=False).double().numpy()  # fmt: skip
    np.testing.assert_allclose(grid[:, 0], reference, rtol=tol, atol=atol)
    np.testing.assert_allclose(grid, expected, rtol=tol, atol=atol)
