"""The model-error term of single-star ages: a recalibration of the age likelihood's CDF.

The flow's posterior of one star is honest only where the flow is right. Out of sample (every
cluster left out of training in turn, ``docs/validation/star_loo.py``) its 68 % intervals hold
the age of too many young stars and too few old ones. This module maps the flow's posterior
onto one whose intervals hold the age at their nominal rate, as a function of what a user
knows about the star: the median of its flow posterior and its colour.

**The map.** Let L(t) be a star's likelihood on the age grid (its posterior under the log-flat
prior, normalized) and F(t) its CDF. The probability integral transform of the true age,
u = F(t_true), is uniform when the posterior is calibrated. Out of sample it is not: for stars
like this one (near its median m and colour c) the u's of the leave-one-out stars have some CDF
G_{m,c}. The honest CDF is

    F'(t) = G_{m,c}(F(t)),    so    L'(t) = G'_{m,c}(F(t)) L(t),

and the honest posterior is L'(t) x prior(t). Its q-quantile is the flow posterior's
G^{-1}_{m,c}(q)-quantile: where the u's pile up at the ends (true ages outside the flow's
interval), the intervals widen; where they pile up in the middle (too-wide posteriors), they
narrow. G^{-1} is stored at fixed levels (:data:`LEVELS`) on a grid of nodes in (m, c), each node
holding kernel-weighted quantiles of the leave-one-out u's, and interpolated bilinearly between
nodes (a convex combination of increasing sequences stays increasing); G is piecewise linear.
This is quantile recalibration (Kuleshov, Fenner & Ermon 2018, ICML) made local in the
features.

The map is fitted by :func:`fit_star_error` and stored on the model card
(``card["single_star_error"]``); :func:`chronoflow.inference.ages.star_ages` applies it by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ChronoflowError
from .posterior import cdf, cdf_quantiles

__all__ = ["LEVELS", "SHIPPED_FORM", "StarErrorModel", "monotone_cubic", "fit_star_error", "pit_values", "weighted_quantiles"]

#: Levels q at which G^{-1}(q) is stored (0 and 1 pinned to 0 and 1).
LEVELS = (0.0, 0.025, 0.05, 0.10, 0.16, 0.25, 0.5, 0.75, 0.84, 0.90, 0.95, 0.975, 1.0)
#: Default nodes of the map: posterior median [log10 Myr] and colour (BP-RP)0 [mag].
MEDIAN_NODES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75)
COLOUR_NODES = (0.5, 0.8, 1.1, 1.4, 1.8, 2.2, 2.6, 3.0)
#: The form the shipped term uses (chosen out of sample among the candidates of
#: ``docs/validation/star_error.md``): the quantile map local in the posterior median only, whose
#: interval ends may only move outward (``symmetric="widen"``).
SHIPPED_FORM: dict[str, Any] = {"symmetric": "widen", "colour_nodes": (1.0,), "bandwidths": (0.25, float("inf"))}
#: Smallest step between stored u's: keeps G strictly increasing (its slope finite).
_MIN_STEP = 1e-4


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, levels) -> np.ndarray:
    """Quantiles of ``values`` with non-negative ``weights`` at ``levels`` (linear interpolation
    of the weighted empirical CDF at the mid-points of the weights)."""
    order = np.argsort(values)
    v, w = values[order], weights[order]
    total = w.sum()
    if not total > 0:
        raise ChronoflowError("weighted_quantiles: the weights sum to zero")
    mid = (np.cumsum(w) - 0.5 * w) / total
    return np.interp(np.asarray(levels, float), mid, v)


def pit_values(density: np.ndarray, grid: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """u = F(truth): the posterior CDF of each row of ``density [stars, ages]`` at its true log
    age ``truth [stars]`` [log10 Myr] (linear interpolation of the trapezoid CDF)."""
    c = cdf(density, grid)
    i = np.clip(np.searchsorted(grid, truth) - 1, 0, len(grid) - 2)
    rows = np.arange(len(truth))
    f = np.clip((truth - grid[i]) / (grid[i + 1] - grid[i]), 0.0, 1.0)
    return c[rows, i] + f * (c[rows, i + 1] - c[rows, i])


def _monotone(knots: np.ndarray) -> np.ndarray:
    """Pin the ends to 0 and 1 and make every row strictly increasing by at least _MIN_STEP."""
    k = np.clip(np.asarray(knots, float), 0.0, 1.0)
    k[..., 0], k[..., -1] = 0.0, 1.0
    steps = np.arange(k.shape[-1]) * _MIN_STEP
    k = np.maximum.accumulate(k + 0.0, axis=-1)
    k = np.maximum.accumulate(k - steps, axis=-1) + steps  # at least _MIN_STEP apart
    return k / k[..., -1:]


@dataclass(frozen=True)
class StarErrorModel:
    """G^{-1}_{m,c}(q) on a grid of nodes in (flow-posterior median m [log10 Myr], colour c [mag]).

    Attributes
    ----------
    median_nodes, colour_nodes
        Node coordinates (increasing); beyond the outer nodes the map is constant.
    u_knots
        ``[len(median_nodes), len(colour_nodes), len(levels)]``: G^{-1}(level) at each node.
    levels
        The levels q (``LEVELS``).
    bandwidths
        Kernel bandwidths of the fit (median [dex], colour [mag]).
    shrink_n
        Pseudo-count of the shrinkage of each node toward the pooled map.
    n_eff
        Effective number of stars of the kernel at each node ``[medians, colours]``.
    source
        Free text: what the map was calibrated on.
    """

    median_nodes: tuple[float, ...]
    colour_nodes: tuple[float, ...]
    u_knots: np.ndarray
    levels: tuple[float, ...] = LEVELS
    bandwidths: tuple[float, float] = (0.25, 0.4)
    shrink_n: float = 50.0
    n_eff: np.ndarray | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form, for the model card."""
        return {
            "form": "local quantile recalibration of the likelihood CDF (chronoflow.inference.star_error)",
            "median_nodes": [float(v) for v in self.median_nodes],
            "colour_nodes": [float(v) for v in self.colour_nodes],
            "levels": [float(v) for v in self.levels],
            "u_knots": np.round(np.asarray(self.u_knots, float), 6).tolist(),
            "bandwidths": [float(v) for v in self.bandwidths],
            "shrink_n": float(self.shrink_n),
            "n_eff": None if self.n_eff is None else np.round(np.asarray(self.n_eff, float), 2).tolist(),
            "source": self.source,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StarErrorModel:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(d["median_nodes"]), tuple(d["colour_nodes"]), _monotone(np.asarray(d["u_knots"], float)),
            tuple(d["levels"]), tuple(d["bandwidths"]), float(d["shrink_n"]),
            None if d.get("n_eff") is None else np.asarray(d["n_eff"], float), d.get("source", ""), d.get("extra", {}),
        )  # fmt: skip

    @classmethod
    def identity(cls) -> StarErrorModel:
        """The map that changes nothing (G = identity)."""
        return cls((0.0,), (0.0,), np.asarray(LEVELS, float)[None, None, :])

    def knots(self, median: np.ndarray, colour: np.ndarray) -> np.ndarray:
        """G^{-1}(levels) of each star ``[stars, levels]``, bilinear between nodes."""
        m = np.asarray(self.median_nodes, float)
        c = np.asarray(self.colour_nodes, float)
        k = np.asarray(self.u_knots, float)

        def side(nodes, x):
            x = np.clip(np.nan_to_num(np.asarray(x, float), nan=nodes[0]), nodes[0], nodes[-1])
            if len(nodes) == 1:
                return np.zeros(len(x), int), np.zeros(len(x), int), np.zeros(len(x))
            i = np.clip(np.searchsorted(nodes, x) - 1, 0, len(nodes) - 2)
            return i, i + 1, (x - nodes[i]) / (nodes[i + 1] - nodes[i])

        i0, i1, fm = side(m, median)
        j0, j1, fc = side(c, colour)
        fm, fc = fm[:, None], fc[:, None]
        out = (1 - fm) * ((1 - fc) * k[i0, j0] + fc * k[i0, j1]) + fm * ((1 - fc) * k[i1, j0] + fc * k[i1, j1])
        return _monotone(out)

    def honest_log_likelihood(self, density: np.ndarray, grid: np.ndarray, colour: np.ndarray) -> np.ndarray:
        """ln L'(t) = ln d/dt G(F(t)) = ln G'(F(t)) + ln L(t) for each row of the normalized likelihood ``density``
        ``[stars, ages]`` (its posterior under the log-flat prior, per dex), with G the star's map:
        the monotone cubic (Fritsch-Carlson) through the points (G^{-1}(q), q), so that G' and the
        honest density are continuous and G takes the stored values at every level exactly.

        Rows of NaN stay NaN. The result is normalized on ``grid`` when the prior is log-flat."""
        levels = np.asarray(self.levels, float)
        ok = np.isfinite(density).all(axis=1)
        out = np.full(density.shape, np.nan)
        if not ok.any():
            return out
        dens = density[ok]
        u = cdf(dens, grid)  # [S, A]
        kn = self.knots(cdf_quantiles(u, grid, (0.5,))[:, 0], np.asarray(colour, float)[ok])  # [S, L] u at each level
        # The honest CDF G(F(t)) on the grid, and its density by central differences, so that the
        # adaptive and the dense grids give the same quantiles.
        honest_cdf = monotone_cubic(kn, levels, u)
        with np.errstate(divide="ignore"):
            out[ok] = np.log(np.maximum(np.gradient(honest_cdf, grid, axis=1), 0.0))
        return out


def monotone_cubic(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch & Carlson 1980, the slopes of
    scipy's PchipInterpolator inside, one-sided secants at the ends), one curve per row.

    ``x [rows, knots]`` strictly increasing, ``y [knots]`` increasing (shared by the rows),
    ``at [rows, points]`` inside [x[:, 0], x[:, -1]]. Returns ``[rows, points]``."""
    h = np.diff(x, axis=1)  # [R, K-1]
    d = np.diff(y)[None, :] / h  # secants, > 0
    m = np.empty_like(x)
    w1, w2 = 2 * h[:, 1:] + h[:, :-1], h[:, 1:] + 2 * h[:, :-1]
    m[:, 1:-1] = (w1 + w2) / (w1 / d[:, :-1] + w2 / d[:, 1:])
    m[:, 0], m[:, -1] = d[:, 0], d[:, -1]
    seg = np.clip((at[:, :, None] >= x[:, None, 1:-1]).sum(axis=-1), 0, h.shape[1] - 1)  # [R, P]

    def take(a):
        return np.take_along_axis(a, seg, axis=1)

    hk = take(h)
    t = np.clip((at - take(x)) / hk, 0.0, 1.0)
    t2, t3 = t * t, t * t * t
    yk, yk1 = y[seg], y[seg + 1]
    mk, mk1 = take(m), take(m[:, 1:])
    return (2 * t3 - 3 * t2 + 1) * yk + (t3 - 2 * t2 + t) * hk * mk + (-2 * t3 + 3 * t2) * yk1 + (t3 - t2) * hk * mk1


def _knots_of(u, w, levels, symmetric):
    """G^{-1}(levels) from PIT values: their weighted quantiles, or, ``symmetric``, 0.5 -/+ the
    weighted quantiles of |u - 0.5| at the central levels |2q - 1| (the central intervals are
    recalibrated and the median is left where the flow puts it)."""
    if symmetric == "widen":  # the full map's ends, never inside the flow's: intervals only widen
        k = weighted_quantiles(u, w, levels)
        return np.where(levels < 0.5, np.minimum(k, levels), np.where(levels > 0.5, np.maximum(k, levels), 0.5))
    if not symmetric:
        return weighted_quantiles(u, w, levels)
    central = np.abs(2.0 * levels - 1.0)
    d = weighted_quantiles(np.abs(u - 0.5), w, central)
    return 0.5 + np.sign(levels - 0.5) * d


def _kernel_quantiles(med, col, u, w, m_nodes, c_nodes, bandwidths, shrink_n, levels, symmetric=False):
    pooled = _knots_of(u, w, levels, symmetric)
    knots = np.empty((len(m_nodes), len(c_nodes), len(levels)))
    n_eff = np.empty((len(m_nodes), len(c_nodes)))
    hm, hc = bandwidths
    for a, m in enumerate(m_nodes):  # a few dozen nodes, each one vectorized over the stars
        km = np.exp(-0.5 * ((med - m) / hm) ** 2) if np.isfinite(hm) else np.ones_like(med)
        for b, c in enumerate(c_nodes):
            kc = np.exp(-0.5 * ((col - c) / hc) ** 2) if np.isfinite(hc) else np.ones_like(col)
            kw = w * km * kc
            s = kw.sum()
            n = s**2 / (kw**2).sum() if s > 0 else 0.0
            local = _knots_of(u, kw, levels, symmetric) if s > 0 else pooled
            lam = n / (n + shrink_n)
            knots[a, b] = lam * local + (1 - lam) * pooled
            n_eff[a, b] = n
    return _monotone(knots), n_eff


def fit_star_error(
    median: np.ndarray,
    colour: np.ndarray,
    pit: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    median_nodes=MEDIAN_NODES,
    colour_nodes=COLOUR_NODES,
    bandwidths: tuple[float, float] = (0.25, 0.4),
    shrink_n: float = 50.0,
    symmetric: bool | str = False,
    source: str = "",
) -> StarErrorModel:
    """Fit the map from out-of-sample stars.

    Parameters
    ----------
    median
        Median of each star's out-of-sample flow posterior (log-flat prior) [log10 Myr].
    colour
        (BP-RP)0 [mag].
    pit
        u = F(true log age) of each star's out-of-sample posterior (:func:`pit_values`).
    weights
        Weight of each star (default 1): e.g. 1 / sqrt(stars in its cluster), so that the
        largest clusters do not decide the map alone.
    median_nodes, colour_nodes
        Node coordinates. Give one node (or an infinite bandwidth) to drop a feature.
    bandwidths
        Gaussian kernel widths in median [dex] and colour [mag] (``inf``: no dependence).
    shrink_n
        Each node's quantiles are shrunk toward the pooled ones with weight
        n_eff / (n_eff + shrink_n).
    symmetric
        ``False``: the full quantile map (which may also move the median); ``True``: recalibrate
        only the width of the central intervals (G^{-1}(q) = 0.5 -/+ the |2q - 1|-quantile of
        |u - 0.5|), leaving the median where the flow puts it; ``"widen"``: the full map's
        interval ends, but never inside the flow's (G^{-1}(q) = min(u_q, q) below the median,
        max(u_q, q) above it, the median kept): intervals only widen. :data:`SHIPPED_FORM` gives
        the shipped choice.

    Returns
    -------
    StarErrorModel
    """
    med, col, u = (np.asarray(x, float) for x in (median, colour, pit))
    w = np.ones_like(u) if weights is None else np.asarray(weights, float)
    ok = np.isfinite(med) & np.isfinite(col) & np.isfinite(u) & np.isfinite(w) & (w > 0)
    if ok.sum() < 10:
        raise ChronoflowError(f"fit_star_error needs at least 10 stars with finite inputs, got {int(ok.sum())}")
    knots, n_eff = _kernel_quantiles(med[ok], col[ok], np.clip(u[ok], 0, 1), w[ok], np.asarray(median_nodes, float),
                                     np.asarray(colour_nodes, float), bandwidths, shrink_n, np.asarray(LEVELS, float), symmetric)  # fmt: skip
    return StarErrorModel(tuple(median_nodes), tuple(colour_nodes), knots, LEVELS, tuple(bandwidths), shrink_n, n_eff, source,
                          {"symmetric": symmetric})
