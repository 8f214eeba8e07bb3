"""chronoflow: gyrochronology with a conditional normalizing flow.

Ages of stars and star clusters from their rotation periods, built on the open-cluster rotator
catalogue of the ChronoFlow paper (Van-Lane et al.). The pipeline, lowest layer first:
catalogue and extinction -> flow -> inference -> forward modelling / systematics -> CLI.
"""

from ._version import __version__
from .catalogue import (
    add_cluster,
    catalogue_registry,
    load_catalogue,
    save_catalogue,
    summarize,
    training_sample,
    validate_catalogue,
)
from .errors import CatalogueError, ChronoflowError, DomainError, ModelError
from .extinction import deredden_bprp, deredden_table, extinction_coefficients, extinction_from_dustmap

__all__ = [
    "__version__",
    "CatalogueError",
    "ChronoflowError",
    "DomainError",
    "ModelError",
    "add_cluster",
    "catalogue_registry",
    "deredden_bprp",
    "deredden_table",
    "extinction_coefficients",
    "extinction_from_dustmap",
    "load_catalogue",
    "save_catalogue",
    "summarize",
    "training_sample",
    "validate_catalogue",
]
