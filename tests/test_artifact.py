"""Model files: round trip, verification, clear errors, the shipped model's card."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chronoflow.artifact import default_model_path, load_model, save_model
from chronoflow.errors import ModelError
from chronoflow.flow import FlowConfig, Standardization, TrainingDomain, build_model, make_context


@pytest.fixture
def model():
    m = build_model(FlowConfig(n_bins=6, hidden=16), Standardization(0.8, 0.5, (2.3, 1.2, -1.6), (0.9, 0.6, 0.3)),
                    TrainingDomain((0, 4), (0, 3), (-3, 0)), seed=5)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    m.card = {"note": "test"}
    return m


def test_round_trip_is_identical(model, tmp_path):
    path = save_model(model, tmp_path / "m.pt")
    back = load_model(path)
    ctx = make_context(np.geomspace(2, 4000, 50), np.linspace(0, 3, 50), 0.03)
    x = np.linspace(-1, 2, 50)
    np.testing.assert_array_equal(back.log_prob(x, ctx), model.log_prob(x, ctx))
    np.testing.assert_array_equal(back.sample(ctx, 3, seed=4), model.sample(ctx, 3, seed=4))
    assert back.card["note"] == "test" and back.card["architecture"]["n_bins"] == 6
    assert back.domain == model.domain


def test_truncated_file(model, tmp_path):
    path = save_model(model, tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="is corrupted or not a chronoflow model"):
        load_model(path)


def test_tampered_weights(model, tmp_path):
    path = save_model(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = payload["state_dict"][key] + 1e-3
    torch.save(payload, path)
    with pytest.raises(ModelError, match="weights do not match the checksum"):
        load_model(path)


def test_not_a_model_and_missing(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(ModelError, match="corrupted or not a chronoflow model"):
        load_model(junk)
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "absent.pt")


def test_future_format_version(model, tmp_path):
    import json

    path = save_model(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    card = json.loads(payload["card_json"])
    card["format_version"] = 99
    payload["card_json"] = json.dumps(card)
    torch.save(payload, path)
    with pytest.raises(ModelError, match="model format version 99"):
        load_model(path)


def test_shipped_model_card_is_complete():
    model = load_model()
    card = model.card
    assert default_model_path().name == "default.pt"
    for key in ("architecture", "training", "catalogue_sha256", "clusters", "chronoflow_version", "torch_version",
                "nflows_version", "training_domain", "validation", "created", "weights_sha256"):
        assert key in card, key
    assert card["training"]["seed"] == 0
    flow, base = card["validation"]["flow"], card["validation"]["baseline"]
    assert flow["nll"] < base["nll"]  # the flow beats the Gaussian baseline on held-out clusters
    assert set(flow["nll_per_cluster"]) == set(card["split"]["val_clusters"])
    assert 0.5 < flow["coverage_68"] < 0.85 and 0.85 < flow["coverage_95"] <= 1.0
    # the shipped model is an ensemble with one card, and carries its leave-one-out model-error term
    from chronoflow.ensemble import FlowEnsemble

    ens = card["ensemble"]
    assert isinstance(model, FlowEnsemble) and model.n_members == ens["n_members"] == len(ens["members"]) >= 3
    assert ens["seeds"] == list(range(ens["n_members"]))
    me = card["model_error"]
    assert me["curve"]["n_clusters"] == 23 and len(me["curve"]["log10_age_myr"]) == len(me["curve"]["sigma_dex"])
    assert all(s >= 0 for s in me["curve"]["sigma_dex"])
    assert 0.55 <= me["loo_metrics"]["coverage_total_all"] <= 0.85
