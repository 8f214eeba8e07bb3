"""chronoflow: gyrochronology with a conditional normalizing flow.

Ages of stars and star clusters from their rotation periods, built on the open-cluster rotator
catalogue of the ChronoFlow paper (Van-Lane et al.). The pipeline, lowest layer first:
``data`` (catalogue, extinction) -> ``flows`` (flow, training, ensemble, model files) ->
``inference`` (likelihood, posterior grids, fast and hierarchical ages) -> ``analysis`` (forward
models, systematics, validation) -> ``scale`` (streaming, Dask) -> plotting, CLI.

The public names below are imported on first use, so ``import chronoflow`` (and the CLI's
``--help``) does not pay for torch until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "inference.ages": ["ClusterAge", "cluster_age", "cluster_ages", "star_ages"],
    "flows.artifact": ["load_model", "save_model"],
    "data.catalogue": ["add_cluster", "catalogue_registry", "load_catalogue", "save_catalogue", "summarize",
                  "training_sample", "validate_catalogue"],
    "errors": ["CatalogueError", "ChronoflowError", "DomainError", "ModelError"],
    "data.extinction": ["deredden_bprp", "deredden_table", "extinction_coefficients", "extinction_from_dustmap"],
    "flows.flow": ["FlowConfig", "make_context"],
    "analysis.forward": ["sample_periods", "spin_down_tracks", "synthetic_cluster"],
    "inference.hierarchical": ["FullClusterAge", "full_cluster_age"],
    "inference.single_star": ["StarAge", "star_age"],
    "inference.likelihood": ["StarInputs", "star_flags"],
    "analysis.systematics": ["systematics_sweep"],
    "flows.training": ["TrainConfig", "train"],
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *sorted(_WHERE)]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .analysis.forward import sample_periods, spin_down_tracks, synthetic_cluster
    from .analysis.systematics import systematics_sweep
    from .data.catalogue import (
        add_cluster,
        catalogue_registry,
        load_catalogue,
        save_catalogue,
        summarize,
        training_sample,
        validate_catalogue,
    )
    from .data.extinction import (
        deredden_bprp,
        deredden_table,
        extinction_coefficients,
        extinction_from_dustmap,
    )
    from .errors import CatalogueError, ChronoflowError, DomainError, ModelError
    from .flows.artifact import load_model, save_model
    from .flows.flow import FlowConfig, make_context
    from .flows.training import TrainConfig, train
    from .inference.ages import ClusterAge, cluster_age, cluster_ages, star_ages
    from .inference.hierarchical import FullClusterAge, full_cluster_age
    from .inference.likelihood import StarInputs, star_flags
    from .inference.single_star import StarAge, star_age


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'chronoflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_WHERE))
