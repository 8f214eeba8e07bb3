"""Shared fixtures: the catalogue from ../shared, seeds, and an isolated cache."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CATALOGUE = Path(
    os.environ.get("CHRONOFLOW_TEST_CATALOGUE", ROOT.parent / "shared" / "catalogs" / "prot_catalogue.csv")
)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    """Seed every RNG and keep tests off the user's cache and environment."""
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass
    monkeypatch.setenv("CHRONOFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("CHRONOFLOW_CATALOGUE", raising=False)


@pytest.fixture(scope="session")
def catalogue_path() -> Path:
    if not SHARED_CATALOGUE.is_file():
        pytest.fail(f"test data missing: {SHARED_CATALOGUE} (clone the project beside ../shared)")
    return SHARED_CATALOGUE


@pytest.fixture(scope="session")
def catalogue(catalogue_path):
    from chronoflow.catalogue import load_catalogue

    return load_catalogue(catalogue_path)
