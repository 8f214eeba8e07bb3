"""Model files: round trip, verification, clear errors, the shipped model's card against its file
and its training catalogue."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from chronoflow.flows.artifact import default_model_path, load_model, save_model
from chronoflow.errors import ModelError
from chronoflow.flows.flow import FlowConfig, Standardization, TrainingDomain, build_model, make_context


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


def _random_inputs(domain, n=200, seed=11):
    """Random (log10 Prot, context) inside a training domain (seeded)."""
    rng = np.random.default_rng(seed)
    age = 10 ** rng.uniform(*domain.log10_age_myr, n)
    ctx = make_context(age, rng.uniform(*domain.bprp0, n), 10 ** rng.uniform(*domain.log10_e_bprp0, n))
    # periods within the domain's, and within 0.1-100 d where it has none (models saved before it)
    lo, hi = max(domain.log10_prot[0], -1.0), min(domain.log10_prot[1], 2.0)
    return rng.uniform(lo, hi, n), ctx


def test_random_inputs_round_trip_through_a_file(model, tmp_path):
    back = load_model(save_model(model, tmp_path / "m.pt"))
    x, ctx = _random_inputs(model.domain)
    np.testing.assert_array_equal(back.log_prob(x, ctx), model.log_prob(x, ctx))
    np.testing.assert_array_equal(back.cdf(x, ctx), model.cdf(x, ctx))


def test_shipped_ensemble_round_trip_is_identical(tmp_path):
    shipped = load_model()
    back = load_model(save_model(shipped, tmp_path / "copy.pt"))
    assert type(back) is type(shipped) and back.n_members == shipped.n_members
    x, ctx = _random_inputs(shipped.domain)
    np.testing.assert_array_equal(back.log_prob(x, ctx), shipped.log_prob(x, ctx))
    np.testing.assert_array_equal(back.sample(ctx[:20], 2, seed=3), shipped.sample(ctx[:20], 2, seed=3))
    assert back.card["weights_sha256"] == shipped.card["weights_sha256"]  # the same weights: the same checksum
    assert back.card["ensemble"] == shipped.card["ensemble"] and back.card["clusters"] == shipped.card["clusters"]


def test_shipped_weights_match_the_checksum_in_their_card():
    """The card's weights_sha256 recomputed here from the file's tensors, by the documented rule
    (names, dtypes, shapes and bytes, in name order); the loaded model carries exactly those."""
    payload = torch.load(default_model_path(), map_location="cpu", weights_only=True)
    card = json.loads(payload["card_json"])
    h = hashlib.sha256()
    for name in sorted(payload["state_dict"]):
        t = payload["state_dict"][name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    assert card["weights_sha256"] == h.hexdigest()
    loaded = load_model().state_dict()
    assert loaded.keys() == payload["state_dict"].keys()
    assert all(torch.equal(loaded[k], payload["state_dict"][k]) for k in loaded)


def test_a_tampered_copy_of_the_shipped_model_is_refused(tmp_path):
    path = tmp_path / "default.pt"
    shutil.copyfile(default_model_path(), path)
    payload = torch.load(path, weights_only=True)
    key = max(payload["state_dict"])
    flat = payload["state_dict"][key].clone().view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(np.inf, dtype=flat.dtype))  # one number, by one ulp
    payload["state_dict"][key] = flat.view(payload["state_dict"][key].shape)
    torch.save(payload, path)
    with pytest.raises(ModelError, match="weights do not match the checksum"):
        load_model(path)


def test_a_card_that_does_not_fit_its_weights_is_refused(model, tmp_path):
    path = save_model(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    card = json.loads(payload["card_json"])
    card["architecture"]["hidden"] = 32  # the weights are of a 16-wide network
    payload["card_json"] = json.dumps(card)
    torch.save(payload, path)
    with pytest.raises(ModelError, match="incompatible"):
        load_model(path)


def test_shipped_card_describes_the_catalogue_and_stars_it_was_trained_on(catalogue, catalogue_path):
    """The training domain and standardization on the card are what TrainingDomain.fit and
    Standardization.fit give for the catalogue under the card's cuts, on the card's clusters."""
    from chronoflow.data.catalogue import training_sample
    from chronoflow.flows.training import catalogue_sha256

    shipped = load_model()
    card = shipped.card
    assert card["catalogue_file_sha256"] == hashlib.sha256(catalogue_path.read_bytes()).hexdigest()
    assert card["catalogue_sha256"] == catalogue_sha256(catalogue)
    kept, _ = training_sample(catalogue, ruwe_max=card["training"]["ruwe_max"])
    kept = kept[kept["BPRP_0"].notna() & kept["e_BPRP_0"].notna() & kept["cluster"].isin(card["clusters"])]
    assert sorted(kept["cluster"].unique()) == card["clusters"]  # every cluster named has stars, none is missing
    assert card["n_training_stars"] == len(kept)
    ctx = make_context(kept["fiducial_age_Myr"].to_numpy(float), kept["BPRP_0"].to_numpy(float), kept["e_BPRP_0"].to_numpy(float))
    log_prot = np.log10(kept["Prot"].to_numpy(float))
    domain, scaling = TrainingDomain.fit(ctx, log_prot), Standardization.fit(log_prot, ctx)
    # rel 1e-12: the same float64 operations on the same stars; only summation order could differ
    for key, value in domain.to_dict().items():
        assert card["training_domain"][key] == pytest.approx(value, rel=1e-12), key
    for meta in card["members_meta"]:  # every member saw the same stars (bootstrap weights aside)
        assert meta["training_domain"] == card["training_domain"]
        for key, value in scaling.to_dict().items():
            assert meta["standardization"][key] == pytest.approx(value, rel=1e-12), key
    # and the loaded model checks inputs against that domain
    for k, v in domain.to_dict().items():
        assert getattr(shipped.domain, k) == pytest.approx(tuple(v), rel=1e-12), k


def test_shipped_model_card_is_complete():
    model = load_model()
    card = model.card
    assert default_model_path().name == "default.pt"
    for key in ("architecture", "training", "catalogue_sha256", "clusters", "chronoflow_version", "torch_version",
                "nflows_version", "training_domain", "validation", "created", "weights_sha256"):
        assert key in card, key
    flow, base = card["validation"]["flow"], card["validation"]["baseline"]
    assert flow["nll"] < base["nll"]  # the flow beats the Gaussian baseline on held-out clusters
    assert set(flow["nll_per_cluster"]) == set(card["split"]["val_clusters"])
    assert not set(card["split"]["val_clusters"]) & set(card["split"]["train_clusters"])
    # plausibility bounds of a calibrated predictive density (not copies of the card's numbers)
    assert 0.5 < flow["coverage_68"] < 0.85 and 0.85 < flow["coverage_95"] <= 1.0
    # the shipped model is an ensemble with one card: its members are the weights in the file
    from chronoflow.flows.ensemble import FlowEnsemble

    ens = card["ensemble"]
    assert isinstance(model, FlowEnsemble) and model.n_members == ens["n_members"] == len(ens["members"]) == len(card["members_meta"]) >= 3
    assert ens["seeds"] == [card["training"]["seed"] + k for k in range(ens["n_members"])]  # member k: seed + k
    assert [m["seed"] for m in ens["members"]] == ens["seeds"]
    assert card["n_parameters"] == sum(p.numel() for p in model.parameters())
    # it carries its leave-one-out model-error term, over calibration clusters it was trained on
    me = card["model_error"]
    assert 0 < me["curve"]["n_clusters"] <= len(card["clusters"])
    assert len(me["curve"]["log10_age_myr"]) == len(me["curve"]["sigma_dex"])
    assert all(s >= 0 for s in me["curve"]["sigma_dex"])
    assert 0.55 <= me["loo_metrics"]["coverage_total_all"] <= 0.85
