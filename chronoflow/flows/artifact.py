"""Model artifacts: one file holding the weights and a JSON model card.

The card records everything needed to trust and reproduce a model: architecture, training
configuration and seed, the sha256 of the training catalogue and the clusters used, package
versions, the training domain, validation metrics and the creation date. A sha256 of the weights
is stored beside them, so a corrupted file is refused on load.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .card import MODEL_FORMAT, MODEL_FORMAT_VERSION, READABLE_FORMAT_VERSIONS
from .flow import (
    FlowConfig,
    RotationModel,
    Standardization,
    TrainingDomain,
    build_model,
)

__all__ = ["DEFAULT_MODEL", "MODEL_ENV", "default_model_path", "load_model", "resolve_model", "save_model", "weights_sha256"]

#: File name of the pretrained model shipped in ``chronoflow/models``.
DEFAULT_MODEL = "default.pt"
#: Environment variable naming a model file to use instead of the shipped one.
MODEL_ENV = "CHRONOFLOW_MODEL"


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors of a state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_model(model: RotationModel, path: str | os.PathLike, card: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and its card to one file (a torch archive of tensors and a JSON string).

    Parameters
    ----------
    model
        A trained :class:`~chronoflow.flows.flow.RotationModel`.
    path
        Destination (conventionally ``*.pt``).
    card
        The model card; default ``model.card`` (set by :func:`chronoflow.flows.training.train`).

    Returns
    -------
    Path
    """
    card = dict(card if card is not None else getattr(model, "card", {}))
    card.update(
        format=MODEL_FORMAT,
        format_version=MODEL_FORMAT_VERSION,
        architecture=model.config.to_dict(),
        standardization=model.scaling.to_dict(),
        training_domain=model.domain.to_dict(),
    )
    members = getattr(model, "members", None)
    if members is not None:  # a FlowEnsemble: each member's architecture and scaling
        card["members_meta"] = [
            {"architecture": m.config.to_dict(), "standardization": m.scaling.to_dict(), "training_domain": m.domain.to_dict()}
            for m in members
        ]
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    card["weights_sha256"] = weights_sha256(state)
    payload = {"card_json": json.dumps(card, sort_keys=True), "state_dict": state}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def default_model_path() -> Path:
    """Path of the model every command uses: ``$CHRONOFLOW_MODEL``, else the shipped model."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env).expanduser()
    return Path(str(resources.files("chronoflow.models").joinpath(DEFAULT_MODEL)))


def load_model(path: str | os.PathLike | None = None) -> RotationModel:
    """Load a model file, verify it, and return the model in eval mode with its ``card``.

    Parameters
    ----------
    path
        A file written by :func:`save_model`; default :func:`default_model_path`.

    Returns
    -------
    RotationModel
        With ``model.card`` (dict) attached. The file is read and verified once (and again only
        when it changes); every call returns an independent copy of that model, so editing one
        result's card or weights never reaches another.

    Raises
    ------
    ModelError
        Missing file, not a chronoflow model, corrupted weights (checksum mismatch) or a format
        version this release cannot read.
    """
    path = Path(path) if path is not None else default_model_path()
    # The cached model is never handed out: a deep copy (weights, buffers and card) is cheap next
    # to reading and verifying the file, and keeps one caller's edits away from the next.
    return copy.deepcopy(_load_cached(str(path.resolve()) if path.exists() else str(path), _mtime(path)))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1.0


@lru_cache(maxsize=8)
def _load_cached(path_str: str, mtime: float) -> RotationModel:
    path = Path(path_str)
    if not path.is_file():
        raise ModelError(f"model file not found: {path} (train one with `chronoflow train --out FILE`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        card = json.loads(payload["card_json"])
        state = payload["state_dict"]
    except Exception as exc:
        raise ModelError(f"{path} is corrupted or not a chronoflow model ({type(exc).__name__}: {str(exc)[:120]})") from None
    if card.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path} is not a chronoflow model (format {card.get('format')!r})")
    if card.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise ModelError(
            f"{path} has model format version {card.get('format_version')}; this chronoflow reads versions "
            f"{READABLE_FORMAT_VERSIONS} (upgrade chronoflow or retrain the model)"
        )
    if weights_sha256(state) != card.get("weights_sha256"):
        raise ModelError(f"{path} is corrupted: its weights do not match the checksum in its card")
    try:
        if "members_meta" in card:
            from .ensemble import FlowEnsemble

            model = FlowEnsemble([_build(meta) for meta in card["members_meta"]])
        else:
            model = _build(card)
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"{path} is incompatible with this chronoflow ({type(exc).__name__}: {str(exc)[:120]})") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.card = card
    return model


def _build(meta: dict[str, Any]) -> RotationModel:
    """An untrained model with the architecture, standardization and domain recorded in ``meta``."""
    domain = TrainingDomain(**{k: tuple(v) for k, v in meta["training_domain"].items()})
    scaling = Standardization(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["standardization"].items()})
    return build_model(FlowConfig(**meta["architecture"]), scaling, domain)


def resolve_model(model: RotationModel | str | os.PathLike | None) -> RotationModel:
    """A loaded model as given, or :func:`load_model` of a path (``None``: the default model)."""
    return model if isinstance(model, RotationModel) else load_model(model)
