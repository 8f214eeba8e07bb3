"""The model-error term of cluster ages, calibrated on leave-one-cluster-out residuals.

A cluster the flow never saw is aged with an error that has three parts (all in dex):

* ``statistical``: half the 16-84 % width of the age posterior, (p84 - p16) / 2;
* ``model``: the quadrature sum of the ensemble spread (standard deviation of the members'
  posterior medians), of the calibrated term :class:`ModelErrorCurve` (what the ensemble spread
  does not explain of the leave-one-out residuals) and, beyond the calibrated age range, of the
  distance of the age from the range's edge (an extrapolated age is not pretended to be known);
* ``total``: sqrt(statistical^2 + model^2).

The calibrated term is a *local likelihood* estimate. For leave-one-out clusters i with
residual r_i (model age minus fiducial age), statistical error s_i and ensemble spread e_i, at
each node t of a grid in log10 age it maximizes

    sum_i K((t - t_i) / h) ln N(r_i; 0, s_i^2 + e_i^2 + sigma(t)^2)

over sigma(t) >= 0, with a Gaussian kernel K of bandwidth h in log10 age (t_i: the cluster's
model age, which is what a user knows). That variance is estimated from a handful of clusters
(the kernel's effective number n_eff = (sum K)^2 / sum K^2 is 3-15), so the term reported is the
half-width of the 68 % *predictive* interval of a new residual, sigma(t) t_{n_eff}(0.84) /
z(0.84) (Student-t against normal quantile: a factor 1.03-1.18 here). Between nodes the term
is interpolated linearly; outside them it is constant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ChronoflowError

__all__ = ["ModelErrorCurve", "calibrate_model_error", "error_budget"]

#: Default kernel bandwidth of the calibration [dex in log10 age].
DEFAULT_BANDWIDTH = 0.5


@dataclass(frozen=True)
class ModelErrorCurve:
    """sigma_model(log10 age): the model-error term [dex] as a function of log10 age [log10 Myr].

    Attributes
    ----------
    log10_age_myr, sigma_dex
        Nodes of the piecewise-linear curve (constant beyond the outer nodes).
    bandwidth_dex
        Kernel bandwidth used in the calibration [dex].
    n_clusters
        Leave-one-out clusters the curve was calibrated on.
    sigma_ml_dex, n_eff
        At each node: the maximum-likelihood sigma before the small-sample widening, and the
        kernel's effective number of clusters (``sigma_dex = sigma_ml_dex * t_{n_eff}(0.84) / z(0.84)``).
    """

    log10_age_myr: tuple[float, ...]
    sigma_dex: tuple[float, ...]
    bandwidth_dex: float = DEFAULT_BANDWIDTH
    n_clusters: int = 0
    sigma_ml_dex: tuple[float, ...] = ()
    n_eff: tuple[float, ...] = ()

    def __call__(self, log10_age_myr) -> np.ndarray:
        return np.interp(np.asarray(log10_age_myr, dtype=float), self.log10_age_myr, self.sigma_dex)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelErrorCurve:
        return cls(tuple(d["log10_age_myr"]), tuple(d["sigma_dex"]), float(d.get("bandwidth_dex", DEFAULT_BANDWIDTH)),
                   int(d.get("n_clusters", 0)), tuple(d.get("sigma_ml_dex", ())), tuple(d.get("n_eff", ())))  # fmt: skip


def _local_sigma(t: float, ages, res2, known2, bandwidth: float) -> tuple[float, float]:
    """Maximum-likelihood sigma at ``t`` and the kernel's effective number of clusters."""
    from scipy.optimize import minimize_scalar

    k = np.exp(-0.5 * ((t - ages) / bandwidth) ** 2)
    n_eff = float(k.sum() ** 2 / (k**2).sum())

    def nll(log_sigma):
        var = known2 + np.exp(2 * log_sigma)
        return float(np.sum(k * (np.log(var) + res2 / var)))

    best = minimize_scalar(nll, bounds=(np.log(1e-4), np.log(3.0)), method="bounded", options={"xatol": 1e-6})
    sigma = float(np.exp(best.x))
    return (0.0 if sigma <= 1.1e-4 else sigma), n_eff  # at the bound itself: no excess scatter here


def calibrate_model_error(
    log10_age,
    residual_dex,
    statistical_dex,
    ensemble_dex=None,
    *,
    bandwidth_dex: float = DEFAULT_BANDWIDTH,
    nodes=None,
) -> ModelErrorCurve:
    """Fit :class:`ModelErrorCurve` to leave-one-out residuals (see the module docstring).

    Parameters
    ----------
    log10_age
        Model (posterior median) ages of the held-out clusters [log10 Myr].
    residual_dex
        Model age minus fiducial age [dex].
    statistical_dex, ensemble_dex
        Each cluster's statistical error and ensemble spread [dex] (``None``: no ensemble).
    bandwidth_dex
        Gaussian kernel width in log10 age [dex].
    nodes
        Nodes of the curve [log10 Myr]; default every 0.1 dex over the held-out ages.

    Returns
    -------
    ModelErrorCurve
    """
    ages = np.asarray(log10_age, dtype=float)
    res = np.asarray(residual_dex, dtype=float)
    stat = np.asarray(statistical_dex, dtype=float)
    ens = np.zeros_like(stat) if ensemble_dex is None else np.asarray(ensemble_dex, dtype=float)
    ok = np.isfinite(ages) & np.isfinite(res) & np.isfinite(stat) & np.isfinite(ens)
    if ok.sum() < 3:
        raise ChronoflowError(f"calibrating the model error needs >= 3 clusters with finite residuals, got {int(ok.sum())}")
    if not bandwidth_dex > 0:
        raise ChronoflowError(f"bandwidth_dex must be > 0, got {bandwidth_dex}")
    ages, res, stat, ens = ages[ok], res[ok], stat[ok], ens[ok]
    if nodes is None:
        nodes = np.arange(np.floor(ages.min() * 10) / 10, ages.max() + 0.1, 0.1)
    nodes = np.asarray(nodes, dtype=float)
    from scipy import stats

    fits = [_local_sigma(t, ages, res**2, stat**2 + ens**2, bandwidth_dex) for t in nodes]
    # 68 % predictive half-width of a new residual when the variance comes from n_eff clusters
    widen = [float(stats.t.ppf(0.84, n_eff) / stats.norm.ppf(0.84)) for _, n_eff in fits]
    sig = tuple(float(s * w) for (s, _), w in zip(fits, widen, strict=True))
    return ModelErrorCurve(tuple(map(float, nodes)), sig, float(bandwidth_dex), int(ok.sum()),
                           tuple(float(s) for s, _ in fits), tuple(float(n) for _, n in fits))  # fmt: skip


def error_budget(
    median: float,
    p16: float,
    p84: float,
    member_medians=None,
    curve: ModelErrorCurve | None = None,
    calibrated_range: tuple[float, float] | None = None,
) -> tuple[dict[str, float], str]:
    """Error parts of one cluster age [dex] and its flag.

    Parameters
    ----------
    median, p16, p84
        The (mixture) posterior's median and percentiles [log10 Myr].
    member_medians
        Posterior medians of the ensemble members [log10 Myr] (``None`` or one value: no spread).
    curve
        Calibrated model-error term (``None``: not calibrated; flagged).
    calibrated_range
        (lo, hi) of the calibration ages [log10 Myr]: a posterior whose 16-84 % interval reaches
        beyond it is flagged, and a median beyond it adds its distance from the edge to the model
        error.

    Returns
    -------
    error_dex : dict
        ``statistical``, ``ensemble``, ``calibrated``, ``extrapolation``, ``model``, ``total``.
    flag : str
        Joined by a semicolon: ``age_below_calibration``, ``age_above_calibration``,
        ``model_error_uncalibrated``; '' when fine.
    """
    stat = 0.5 * (p84 - p16)
    members = np.asarray([] if member_medians is None else member_medians, dtype=float)
    ens = float(np.std(members, ddof=1)) if members.size > 1 else 0.0
    cal = float(curve(median)) if curve is not None else 0.0
    flags = []
    beyond = 0.0
    if calibrated_range is not None:
        lo, hi = calibrated_range
        beyond = float(max(0.0, lo - median, median - hi))
        if p16 < lo:
            flags.append("age_below_calibration")
        if p84 > hi:
            flags.append("age_above_calibration")
    if curve is None:
        flags.append("model_error_uncalibrated")
    model = float(np.sqrt(ens**2 + cal**2 + beyond**2))
    parts = {"statistical": float(stat), "ensemble": ens, "calibrated": cal, "extrapolation": beyond, "model": model,
             "total": float(np.hypot(stat, model))}  # fmt: skip
    return parts, ";".join(flags)  # likelihood.FLAG_SEP (model_error sits below likelihood)
