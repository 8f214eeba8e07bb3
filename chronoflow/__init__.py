"""chronoflow: gyrochronology with a conditional normalizing flow.

Ages of stars and star clusters from their rotation periods, built on the open-cluster rotator
catalogue of the ChronoFlow paper (Van-Lane et al.). The pipeline, lowest layer first:
catalogue and extinction -> flow -> training -> inference (likelihood, posterior grids, fast
ages, hierarchical ages) -> forward modelling / systematics / validation -> plotting -> CLI.

The public names below are imported on first use, so ``import chronoflow`` (and the CLI's
``--help``) does not pay for torch until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "ages": ["ClusterAge", "cluster_age", "cluster_ages", "star_ages"],
    "artifact": ["load_model", "save_model"],
    "catalogue": ["add_cluster", "catalogue_registry", "load_catalogue", "save_catalogue", "summarize",
                  "training_sample", "validate_catalogue"],
    "errors": ["CatalogueError", "ChronoflowError", "DomainError", "ModelError"],
    "extinction": ["deredden_bprp", "deredden_table", "extinction_coefficients", "extinction_from_dustmap"],
    "flow": ["FlowConfig", "make_context"],
    "forward": ["sample_periods", "spin_down_tracks", "synthetic_cluster"],
    "hierarchical": ["FullClusterAge", "full_cluster_age"],
    "likelihood": ["StarInputs", "star_flags"],
    "systematics": ["systematics_sweep"],
    "training": ["TrainConfig", "train"],
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *sorted(_WHERE)]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .ages import ClusterAge, cluster_age, cluster_ages, star_ages
    from .artifact import load_model, save_model
    from .catalogue import (add_cluster, catalogue_registry, load_catalogue, save_catalogue, summarize,
                            training_sample, validate_catalogue)
    from .errors import CatalogueError, ChronoflowError, DomainError, ModelError
    from .extinction import deredden_bprp, deredden_table, extinction_coefficients, extinction_from_dustmap
    from .flow import FlowConfig, make_context
    from .forward import sample_periods, spin_down_tracks, synthetic_cluster
    from .hierarchical import FullClusterAge, full_cluster_age
    from .likelihood import StarInputs, star_flags
    from .systematics import systematics_sweep
    from .training import TrainConfig, train


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'chronoflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_WHERE))
