"""The likelihood layer: validated star inputs and the cluster mixture likelihood.

Every way of ageing (single stars, the fast cluster posterior, the hierarchical model,
streaming and Dask) reads its stars through :class:`StarInputs` and, for clusters, combines the
flow density with the background through :func:`mixture_terms`. One rule, one formula:

* :class:`StarInputs` parses ``Prot`` [d], ``BPRP_0`` [mag] and ``e_BPRP_0`` [mag] once into the
  flow's inputs (log10 Prot, colour, log10 error raised to the training floor) and the flags of
  :func:`star_flags` (why a row cannot be aged, or is aged at a domain edge).
* :func:`mixture_terms` is the ChronoFlow outlier mixture for star *i*:
  ``L_i = w_i p_flow,i + (1 - w_i) p_bg(log P_i)`` with ``w_i = p_member,i (1 - f_out)``; it
  works on numpy arrays (fast grid) and on PyTensor tensors (hierarchical model) alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ChronoflowError, DomainError
from ..flows.flow import RotationModel

__all__ = [
    "DEFAULT_BACKGROUND",
    "FLAG_SEP",
    "OUT_OF_DOMAIN_FLAGS",
    "PHYSICAL_BPRP0",
    "REQUIRED",
    "UNUSABLE_FLAGS",
    "StarInputs",
    "add_flag",
    "background_logpdf",
    "has_flag",
    "membership_probabilities",
    "mixture_terms",
    "require_columns",
    "star_flags",
    "unusable",
]

#: Separator of the flags in a row's ``flag`` text (``"off_sequence;likely_binary"``): a semicolon,
#: so that a CSV field of several flags needs no quoting.
FLAG_SEP = ";"
#: Columns a table needs for ageing.
REQUIRED = ("Prot", "BPRP_0", "e_BPRP_0")
#: The paper's background: uniform in log10 Prot [log10 d] over this range.
DEFAULT_BACKGROUND = (-1.75, 2.5)
#: (BP-RP)0 [mag] that no star has: bluer than the hottest O stars (about -0.5 mag) with room for
#: errors, or redder than the coolest L/T dwarfs Gaia measures (about 5 mag). Never aged, not even
#: with ``include_out_of_domain=True``.
PHYSICAL_BPRP0 = (-1.0, 6.0)
#: Flags of rows that cannot be aged: NaN ages, never used in a cluster.
UNUSABLE_FLAGS = ("missing_value", "nonpositive", "colour_impossible", "zero_likelihood")
#: Flags of rows outside the training domain: NaN ages and not used in a cluster unless
#: ``include_out_of_domain=True`` (then aged by the flow's extrapolation, and still flagged).
OUT_OF_DOMAIN_FLAGS = ("period_outside_domain", "colour_outside_domain", "error_above_domain")

Background = tuple[float, float] | Callable[[np.ndarray], np.ndarray]


def require_columns(df: pd.DataFrame, columns: tuple[str, ...] = REQUIRED) -> None:
    """Raise one line naming the columns of ``columns`` that ``df`` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ChronoflowError(
            f"missing column{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}; ageing needs "
            "Prot [d], BPRP_0 [mag] and e_BPRP_0 [mag]"
        )


def add_flag(flags: np.ndarray, mask: np.ndarray, name: str) -> None:
    """Append ``name`` to the flags of the rows in ``mask`` (in place), joined by :data:`FLAG_SEP`."""
    flags[mask] = np.where(flags[mask] == "", name, flags[mask] + FLAG_SEP + name)


def has_flag(flags: pd.Series | np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Rows whose flags (joined by :data:`FLAG_SEP`) hold any of ``names``."""
    pattern = "|".join(rf"(?:^|{FLAG_SEP}){n}(?:{FLAG_SEP}|$)" for n in names)
    return pd.Series(np.asarray(flags, dtype=object)).str.contains(pattern, regex=True).to_numpy(bool)


def unusable(flags: pd.Series | np.ndarray, include_out_of_domain: bool = False) -> np.ndarray:
    """Rows that get no age: unusable, or outside the training domain unless it is included."""
    return has_flag(flags, UNUSABLE_FLAGS if include_out_of_domain else UNUSABLE_FLAGS + OUT_OF_DOMAIN_FLAGS)


@dataclass(frozen=True)
class StarInputs:
    """The flow's inputs for a table of stars, parsed and flagged once.

    Attributes
    ----------
    log_prot
        log10 Prot [log10 d].
    colour
        (BP-RP)0 [mag].
    log_err
        log10 e_(BP-RP)0 [log10 mag], raised to the training domain's floor
        (``error_below_domain`` rows are aged at the floor).
    flags
        Flags per row, joined by :data:`FLAG_SEP` ('' when fine), see :func:`star_flags`.
    index
        The table's index.

    Rows that cannot be aged hold NaN (or a meaningless finite value) in the arrays; use
    :meth:`usable` to select the rows to evaluate.
    """

    log_prot: np.ndarray
    colour: np.ndarray
    log_err: np.ndarray
    flags: np.ndarray
    index: pd.Index

    @classmethod
    def from_frame(cls, df: pd.DataFrame, model: RotationModel) -> StarInputs:
        """Parse ``Prot`` [d], ``BPRP_0`` [mag], ``e_BPRP_0`` [mag] of ``df`` (text that is not a
        number counts as missing) and flag each row against ``model.domain``.

        Flags (joined by :data:`FLAG_SEP`, a semicolon):

        * ``missing_value``: Prot, BPRP_0 or e_BPRP_0 is missing, infinite or not a number;
          ``nonpositive``: Prot <= 0 d or e_BPRP_0 <= 0 mag; ``colour_impossible``: (BP-RP)0
          outside :data:`PHYSICAL_BPRP0` (-1 to 6 mag), which no star has (it also carries
          ``colour_outside_domain``). Never aged.
        * ``period_outside_domain``, ``colour_outside_domain``, ``error_above_domain``: log10
          Prot, (BP-RP)0 or log10 e_BPRP_0 beyond the training stars' ranges (the shipped model:
          0.031-172 d, -0.001-4.28 mag, errors up to 0.45 mag). Not aged unless
          ``include_out_of_domain=True``, which ages them by the flow's extrapolation.
        * ``error_below_domain``: a colour error smaller than the training stars' (0.014 mag for
          the shipped model). Aged, with the error raised to that floor (the model never learned
          how tight a sequence a smaller error gives).
        """
        require_columns(df, REQUIRED)
        prot, col, err = (pd.to_numeric(df[c], errors="coerce").to_numpy(float) for c in REQUIRED)
        flags = np.full(len(df), "", dtype=object)
        missing = ~(np.isfinite(prot) & np.isfinite(col) & np.isfinite(err))
        add_flag(flags, missing, "missing_value")
        d = model.domain
        with np.errstate(invalid="ignore", divide="ignore"):
            nonpositive = ~missing & ((prot <= 0) | (err <= 0))
            add_flag(flags, nonpositive, "nonpositive")
            fine = ~missing & ~nonpositive
            log_prot, log_err = np.log10(np.where(fine, prot, np.nan)), np.log10(np.where(fine, err, np.nan))
            add_flag(flags, fine & ((log_prot < d.log10_prot[0]) | (log_prot > d.log10_prot[1])), "period_outside_domain")
            add_flag(flags, ~missing & ((col < d.bprp0[0]) | (col > d.bprp0[1])), "colour_outside_domain")
            add_flag(flags, ~missing & ((col < PHYSICAL_BPRP0[0]) | (col > PHYSICAL_BPRP0[1])), "colour_impossible")
            add_flag(flags, fine & (log_err > d.log10_e_bprp0[1]), "error_above_domain")
            add_flag(flags, fine & (log_err < d.log10_e_bprp0[0]), "error_below_domain")
        return cls(log_prot, col, np.maximum(log_err, d.log10_e_bprp0[0]), flags, df.index)

    def __len__(self) -> int:
        return len(self.log_prot)

    def usable(self, include_out_of_domain: bool = False) -> np.ndarray:
        """Rows that can be aged (boolean mask by position)."""
        return ~unusable(self.flags, include_out_of_domain)

    def take(self, rows: np.ndarray) -> StarInputs:
        """The inputs of the rows at ``rows`` (positions or a boolean mask)."""
        return StarInputs(self.log_prot[rows], self.colour[rows], self.log_err[rows], self.flags[rows], self.index[rows])


def star_flags(df: pd.DataFrame, model: RotationModel) -> pd.Series:
    """Why each row cannot be aged, or is aged at an edge of the training domain ('' when fine).

    The rule every entry point applies (see :meth:`StarInputs.from_frame` for the flags);
    :func:`~chronoflow.inference.ages.star_ages` adds ``zero_likelihood`` (the posterior is zero on the
    whole grid) and ``age_below_calibration`` / ``age_above_calibration``.
    """
    return pd.Series(StarInputs.from_frame(df, model).flags, index=df.index, name="flag")


def background_logpdf(background: Background, log_prot: np.ndarray) -> np.ndarray:
    """Log density of the field background at ``log_prot`` [log10 d]: uniform on ``(lo, hi)``
    (zero density, -inf, outside) or a callable returning the log density."""
    if callable(background):
        return np.asarray(background(log_prot), dtype=float)
    lo, hi = background
    if not hi > lo:
        raise DomainError(f"background range must have lo < hi (log10 d), got {background}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((log_prot >= lo) & (log_prot <= hi), -math.log(hi - lo), -np.inf)


def membership_probabilities(df: pd.DataFrame, membership: str | None) -> np.ndarray:
    """The membership column of ``df`` as probabilities (all 1 when ``membership`` is None).

    Raises
    ------
    ChronoflowError
        The column is absent, or a value is missing or outside [0, 1].
    """
    if membership is None:
        return np.ones(len(df))
    if membership not in df.columns:
        raise ChronoflowError(f"missing membership column {membership!r}; pass membership=None to treat every star as a member")
    p_mem = pd.to_numeric(df[membership], errors="coerce").to_numpy(float)
    bad = ~(np.isfinite(p_mem) & (p_mem >= 0) & (p_mem <= 1))
    if bad.any():
        first = df.index[np.flatnonzero(bad)[0]]
        first = first.item() if hasattr(first, "item") else first  # 11, not np.int64(11)
        raise ChronoflowError(
            f"column {membership!r}: {int(bad.sum())} used stars have a membership that is missing or outside "
            f"[0, 1] (first at row {first!r}: {float(p_mem[bad][0])!r}); allowed: a probability in [0, 1]"
        )
    return p_mem


def mixture_terms(log_flow: Any, p_member: Any, f_out: Any, log_bg: Any, xp: ModuleType = np) -> tuple[Any, Any]:
    """The outlier mixture of each star: ``(log w p_flow, log L)`` with
    ``L = w p_flow + (1 - w) p_bg`` and ``w = p_member (1 - f_out)``.

    Parameters
    ----------
    log_flow
        ln p_flow(log10 Prot | age, colour, error) per star (any shape that broadcasts with the
        others, e.g. ``[stars, ages]``).
    p_member
        Membership probability per star, in [0, 1] (:func:`membership_probabilities`).
    f_out
        Outlier fraction, in [0, 1).
    log_bg
        ln p_bg(log10 Prot) per star (:func:`background_logpdf`).
    xp
        The array module: ``numpy`` (default) or ``pytensor.tensor`` (both name ``log``,
        ``log1p`` and ``logaddexp`` alike). With PyTensor, keep ``p_member > 0``: a star of zero
        membership carries no information and its ``log 0`` has no gradient.

    Returns
    -------
    (log_member, log_total)
        ``exp(log_member - log_total)`` is the probability that the star follows the cluster
        sequence rather than the background.
    """
    w = p_member * (1.0 - f_out)
    if xp is np:
        with np.errstate(divide="ignore"):
            log_w, log_1mw = np.log(w), np.log1p(-w)
    else:
        log_w, log_1mw = xp.log(w), xp.log1p(-w)
    log_member = log_w + log_flow
    return log_member, xp.logaddexp(log_member, log_1mw + log_bg)
