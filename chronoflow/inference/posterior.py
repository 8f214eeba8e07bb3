"""Posteriors on a grid of log10 age: priors, normalization, CDF quantiles, coarse-to-fine grids.

Everything here works on arrays ``[..., ages]`` whose last axis is the age grid, so one call
summarizes any number of stars at once. Quantiles come from the CDF (deterministic), never from
random draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import numpy as np
from scipy.integrate import cumulative_trapezoid
from scipy.special import logsumexp

from ..errors import DomainError

__all__ = [
    "DEFAULT_GRID",
    "Prior",
    "age_grid",
    "cdf",
    "cdf_quantiles",
    "check_grid",
    "coarse_indices",
    "interpolate_to_grid",
    "log_prior",
    "normalize",
    "quantiles",
    "summarize_posterior",
    "trapezoid_log_weights",
]

#: Default grid: log10 age/Myr from 0 to 4.14 (1 Myr - 13.8 Gyr), 1000 points.
DEFAULT_GRID = (0.0, 4.14, 1000)

Prior = Union[str, Callable[[np.ndarray], np.ndarray]]


def age_grid(lo: float = DEFAULT_GRID[0], hi: float = DEFAULT_GRID[1], n: int = DEFAULT_GRID[2]) -> np.ndarray:
    """Uniform grid in log10 age [log10 Myr]; default 0 - 4.14 (1 Myr - 13.8 Gyr), 1000 points."""
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise DomainError(f"age grid needs finite lo < hi (log10 Myr), got lo={lo}, hi={hi}")
    if n < 3:
        raise DomainError(f"age grid needs at least 3 points, got {n}")
    return np.linspace(lo, hi, int(n))


def check_grid(grid, name: str = "grid") -> np.ndarray:
    """A user-supplied age grid as a float array, or one line saying what is wrong with it.

    Parameters
    ----------
    grid
        log10 age [log10 Myr]: one-dimensional, finite, strictly increasing, at least 3 points.
    name
        The argument's name, for the message.

    Raises
    ------
    DomainError
        The grid is not numeric, not one-dimensional, has fewer than 3 points, a non-finite value
        or is not strictly increasing.
    """
    try:
        arr = np.asarray(grid, dtype=float)
    except (TypeError, ValueError):
        raise DomainError(f"{name} must be numbers (log10 age [log10 Myr]), got {type(grid).__name__}") from None
    if arr.ndim != 1 or len(arr) < 3:
        raise DomainError(f"{name} must be a 1-D array of at least 3 log10 ages [log10 Myr], got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        raise DomainError(f"{name} must be finite: {name}[{bad[0]}] = {arr[bad[0]]}")
    steps = np.flatnonzero(np.diff(arr) <= 0)
    if len(steps):
        i = steps[0]
        raise DomainError(f"{name} must be strictly increasing: {name}[{i}] = {arr[i]} >= {name}[{i + 1}] = {arr[i + 1]}")
    return arr


def log_prior(grid: np.ndarray, prior: Prior = "log-flat") -> np.ndarray:
    """Log prior density per unit log10 age on ``grid``.

    Parameters
    ----------
    grid
        log10 age [log10 Myr].
    prior
        ``"log-flat"`` (flat in log age, the default), ``"flat"`` (flat in age, i.e. density
        proportional to age per unit log age), or a callable mapping log10 age to a log density.
    """
    if callable(prior):
        values = np.asarray(prior(grid), dtype=float)
        if values.shape != grid.shape:
            raise DomainError(f"the prior callable must return one value per grid age ({grid.shape}), got {values.shape}")
        return values
    if prior in ("log-flat", "logflat", "log_flat"):
        return np.zeros_like(grid)
    if prior == "flat":
        return math.log(10.0) * grid
    raise DomainError(f"unknown prior {prior!r}; allowed: 'log-flat', 'flat', or a callable of log10 age")


def trapezoid_log_weights(grid: np.ndarray) -> np.ndarray:
    """Log weights of the trapezoid rule on ``grid``: ``integral f = sum_i exp(log w_i) f_i``."""
    d = np.diff(grid)
    return np.log(0.5 * (np.r_[0.0, d] + np.r_[d, 0.0]))


def normalize(log_post: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Turn unnormalized log posteriors ``[..., ages]`` into densities per dex that integrate to 1
    (trapezoid rule); rows that are zero (-inf) at every age become NaN."""
    with np.errstate(invalid="ignore"):
        log_area = logsumexp(log_post + trapezoid_log_weights(grid), axis=-1, keepdims=True)
        return np.exp(log_post - log_area)


def cdf(density: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Cumulative distribution of grid densities ``[..., ages]`` (trapezoid rule), 0 at the first
    grid point and 1 at the last."""
    c = cumulative_trapezoid(density, grid, axis=-1, initial=0.0)
    return c / c[..., -1:]


def quantiles(density: np.ndarray, grid: np.ndarray, qs=(0.16, 0.5, 0.84)) -> np.ndarray:
    """Quantiles of grid densities by linear interpolation of the CDF: ``array[..., len(qs)]``."""
    return cdf_quantiles(cdf(density, grid), grid, qs)


def cdf_quantiles(c: np.ndarray, grid: np.ndarray, qs=(0.16, 0.5, 0.84)) -> np.ndarray:
    """:func:`quantiles` from CDFs ``c`` already on the grid (:func:`cdf`)."""
    flat = c.reshape(-1, c.shape[-1])
    out = np.empty((flat.shape[0], len(qs)))
    rows = np.arange(flat.shape[0])
    for j, q in enumerate(qs):  # a handful of quantiles, each vectorized over all rows
        hi = np.clip((flat < q).sum(axis=-1), 1, flat.shape[1] - 1)
        c0, c1 = flat[rows, hi - 1], flat[rows, hi]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(c1 > c0, (q - c0) / (c1 - c0), 0.5)
        out[:, j] = grid[hi - 1] + np.clip(t, 0, 1) * (grid[hi] - grid[hi - 1])
    return out.reshape(c.shape[:-1] + (len(qs),))


def summarize_posterior(density: np.ndarray, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Median, 16th/84th percentiles and MAP [log10 Myr] of grid densities ``[..., ages]``."""
    q = quantiles(density, grid, (0.16, 0.5, 0.84))
    return {"p16": q[..., 0], "median": q[..., 1], "p84": q[..., 2], "map": grid[np.argmax(density, axis=-1)]}


def coarse_indices(n_grid: int, n_coarse: int) -> np.ndarray:
    """Indices of ``n_coarse`` nearly evenly spaced grid points, always including both ends."""
    n_coarse = int(min(max(n_coarse, 4), n_grid))
    return np.unique(np.round(np.linspace(0, n_grid - 1, n_coarse)).astype(int))


def interpolate_to_grid(values: np.ndarray, nodes: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Cubic-spline interpolation of ``values[..., nodes]`` (log densities) onto the full grid."""
    from scipy.interpolate import CubicSpline

    finite = np.isfinite(values)
    if finite.all():
        return CubicSpline(nodes, values, axis=-1)(grid)
    # Rows with -inf (zero density) at some nodes: interpolate the clipped values; rows with no
    # finite node are -inf everywhere (zero density, flagged by the callers).
    floor = np.min(np.where(finite, values, np.inf), axis=-1, keepdims=True) - 50.0
    empty = ~np.isfinite(floor)
    out = CubicSpline(nodes, np.where(finite, values, np.where(empty, 0.0, floor)), axis=-1)(grid)
    return np.where(empty, -np.inf, out)

