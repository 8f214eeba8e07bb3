"""The device option of the batched paths: resolution, refusals, and CPU/GPU agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import chronoflow as cf
from chronoflow.errors import DomainError
from chronoflow.flows.artifact import load_model
from chronoflow.flows.device import default_max_pairs, resolve_device


def _stars(n=40, seed=3):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"Prot": rng.uniform(0.5, 25, n), "BPRP_0": rng.uniform(0.6, 3.0, n), "e_BPRP_0": rng.uniform(0.015, 0.08, n)})


def test_auto_is_the_gpu_when_torch_sees_one_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device(" AUTO ") == torch.device("cuda")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert default_max_pairs(torch.device("cpu")) < default_max_pairs(torch.device("cuda"))


@pytest.mark.parametrize("name, words", [("tpu", "unknown device 'tpu'"), ("cuda:x", "unknown device"), ("meta", "not supported"),
                                         (3.5, "unknown device")])  # fmt: skip
def test_unknown_devices_are_refused_in_one_line(name, words):
    with pytest.raises(DomainError) as err:
        resolve_device(name)
    assert words in str(err.value) and "'auto', 'cpu', 'cuda' or 'cuda:N'" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_gpu_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DomainError, match=r"device 'cuda' asked for, but torch .* sees no CUDA GPU; use device='cpu' or 'auto'"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DomainError, match=r"torch sees 1 CUDA GPU\(s\): cuda:0 - cuda:0"):
        resolve_device("cuda:3")
    # ageing functions refuse before any work
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DomainError, match="sees no CUDA GPU"):
        cf.star_ages(_stars(3), device="cuda")


def test_cpu_device_is_the_model_itself_and_gives_the_default_ages():
    model = load_model()
    assert model.on_device("cpu") is model
    stars = _stars()
    pinned = cf.star_ages(stars, device="cpu")
    default = cf.star_ages(stars)  # 'auto': the CPU here, a GPU where there is one (float32 rounding)
    cols = ["log10_age_p16", "log10_age_median", "log10_age_p84"]
    np.testing.assert_allclose(default[cols].to_numpy(), pinned[cols].to_numpy(), rtol=0, atol=1e-4)


def test_copies_on_other_devices_do_not_survive_an_age_shift():
    model = load_model()
    model.__dict__["_device_copies"] = {"cuda:0": object()}  # as if it had run on a GPU
    shifted = model.shifted_in_age(0.1)
    assert shifted.__dict__["_device_copies"] == {}
    assert all(m.__dict__.get("_device_copies", {}) == {} for m in shifted.members)
    model.__dict__["_device_copies"] = {}


def test_cli_refuses_a_bad_device_in_one_line(run_cli, tmp_path):
    path = tmp_path / "stars.csv"
    _stars(5).to_csv(path, index=False)
    res = run_cli("age-stars", str(path), "--out", str(tmp_path / "o.csv"), "--scheduler", "memory", "--device", "tpu")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == "error: unknown device 'tpu'; allowed: 'auto', 'cpu', 'cuda' or 'cuda:N'"
    # the hierarchical method builds its per-star tables on the device, so it checks it too
    res = run_cli("age-cluster", str(path), "--method", "full", "--device", "tpu")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == "error: unknown device 'tpu'; allowed: 'auto', 'cpu', 'cuda' or 'cuda:N'"


def test_hierarchical_tables_are_built_on_the_given_device(monkeypatch):
    from chronoflow.inference.hierarchical import build_cluster_model

    model = load_model()
    seen = []
    real = type(model).log_prob_grid

    def recording(self, *args, device="cpu", **kwargs):
        seen.append(resolve_device(device))
        return real(self, *args, device=device, **kwargs)

    monkeypatch.setattr(type(model), "log_prob_grid", recording)
    stars = _stars()
    build_cluster_model(stars, model, center=np.log10(500.0), membership=None, device="cpu")
    assert seen == [torch.device("cpu")]  # one batched table for the whole cluster, on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DomainError, match="sees no CUDA GPU"):
        build_cluster_model(stars, model, center=np.log10(500.0), membership=None, device="cuda")
    assert len(seen) == 1  # refused before any flow evaluation


@pytest.mark.gpu  # skipped without a CUDA GPU (conftest.py)
def test_gpu_ages_equal_cpu_ages(catalogue):
    cols = ["log10_age_p16", "log10_age_median", "log10_age_p84"]
    stars = catalogue.sample(2000, random_state=0)
    gpu, cpu = cf.star_ages(stars, device="cuda"), cf.star_ages(stars, device="cpu")
    np.testing.assert_allclose(gpu[cols].to_numpy(), cpu[cols].to_numpy(), rtol=0, atol=1e-4)
    a, b = cf.cluster_age(catalogue, "Praesepe", device="cuda"), cf.cluster_age(catalogue, "Praesepe", device="cpu")
    for key in ("p16", "median", "p84"):
        assert abs(a.summary[key] - b.summary[key]) < 1e-4


@pytest.mark.gpu  # skipped without a CUDA GPU (conftest.py)
def test_gpu_tables_equal_cpu_tables():
    from chronoflow.flows.flow_ops import StarTables

    model, stars = load_model(), _stars(200)
    args = (np.log10(stars["Prot"].to_numpy()), stars["BPRP_0"].to_numpy(), np.log10(stars["e_BPRP_0"].to_numpy()),
            np.arange(2.0, 3.0, 0.01), np.linspace(-0.08, 0.08, 17))  # fmt: skip
    gpu, cpu = StarTables(model, *args, device="cuda"), StarTables(model, *args, device="cpu")
    np.testing.assert_allclose(gpu.table, cpu.table, rtol=0, atol=1e-3)  # nats; float32 rounding differs between devices
