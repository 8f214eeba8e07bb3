"""The age of one star: :func:`star_age`, the one-star twin of :func:`~chronoflow.inference.ages.star_ages`.

``star_age(12.3, 1.05)`` builds the one-row table ``Prot``, ``BPRP_0``, ``e_BPRP_0`` (and ``e_Prot``,
``ruwe`` when given), ages it with :func:`~chronoflow.inference.ages.star_ages` and returns a
:class:`StarAge`: the percentiles, the flag, the honest posterior (with the single-star
model-error term) and the flow's posterior alone, printable as text or JSON and drawable
(:func:`chronoflow.plotting.plot_star_age`). The numbers are exactly those ``star_ages`` writes
for the same row.

>>> res = star_age(12.3, 1.05)
>>> round(res.age_myr["median"], -1), res.flag  # Myr, rounded to 10 Myr; no flag
(1470.0, '')
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DomainError
from ..flows.artifact import resolve_model
from ..flows.card import model_name
from ..flows.device import Device, resolve_device
from ..flows.flow import RotationModel
from .ages import star_ages, star_error_model
from .likelihood import FLAG_SEP
from .posterior import age_grid

__all__ = ["DEFAULT_E_BPRP0", "FLAG_MEANINGS", "LEVELS", "StarAge", "star_age"]

#: Default colour error [mag]: the median ``e_BPRP_0`` of the published catalogue (0.0271 mag over
#: its 8,029 rows, 0.0276 mag over the 7,271 training stars): a typical Gaia (BP-RP)0 whose error
#: is dominated by the reddening's. Give the star's own error when you know it: a smaller one
#: narrows the posterior (down to the training floor, 0.014 mag for the shipped model).
DEFAULT_E_BPRP0 = 0.027

#: The percentiles of a summary, in order.
LEVELS = ("p2.5", "p16", "median", "p84", "p97.5")

#: What each flag of :func:`~chronoflow.inference.ages.star_ages` means, in words. The numbers in
#: parentheses are filled from the model's domain (and left out when no model is at hand).
FLAG_MEANINGS = {
    "missing_value": "a value is missing or not a number: no age",
    "nonpositive": "the period or the colour error is <= 0: no age",
    "period_outside_domain": "the period lies outside the training stars' periods ({prot_lo:.3g} - {prot_hi:.3g} d): "
                             "no age (the flow would extrapolate)",
    "colour_outside_domain": "(BP-RP)0 lies outside the training stars' colours ({col_lo:.3g} - {col_hi:.3g} mag): "
                             "no age (the flow would extrapolate)",
    "error_above_domain": "the colour error is larger than any training star's ({err_hi:.3g} mag): no age",
    "error_below_domain": "the colour error is smaller than any training star's: aged with it raised to the "
                          "training floor ({err_lo:.3g} mag), as the model never learned tighter sequences",
    "colour_impossible": "(BP-RP)0 lies outside -1 - 6 mag, a colour no star has: no age",
    "zero_likelihood": "the posterior is zero at every age of the grid: no age",
    "age_below_calibration": "the 68 % interval reaches below the youngest calibration cluster ({age_lo:.3g} Myr), "
                             "where the flow extrapolates: the interval is open there (its lower end is the grid's, 1 Myr)",
    "age_above_calibration": "the 68 % interval reaches above the oldest calibration cluster ({age_hi:.4g} Myr), "
                             "where the flow extrapolates: the interval is open there (its upper end is the grid's, 13.8 Gyr)",
    "model_error_uncalibrated": "the model card has no single-star model-error term: the intervals are the flow's "
                                "posterior alone, which is too narrow for some stars out of sample",
}  # fmt: skip


def _number(value: Any, name: str, unit: str, allowed: str) -> float:
    """One float from a number or an astropy Quantity (converted to ``unit``), or one line."""
    if hasattr(value, "unit") and hasattr(value, "to_value"):  # a Quantity
        from astropy import units as u

        try:
            value = value.to_value(u.Unit(unit))
        except u.UnitsError:
            shown = unit or "dimensionless"
            raise DomainError(f"{name} has unit {value.unit}; allowed: {allowed} (a unit convertible to {shown})") from None
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise DomainError(f"{name}={value!r} is not allowed: {allowed}")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise DomainError(f"{name} must be a number, got {type(value).__name__}; allowed: {allowed}") from None
    if arr.ndim != 0:
        raise DomainError(f"{name} must be one number, got shape {arr.shape} (for many stars use chronoflow.star_ages); "
                          f"allowed: {allowed}")
    return float(arr)


def _check(value: float, name: str, ok: bool, allowed: str) -> float:
    if not ok:
        raise DomainError(f"{name}={value:g} is not allowed: {allowed}")
    return value


def _finite_none(x: float) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return float(x) if math.isfinite(x) else None


@dataclass(eq=False)
class StarAge:
    """Result of :func:`star_age`: one star's age posterior.

    Attributes
    ----------
    prot_d, bprp0, e_bprp0, e_prot_d, ruwe
        The inputs: period [d], (BP-RP)0 and its error [mag], the period's error [d] and the
        RUWE (``None`` when not given).
    summary
        log10 age [log10 Myr]: ``p2.5``, ``p16``, ``median``, ``p84``, ``p97.5`` of the honest
        posterior (with the model-error term), ``map`` (mode of the flow's posterior) and
        ``stat_p2.5`` ... ``stat_p97.5`` of the flow's posterior alone. NaN when the star has no
        age (see ``flag``). An interval end beyond the calibration ages is the grid's end.
    flag
        Flags (joined by ``;``) of :func:`~chronoflow.inference.ages.star_ages` ('' when fine);
        :meth:`flag_meanings` says what they mean.
    grid
        log10 age grid [log10 Myr] (:func:`~chronoflow.inference.posterior.age_grid`).
    posterior
        The honest posterior density per dex on ``grid`` (NaN when no age).
    stat_posterior
        The flow's posterior alone, per dex on ``grid`` (the same as ``posterior`` for a model
        without the model-error term).
    model
        Identifier of the model (weights checksum and creation date), as in
        :attr:`~chronoflow.inference.ages.ClusterAge.model`.
    flow
        The loaded model that aged the star (drawn by :meth:`plot`; not part of the JSON).
    """

    prot_d: float
    bprp0: float
    e_bprp0: float
    e_prot_d: float | None
    ruwe: float | None
    summary: dict[str, float]
    flag: str
    grid: np.ndarray
    posterior: np.ndarray
    stat_posterior: np.ndarray
    model: str
    flow: RotationModel | None = field(default=None, repr=False)

    @property
    def has_age(self) -> bool:
        """False when the star could not be aged (NaN percentiles; ``flag`` says why)."""
        return bool(np.isfinite(self.summary["median"]))

    @property
    def age_myr(self) -> dict[str, float]:
        """The honest percentiles in Myr: ``p2.5``, ``p16``, ``median``, ``p84``, ``p97.5``."""
        return {k: float(10 ** self.summary[k]) for k in LEVELS}

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary printed by ``chronoflow age-star --json`` (NaN written as null)."""
        return {
            "prot_d": float(self.prot_d),
            "bprp0": float(self.bprp0),
            "e_bprp0": float(self.e_bprp0),
            "e_prot_d": None if self.e_prot_d is None else float(self.e_prot_d),
            "log10_age_myr": {k: _finite_none(self.summary[k]) for k in LEVELS},
            "age_myr": {k: _finite_none(v) for k, v in self.age_myr.items()},
            "log10_age_myr_stat": {k: _finite_none(self.summary[f"stat_{k}"]) for k in LEVELS},
            "flag": self.flag,
            "model": self.model,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as one line of JSON."""
        return json.dumps(self.to_dict())

    def flag_meanings(self) -> dict[str, str]:
        """Each flag of the star and what it means, in words."""
        numbers = {}
        if self.flow is not None:
            d = self.flow.domain
            numbers = {"prot_lo": 10 ** d.log10_prot[0], "prot_hi": 10 ** d.log10_prot[1], "col_lo": d.bprp0[0],
                       "col_hi": d.bprp0[1], "err_lo": 10 ** d.log10_e_bprp0[0], "err_hi": 10 ** d.log10_e_bprp0[1],
                       "age_lo": 10 ** d.log10_age_myr[0], "age_hi": 10 ** d.log10_age_myr[1]}  # fmt: skip
        rotation = _rotation_flag_help()
        out = {}
        for name in filter(None, self.flag.split(FLAG_SEP)):
            if name in FLAG_MEANINGS:
                text = FLAG_MEANINGS[name]
                out[name] = text.format(**numbers) if numbers else re.sub(r" \([^()]*\{[^}]*\}[^()]*\)", "", text)
            else:
                out[name] = rotation.get(name, "see docs/reliability.md and docs/flags.md")
        return out

    def to_text(self) -> str:
        """The summary ``chronoflow age-star`` prints: the median with the 68 % and 95 % intervals
        in log10 Myr and Myr, the flow posterior's own 68 % interval, and the flags in words."""
        inputs = f"Prot = {self.prot_d:g} d" + (f" +- {self.e_prot_d:g} d" if self.e_prot_d else "")
        inputs += f", (BP-RP)0 = {self.bprp0:.3f} +- {self.e_bprp0:.3f} mag"
        if self.ruwe is not None:
            inputs += f", RUWE {self.ruwe:g}"
        lines = [f"star: {inputs}"]
        if not self.has_age:
            lines.append("  no age")
        else:
            q, a = self.summary, self.age_myr
            lines += [
                f"  log10 age/Myr = {q['median']:.3f} (68 %: {q['p16']:.3f} - {q['p84']:.3f}, 95 %: {q['p2.5']:.3f} - {q['p97.5']:.3f})",
                (f"  age = {_myr(a['median'])} Myr (68 %: {_myr(a['p16'])} - {_myr(a['p84'])} Myr, "
                 f"95 %: {_myr(a['p2.5'])} - {_myr(a['p97.5'])} Myr)"),
                (f"  flow posterior alone (without the model-error term), 68 %: {_myr(10 ** q['stat_p16'])} - "
                 f"{_myr(10 ** q['stat_p84'])} Myr (log10 {q['stat_p16']:.3f} - {q['stat_p84']:.3f})"),
            ]  # fmt: skip
            ends = [q[k] for k in LEVELS] + [q[f"stat_{k}"] for k in LEVELS]
            cal = self.flow.domain.log10_age_myr if self.flow is not None else None
            for i, side, cluster in ((0, "below", "youngest"), (-1, "above", "oldest")):
                if self.grid[i] in ends:
                    where = f" ({_myr(10 ** cal[i])} Myr)" if cal is not None else ""
                    lines.append(f"  open: an interval end at {_myr(10 ** self.grid[i])} Myr is the grid's end, not a bound: "
                                 f"the posterior reaches {side} the {cluster} calibration cluster{where}, where the flow extrapolates")
        for name, meaning in self.flag_meanings().items():
            lines.append(f"  flag {name}: {meaning}")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike | None = None):
        """The posterior beside the period-colour diagram (:func:`chronoflow.plotting.plot_star_age`),
        saved to ``path`` when given; returns the matplotlib Figure."""
        # Imported when called, never when this module loads: matplotlib stays in the top layer
        # (the one call-time upward import that tests/test_public_api.py allows).
        from ..plotting import plot_star_age

        return plot_star_age(self, path)


def _rotation_flag_help() -> dict[str, str]:
    """The words of the rotation flags (``off_sequence``, ``likely_binary``, ...) from
    :mod:`chronoflow.inference.rotation_flags`; empty where that module is absent."""
    try:
        from .rotation_flags import FLAG_HELP
    except ImportError:  # pragma: no cover - the module arrived beside this one
        return {}
    return dict(FLAG_HELP)


def _myr(x: float) -> str:
    """An age in Myr: three significant figures, no exponent."""
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def star_age(
    prot: Any,
    bprp0: Any,
    e_bprp0: Any = DEFAULT_E_BPRP0,
    *,
    e_prot: Any = None,
    ruwe: Any = None,
    model: RotationModel | str | None = None,
    device: Device = "auto",
) -> StarAge:
    """Age posterior of one star from its rotation period and colour.

    The one-star twin of :func:`~chronoflow.inference.ages.star_ages`: the same likelihood
    (convolved with the period's error when given), the same single-star model-error term and
    flags, the same numbers as ``star_ages`` on the one-row table.

    Parameters
    ----------
    prot
        Rotation period [d], or an astropy Quantity of time (hours, ...): finite, > 0.
    bprp0
        De-reddened Gaia colour (BP-RP)0 [mag] (a number or a Quantity in mag): finite.
    e_bprp0
        Its 1-sigma error [mag], finite and > 0. Default :data:`DEFAULT_E_BPRP0` = 0.027 mag, the
        median colour error of the published catalogue; an error below the training floor
        (0.014 mag for the shipped model) is raised to it and flagged ``error_below_domain``.
    e_prot
        The period's 1-sigma error [d] (or a Quantity of time), finite and >= 0; ``None`` (default)
        or 0 for none. The likelihood is convolved with it.
    ruwe
        Gaia's renormalised unit weight error, finite and > 0 (``None``: not given), passed to
        ``star_ages`` as the ``ruwe`` column for its binarity flag.
    model
        A loaded model, a model file path, or ``None`` for the shipped model.
    device
        Where the flow runs: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    StarAge
        NaN percentiles and posteriors, with the reason in ``flag``, for a star that cannot be
        aged (a period, colour or colour error outside the training domain).

    Raises
    ------
    DomainError
        An input that is not one finite number in the range allowed (one line naming it).

    Examples
    --------
    >>> res = star_age(12.3, 1.05)
    >>> print(res.to_text())  # doctest: +ELLIPSIS
    star: Prot = 12.3 d, (BP-RP)0 = 1.050 +- 0.027 mag
      log10 age/Myr = 3.167 (68 %: 2.882 - 3.410, 95 %: 0.518 - 4.140)
    ...
    """
    p = _number(prot, "prot", "d", "a finite rotation period > 0 d")
    _check(p, "prot", math.isfinite(p) and p > 0, "a rotation period must be finite and > 0 d")
    c = _number(bprp0, "bprp0", "mag", "a finite colour (BP-RP)0 in mag")
    _check(c, "bprp0", math.isfinite(c), "a colour (BP-RP)0 must be finite (mag)")
    e = _number(e_bprp0, "e_bprp0", "mag", "a finite colour error > 0 mag")
    _check(e, "e_bprp0", math.isfinite(e) and e > 0, "a colour error must be finite and > 0 mag")
    row: dict[str, list[float]] = {"Prot": [p], "BPRP_0": [c], "e_BPRP_0": [e]}
    ep = None
    if e_prot is not None:
        ep = _number(e_prot, "e_prot", "d", "a finite period error >= 0 d")
        _check(ep, "e_prot", math.isfinite(ep) and ep >= 0, "a period error must be finite and >= 0 d (0: no error)")
        row["e_Prot"] = [ep]
    rw = None
    if ruwe is not None:
        rw = _number(ruwe, "ruwe", "", "a finite RUWE > 0")
        _check(rw, "ruwe", math.isfinite(rw) and rw > 0, "a RUWE must be finite and > 0")
        row["ruwe"] = [rw]
    device = resolve_device(device)  # a bad device: one line before the model is loaded
    flow = resolve_model(model)
    df = pd.DataFrame(row)
    ages, honest = star_ages(df, model=flow, return_posteriors=True, device=device)
    if star_error_model(flow) is None:  # no model-error term: the honest posterior is the flow's
        stat = honest
    else:
        stat = star_ages(df, model=flow, return_posteriors=True, model_error=False, device=device)[1]
    r = ages.iloc[0]
    summary = {k: float(r[f"log10_age_{k}"]) for k in LEVELS}
    summary["map"] = float(r["log10_age_map"])
    summary.update({f"stat_{k}": float(r[f"log10_age_stat_{k}"]) for k in LEVELS})
    return StarAge(p, c, e, ep, rw, summary, str(r["flag"]), age_grid(), honest[0], stat[0], model_name(flow), flow)
