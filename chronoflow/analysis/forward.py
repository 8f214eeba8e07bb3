"""Forward modelling with the flow: periods of populations, synthetic clusters, spin-down
tracks and densities in the period-colour plane.

Ages are in Myr and colours in mag; ``astropy.units.Quantity`` inputs are converted once on entry.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.tables import quantity_table
from ..errors import DomainError
from ..flows.artifact import resolve_model
from ..flows.flow import RotationModel, make_context
from ..inference.likelihood import PHYSICAL_BPRP0

__all__ = ["density_map", "sample_periods", "spin_down_tracks", "synthetic_cluster", "synthetic_field", "TRACK_QUANTILES"]

#: Quantiles [%] of the spin-down tracks: median, 1 and 2 sigma.
TRACK_QUANTILES = (2.5, 16.0, 50.0, 84.0, 97.5)


def _to_value(x: Any, unit: str, name: str) -> np.ndarray:
    if hasattr(x, "unit"):
        from astropy import units as u

        try:
            return np.asarray(x.to_value(u.Unit(unit)), dtype=float)
        except u.UnitConversionError:
            raise DomainError(f"{name} has unit {x.unit}; expected something convertible to {unit}") from None
    return np.asarray(x, dtype=float)


def _check_ages(age_myr: np.ndarray, model: RotationModel, allow_extrapolation: bool) -> None:
    if np.any(~np.isfinite(age_myr)) or np.any(age_myr <= 0):
        raise DomainError(f"ages must be finite and > 0 Myr, got {age_myr[~(np.isfinite(age_myr) & (age_myr > 0))][:3].tolist()}")
    lo, hi = (10 ** v for v in model.domain.log10_age_myr)
    outside = (age_myr < lo * 0.999) | (age_myr > hi * 1.001)
    if outside.any() and not allow_extrapolation:
        raise DomainError(
            f"age {age_myr[outside][0]:g} Myr lies outside the model's calibrated range {lo:.3g} - {hi:.4g} Myr; "
            "pass allow_extrapolation=True to extrapolate"
        )


def _check_colours(colour: np.ndarray, model: RotationModel, allow_extrapolation: bool) -> None:
    """Colours the model can speak for: inside its training colours, or beyond them only with
    ``allow_extrapolation``; colours no star has (:data:`~chronoflow.inference.likelihood.PHYSICAL_BPRP0`)
    never."""
    lo, hi = PHYSICAL_BPRP0
    impossible = (colour < lo) | (colour > hi)
    if impossible.any():
        raise DomainError(f"(BP-RP)0 = {colour[impossible][0]:g} mag is not a star's colour; allowed: {lo:g} - {hi:g} mag")
    c_lo, c_hi = model.domain.bprp0
    outside = (colour < c_lo) | (colour > c_hi)
    if outside.any() and not allow_extrapolation:
        raise DomainError(f"(BP-RP)0 = {colour[outside][0]:g} mag lies outside the model's training colours "
                          f"{c_lo:.3g} - {c_hi:.3g} mag; pass allow_extrapolation=True to extrapolate")


def sample_periods(
    ages,
    colours,
    colour_err=0.02,
    *,
    n: int = 1,
    seed: int | None = 0,
    model: RotationModel | str | None = None,
    allow_extrapolation: bool = False,
) -> pd.DataFrame:
    """Rotation periods drawn from the flow for any mix of ages and colours.

    Parameters
    ----------
    ages
        Ages [Myr] (float, array or Quantity), broadcast against ``colours``.
    colours
        De-reddened colours (BP-RP)0 [mag].
    colour_err
        Colour uncertainties [mag] the model is conditioned on.
    n
        Draws per (age, colour) pair.
    seed
        Seed of the draws (``None``: fresh randomness).
    model
        A loaded model, a path, or ``None`` for the shipped model.
    allow_extrapolation
        Permit ages outside the calibrated range of the model.

    Returns
    -------
    pandas.DataFrame or astropy.table.QTable
        One row per draw: ``age_myr`` [Myr], ``bprp0`` [mag], ``e_bprp0`` [mag], ``draw``,
        ``log10_prot`` [log10 d] and ``prot_d`` [d]. A ``QTable`` with these units when any
        input is an astropy Quantity.
    """
    if int(n) < 1:
        raise DomainError(f"n must be >= 1, got {n}")
    model = resolve_model(model)
    age, col, err = np.broadcast_arrays(_to_value(ages, "Myr", "ages"), _to_value(colours, "mag", "colours"),
                                        _to_value(colour_err, "mag", "colour_err"))
    age, col, err = age.ravel(), col.ravel(), err.ravel()
    _check_ages(age, model, allow_extrapolation)
    for name, values, ok, allowed in (("colours", col, np.isfinite(col), "finite (BP-RP)0 [mag]"),
                                      ("colour_err", err, np.isfinite(err) & (err > 0), "finite and > 0 mag")):
        if not ok.all():
            bad = np.flatnonzero(~ok)
            raise DomainError(f"{name}[{bad[0]}] = {values[bad[0]]} ({bad.size} such value(s)); allowed: {allowed}")
    _check_colours(col, model, allow_extrapolation)
    log_p = model.sample(make_context(age, col, err), int(n), seed=seed, check_domain=not allow_extrapolation)
    k = len(age)
    out = pd.DataFrame(
        {
            "age_myr": np.tile(age, n), "bprp0": np.tile(col, n), "e_bprp0": np.tile(err, n),
            "draw": np.repeat(np.arange(n), k), "log10_prot": log_p.ravel(), "prot_d": 10 ** log_p.ravel(),
        }
    )  # fmt: skip
    return quantity_table(out) if any(hasattr(x, "unit") for x in (ages, colours, colour_err)) else out


def spin_down_tracks(
    colours,
    ages=None,
    *,
    quantiles=TRACK_QUANTILES,
    colour_err: float = 0.02,
    model: RotationModel | str | None = None,
    allow_extrapolation: bool = False,
) -> pd.DataFrame:
    """Quantiles of the rotation period against age at fixed colours.

    Parameters
    ----------
    colours
        (BP-RP)0 [mag] of the tracks.
    ages
        Ages [Myr]; default 100 log-spaced ages over the model's calibrated range.
    quantiles
        Percentiles in (0, 100); default 2.5, 16, 50, 84, 97.5.
    colour_err
        Colour uncertainty [mag].

    Returns
    -------
    pandas.DataFrame
        One row per (colour, age): ``bprp0`` [mag], ``age_myr`` [Myr], and ``prot_pXX`` [d]
        for each percentile XX. Exact quantiles (the flow is monotone), no sampling noise.
    """
    model = resolve_model(model)
    col = np.atleast_1d(_to_value(colours, "mag", "colours")).ravel()
    if ages is None:
        lo, hi = model.domain.log10_age_myr
        age = np.logspace(lo, hi, 100)
    else:
        age = np.atleast_1d(_to_value(ages, "Myr", "ages")).ravel()
    _check_ages(age, model, allow_extrapolation)
    if not np.isfinite(col).all():
        raise DomainError(f"colours must be finite (BP-RP)0 [mag], got {col[~np.isfinite(col)][0]}")
    _check_colours(col, model, allow_extrapolation)
    qs = np.asarray(quantiles, dtype=float) / 100
    if np.any((qs <= 0) | (qs >= 1)):
        raise DomainError(f"percentiles must lie in (0, 100), got {list(quantiles)}")
    ctx = make_context(age[None, :], col[:, None], colour_err)  # [colours, ages, 3]
    log_p = model.quantile(qs[:, None, None], ctx[None])  # [quantiles, colours, ages]
    out = pd.DataFrame({"bprp0": np.repeat(col, len(age)), "age_myr": np.tile(age, len(col))})
    for q, values in zip(quantiles, log_p):
        out[f"prot_p{q:g}"] = 10 ** values.ravel()
    return out


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
    ctx = make_context(float(_to_value(age_myr, "Myr", "age_myr")), colour_grid, e_bprp0)[None, :, :]
    return np.exp(model.log_prob(log_prot_grid[:, None], ctx, check_domain=check_domain))


def synthetic_cluster(
    age_myr: float,
    n_stars: int,
    *,
    colours=None,
    colour_err=(0.01, 0.05),
    f_field: float = 0.0,
    f_outlier: float = 0.0,
    reddening_offset: float = 0.0,
    age_spread_dex: float = 0.0,
    name: str = "synthetic",
    seed: int = 0,
    model: RotationModel | str | None = None,
    allow_extrapolation: bool = False,
) -> pd.DataFrame:
    """A synthetic cluster in the catalogue schema, with truth columns.

    Members draw their periods from the flow at the cluster age (each at its own age when
    ``age_spread_dex`` > 0). A fraction ``f_outlier`` of members are replaced by outliers (binaries
    or fast rotators: log10 Prot uniform on [-1, 0.5]). A fraction ``f_field`` of the rows are field
    stars: ages log-uniform over 0.1 - 10 Gyr, periods from the flow at those ages, and low
    membership probabilities. ``reddening_offset`` is added to every observed colour (an error
    in E(BP-RP)), so the table's ``BPRP_0`` differs from ``true_bprp0``.

    Parameters
    ----------
    age_myr
        Cluster age [Myr].
    n_stars
        Rows in the table (members + field), > 0.
    colours
        Intrinsic colours [mag] to draw from (e.g. a real cluster's ``BPRP_0``); default uniform
        on [0.5, 3.0] mag.
    colour_err
        (low, high) of a uniform colour error [mag], or an array to draw from.
    f_field, f_outlier
        Field fraction of the rows, outlier fraction of the members, in [0, 1].
    reddening_offset
        Added to every observed colour [mag].
    age_spread_dex
        Gaussian spread of the members' log10 ages [dex].
    name
        Value of ``cluster`` and ``subgroup``.
    seed
        Seed of every random choice.

    Returns
    -------
    pandas.DataFrame
        Catalogue columns plus ``true_log10_age``, ``true_bprp0``, ``is_member`` and
        ``is_outlier``. Members have ``mem_prob_source`` ~ U(0.7, 1), field stars ~ U(0, 0.5).
    """
    if int(n_stars) < 1:
        raise DomainError(f"n_stars must be >= 1, got {n_stars}")
    for label, f in (("f_field", f_field), ("f_outlier", f_outlier)):
        if not 0 <= f <= 1:
            raise DomainError(f"{label} must be in [0, 1], got {f}")
    if age_spread_dex < 0:
        raise DomainError(f"age_spread_dex must be >= 0, got {age_spread_dex}")
    model = resolve_model(model)
    age = float(_to_value(age_myr, "Myr", "age_myr"))
    _check_ages(np.array([age]), model, allow_extrapolation)
    rng = np.random.default_rng(seed)
    n = int(n_stars)
    pool = np.asarray(colours, dtype=float) if colours is not None else None
    if pool is not None:
        pool = pool[np.isfinite(pool)]
        if pool.size == 0:
            raise DomainError("colours holds no finite value to draw from")
    true_colour = rng.choice(pool, n) if pool is not None else rng.uniform(0.5, 3.0, n)
    if isinstance(colour_err, tuple) and len(colour_err) == 2:
        err = rng.uniform(*colour_err, n)
    else:
        err = rng.choice(np.asarray(colour_err, dtype=float), n)
    is_field = rng.uniform(size=n) < f_field
    is_outlier = ~is_field & (rng.uniform(size=n) < f_outlier)
    log_age = np.full(n, np.log10(age))
    log_age[~is_field] += rng.normal(0, age_spread_dex, (~is_field).sum()) if age_spread_dex > 0 else 0.0
    log_age[is_field] = rng.uniform(2, 4, is_field.sum())
    ctx = make_context(10**log_age, true_colour, err)
    log_p = model.sample(ctx, 1, seed=int(rng.integers(2**31)), check_domain=False)[0]
    log_p[is_outlier] = rng.uniform(-1.0, 0.5, is_outlier.sum())
    p_mem = np.where(is_field, rng.uniform(0, 0.5, n), rng.uniform(0.7, 1.0, n))
    return pd.DataFrame(
        {
            "GaiaDR3_ID": -(np.arange(n, dtype=np.int64) + 1), "cluster": name, "subgroup": name,
            "data_catalog": "synthetic", "Prot_source": "synthetic", "Prot": 10**log_p,
            "mem_prob_hdbscan": p_mem, "mem_prob_source": p_mem, "dr3_parallax_zpt_corrected": np.nan,
            "dr3_ruwe": 1.0, "G_0": np.nan, "BPRP_0": true_colour + reddening_offset, "e_BPRP_0": err,
            "dustmap": "synthetic", "fiducial_age_Myr": age, "cmd_exclude": 0, "dered_exclude": 0, "phot_exclude": 0,
            "true_log10_age": log_age, "true_bprp0": true_colour, "is_member": ~is_field, "is_outlier": is_outlier,
        }
    )  # fmt: skip


#: Kinds of bad rows :func:`synthetic_field` injects, in turn: the column spoilt and its value.
BAD_KINDS = {"missing_prot": ("Prot", np.nan), "negative_prot": ("Prot", -1.0), "zero_error": ("e_BPRP_0", 0.0),
             "missing_colour": ("BPRP_0", np.nan)}  # fmt: skip


def synthetic_field(
    n_stars: int,
    *,
    catalogue: pd.DataFrame | None = None,
    age_range_myr: tuple[float, float] | None = None,
    bad_fraction: float = 0.0,
    seed: int = 0,
    model: RotationModel | str | None = None,
    block: int = 200_000,
) -> pd.DataFrame:
    """A synthetic survey of single field stars (any size) for scale tests and benchmarks.

    Colours and colour errors are drawn jointly from a real catalogue (every star with finite,
    positive values), with a small jitter (0.02 mag in colour, 10 % in error), so their
    distribution and correlation are realistic; ages are log-uniform; periods are drawn from the
    flow at each star's age, colour and error. Memory of the draw is bounded by ``block``.

    Parameters
    ----------
    n_stars
        Rows, > 0.
    catalogue
        Table with ``BPRP_0`` and ``e_BPRP_0`` [mag] to draw colours and errors from (default:
        :func:`chronoflow.data.catalogue.load_catalogue`).
    age_range_myr
        (low, high) ages [Myr] of the log-uniform age distribution (default: the model's
        calibrated range).
    bad_fraction
        Fraction of rows made unusable on purpose, cycling through :data:`BAD_KINDS`
        (missing period, negative period, zero colour error, missing colour).
    seed
        Seed of every random choice.
    model
        A loaded model, a path, or ``None`` for the shipped model.
    block
        Stars drawn from the flow per call.

    Returns
    -------
    pandas.DataFrame
        ``GaiaDR3_ID`` (negative: synthetic), ``Prot`` [d], ``BPRP_0``, ``e_BPRP_0`` [mag],
        ``true_log10_age`` [log10 Myr] and ``bad_kind`` (``""`` for good rows).
    """
    n = int(n_stars)
    if n < 1:
        raise DomainError(f"n_stars must be >= 1, got {n_stars}")
    if not 0 <= bad_fraction <= 1:
        raise DomainError(f"bad_fraction must be in [0, 1], got {bad_fraction}")
    model = resolve_model(model)
    if catalogue is None:
        from ..data.catalogue import load_catalogue

        catalogue = load_catalogue()
    col = pd.to_numeric(catalogue["BPRP_0"], errors="coerce").to_numpy(float)
    err = pd.to_numeric(catalogue["e_BPRP_0"], errors="coerce").to_numpy(float)
    good = np.isfinite(col) & np.isfinite(err) & (err > 0)
    if not good.any():
        raise DomainError("catalogue holds no row with a finite BPRP_0 and a positive e_BPRP_0 to draw from")
    col, err = col[good], err[good]
    lo, hi = (np.log10(v) for v in age_range_myr) if age_range_myr is not None else model.domain.log10_age_myr
    if not hi > lo:
        raise DomainError(f"age_range_myr must have low < high, got {age_range_myr}")
    rng = np.random.default_rng(seed)
    pick = rng.integers(len(col), size=n)
    colour = np.clip(col[pick] + rng.normal(0, 0.02, n), col.min(), col.max())
    error = err[pick] * np.exp(rng.normal(0, 0.1, n))
    log_age = rng.uniform(lo, hi, n)
    log_p = np.empty(n)
    for start in range(0, n, int(block)):
        part = slice(start, min(start + int(block), n))
        ctx = make_context(10 ** log_age[part], colour[part], error[part])
        log_p[part] = model.sample(ctx, 1, seed=int(rng.integers(2**31)), check_domain=False)[0]
    df = pd.DataFrame(
        {"GaiaDR3_ID": -(np.arange(n, dtype=np.int64) + 1), "Prot": 10**log_p, "BPRP_0": colour, "e_BPRP_0": error,
         "true_log10_age": log_age, "bad_kind": ""}
    )  # fmt: skip
    bad = np.flatnonzero(rng.uniform(size=n) < bad_fraction)
    for i, (kind, (column, value)) in enumerate(BAD_KINDS.items()):
        rows = bad[i :: len(BAD_KINDS)]
        df.loc[rows, column] = value
        df.loc[rows, "bad_kind"] = kind
    return df
