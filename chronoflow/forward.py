"""Forward modelling with the flow: the model density in the period-colour plane."""

from __future__ import annotations

import numpy as np

from .flow import RotationModel, make_context

__all__ = ["density_map"]


def density_map(
    model: RotationModel,
    age_myr: float,
    colour_grid: np.ndarray,
    log_prot_grid: np.ndarray,
    e_bprp0: float = 0.02,
    check_domain: bool = True,
) -> np.ndarray:
    """Model density p(log10 Prot | age, colour) on a period-colour grid.

    Parameters
    ----------
    model
        A trained model.
    age_myr
        Age [Myr].
    colour_grid
        (BP-RP)0 values [mag], shape ``[n_colour]``.
    log_prot_grid
        log10 Prot values [log10 d], shape ``[n_period]``.
    e_bprp0
        Colour uncertainty [mag] assumed for every point.
    check_domain
        Warn when the age or colours lie outside the training domain.

    Returns
    -------
    numpy.ndarray, shape ``[n_period, n_colour]``
        Density per unit log10 Prot at each (period, colour); each column integrates to 1 over
        the full period axis.
    """
    colour_grid = np.asarray(colour_grid, dtype=float)
    log_prot_grid = np.asarray(log_prot_grid, dtype=float)
    ctx = make_context(age_myr, colour_grid, e_bprp0)[None, :, :]
    return np.exp(model.log_prob(log_prot_grid[:, None], ctx, check_domain=check_domain))
