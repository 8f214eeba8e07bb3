"""State that must not leak between calls (issue 30): the global torch RNG, the cached loaded
model, float64 copies of shifted models and the process's torch thread count."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from chronoflow.flows.artifact import _load_cached, load_model, save_model
from chronoflow.flows.ensemble import FlowEnsemble
from chronoflow.flows.flow import (
    FlowConfig,
    Standardization,
    TrainingDomain,
    build_model,
    make_context,
)

TINY = FlowConfig(n_transforms=2, n_bins=6, hidden=16)
SCALING = Standardization(0.8, 0.5, (2.3, 1.2, -1.6), (0.9, 0.6, 0.3))
DOMAIN = TrainingDomain((0.2, 3.6), (-0.1, 3.5), (-2.6, 0.1))


def _flow(seed: int = 3):
    model = build_model(TINY, SCALING, DOMAIN, seed=seed)
    with torch.no_grad():  # away from the near-identity initialisation, so ages matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def _ensemble():
    return FlowEnsemble([_flow(3), _flow(4)]).eval()


def _inputs(n: int = 40):
    rng = np.random.default_rng(5)
    ctx = make_context(10 ** rng.uniform(0.5, 3.4, n), rng.uniform(0.3, 2.5, n), rng.uniform(0.01, 0.05, n))
    return rng.uniform(-0.2, 1.5, n), ctx


# -- 1. unseeded sampling leaves the global torch generator alone -----------------------------------
@pytest.mark.parametrize("make", [_flow, _ensemble], ids=["flow", "ensemble"])
def test_unseeded_sample_leaves_the_global_rng_alone(make):
    model = make()
    ctx = make_context([20.0, 500.0, 2000.0], [0.9, 1.4, 2.0], 0.02)
    torch.manual_seed(1234)
    before = torch.random.get_rng_state().clone()
    first = model.sample(ctx, 50)
    second = model.sample(ctx, 50)
    after = torch.random.get_rng_state()
    assert torch.equal(before, after), "an unseeded sample() changed the global torch RNG state"
    assert not np.array_equal(first, second), "two unseeded samples gave the same draws"
    np.testing.assert_array_equal(model.sample(ctx, 50, seed=7), model.sample(ctx, 50, seed=7))
    assert torch.equal(before, torch.random.get_rng_state())


def test_seeded_samples_are_unchanged():
    # the draws of a seeded call are what they were before issue 30 (torch.Generator().manual_seed)
    model = _flow()
    ctx = make_context([20.0, 500.0], [0.9, 1.4], 0.02)
    z = torch.randn((4, 2), generator=torch.Generator().manual_seed(7), dtype=model.dtype)
    np.testing.assert_array_equal(model.sample(ctx, 4, seed=7), model._push(z, torch.as_tensor(ctx)).double().numpy())


# -- 2. load_model returns an independent model per call --------------------------------------------
def test_load_model_returns_an_independent_copy_per_call(tmp_path):
    path = save_model(_ensemble(), tmp_path / "m.pt", card={"training": {"seed": 0}})
    y, ctx = _inputs()
    first = load_model(path)
    misses = _load_cached.cache_info().misses
    reference = first.log_prob(y, ctx, check_domain=False)
    state = {k: v.clone() for k, v in first.state_dict().items()}
    first.card["x"] = 1
    first.card["training"]["seed"] = 99
    with torch.no_grad():
        next(first.parameters()).add_(1.0)
    assert not np.allclose(first.log_prob(y, ctx, check_domain=False), reference)

    second = load_model(path)
    assert "x" not in second.card, "a card edit on one load_model() result reached the next one"
    assert second.card["training"]["seed"] == 0
    for name, value in second.state_dict().items():
        assert torch.equal(value, state[name]), f"an in-place edit of {name} on one load_model() result reached the next one"
    np.testing.assert_array_equal(second.log_prob(y, ctx, check_domain=False), reference)
    assert _load_cached.cache_info().misses == misses, "the file was read again: the cache must stay"
    assert all(not p.requires_grad for p in second.parameters()) and not second.training


# -- 3. a shifted model never reuses the unshifted model's float64 copy ------------------------------
@pytest.mark.parametrize("make", [_flow, _ensemble], ids=["flow", "ensemble"])
def test_float64_logp_of_a_shifted_model_is_its_own(make, tmp_path):
    from chronoflow.flows.flow_ops import flow_logp_with_grad

    model = load_model(save_model(make(), tmp_path / "m.pt", card={}))  # with a card and its checksum
    y, ctx = _inputs()
    base = flow_logp_with_grad(model, y, ctx)[0]  # the unshifted model first: its float64 copy exists
    shifted = model.shifted_in_age(0.3)
    got = flow_logp_with_grad(shifted, y, ctx)[0]
    own = copy.deepcopy(shifted).double().log_prob(y, ctx, check_domain=False)
    assert np.abs(got - base).max() > 1e-3, "the shifted model evaluated the unshifted model's float64 copy"
    np.testing.assert_allclose(got, own, rtol=0, atol=1e-6)
    # the unshifted model still gives its own density
    np.testing.assert_allclose(flow_logp_with_grad(model, y, ctx)[0], base, rtol=0, atol=0)
    # an in-place change of the weights is seen too (no stale float64 copy)
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)
    np.testing.assert_allclose(flow_logp_with_grad(model, y, ctx)[0], copy.deepcopy(model).double().log_prob(y, ctx, check_domain=False),
                               rtol=0, atol=1e-6)  # fmt: skip


def test_op_of_a_shifted_model_is_another_op(tmp_path):
    import pytensor
    import pytensor.tensor as pt

    from chronoflow.flows.flow_ops import FlowLogpOp

    model = load_model(save_model(_flow(), tmp_path / "m.pt", card={}))
    shifted = model.shifted_in_age(0.3)
    assert FlowLogpOp(model).key == model.card["weights_sha256"]  # unchanged for a loaded model
    assert FlowLogpOp(model) != FlowLogpOp(shifted)
    y_in, c_in = pt.dvector("y"), pt.dmatrix("c")
    # equal Ops on the same inputs would be merged into one node, giving the shifted density twice
    f = pytensor.function([y_in, c_in], [FlowLogpOp(model)(y_in, c_in)[0], FlowLogpOp(shifted)(y_in, c_in)[0]])
    y, ctx = _inputs()
    lp, lp_shifted = f(y, ctx)
    np.testing.assert_allclose(lp, copy.deepcopy(model).double().log_prob(y, ctx, check_domain=False), rtol=0, atol=1e-6)
    np.testing.assert_allclose(lp_shifted, copy.deepcopy(shifted).double().log_prob(y, ctx, check_domain=False), rtol=0, atol=1e-6)


# -- 4. fold_model restores the process's thread count ---------------------------------------------
def test_fold_model_restores_the_thread_count(toy_catalogue):
    from chronoflow.analysis.validation import fold_model
    from chronoflow.flows.training import TrainConfig

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = TrainConfig(max_epochs=2, patience=100, batch_size=64, val_clusters=(), threads=1)
        model = fold_model(toy_catalogue, "C", TINY, config, [2], bootstrap="none")
        assert isinstance(model, FlowEnsemble) and model.n_members == 1
        assert torch.get_num_threads() == 2, f"fold_model left torch at {torch.get_num_threads()} threads"
    finally:
        torch.set_num_threads(old)
