"""Systematics sweeps and the error budget of a cluster age.

A sweep ages one cluster many times with the fast method, each time changing one assumption,
and turns the changes of the median log age into components of an error budget, each with its
own uncertainty (the gyro-interp way: systematics are data). Components:

* ``extinction``: a cluster-wide error of E(BP-RP), Gaussian with standard deviation
  ``reddening_sigma`` [mag], propagated by Gauss-Hermite quadrature (the intrinsic colour becomes
  ``BPRP_0 - offset`` at each node); its uncertainty is the difference between the 5- and the
  3-node rule. Alternative colour columns (other dust maps or laws) form ``dust_maps``.
* ``membership``: cuts at membership thresholds (members only, unweighted) and the alternative
  membership column. A cut ages a subsample, whose median differs from the full sample's by
  statistical noise of variance ~ sigma_cut^2 - sigma_full^2 (nested samples); that noise is
  removed from each cut's squared shift (column ``noise_dex`` of the variants).
* ``age_scale``: every calibration age older (or younger) by ``age_scale_dex`` together, the
  correlated calibration error. Retraining on uniformly shifted log ages gives the same weights
  with the age standardization moved (:meth:`~chronoflow.flows.flow.RotationModel.shifted_in_age`), so
  this refit from scratch is computed exactly, for every member.
* ``calibration``: independent per-cluster errors of the calibration ages (Gaussian,
  ``calibration_scale_dex``): refits *from scratch* of the model's first member's recipe (its
  architecture, training settings, seed and epochs), each compared with the same recipe refitted
  on the unperturbed ages (paired: the same seed and bootstrap). A null refit (ages perturbed by
  1e-6 dex) measures the training-noise floor, removed in quadrature. The target cluster is taken
  out of the calibration set first when it is in it.
* ``model``: the spread of the ensemble members' medians (with ``method="full"`` also
  ``model_choice``, a latent ensemble member in the hierarchical model; the larger counts).
* ``out_of_sample``: the model-error term calibrated by leave-one-cluster-out residuals (see
  :mod:`chronoflow.inference.model_error`), which a cluster age quotes in ``ClusterAge.error_dex``.

The total: the leave-one-out residuals were measured against the catalogue's fiducial ages with
the catalogue's own reddening and membership, so the ``out_of_sample`` term already holds the
typical extinction, membership and per-cluster calibration errors. The total therefore adds in
quadrature the statistical width, ``model``, ``age_scale`` and the larger of ``out_of_sample``
and the quadrature sum of ``extinction``, ``dust_maps``, ``membership`` and ``calibration`` (the
budget's ``in_total`` column says which). A component whose every variant failed is NaN, left
out of the total with a warning and named in the total's note.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._cache import cache_dir
from .._version import __version__
from ..errors import ChronoflowError, DomainError
from ..flows.artifact import resolve_model, weights_sha256
from ..flows.ensemble import card_members, n_members
from ..flows.flow import FlowConfig, RotationModel
from ..flows.training import TrainConfig, catalogue_sha256, train
from ..inference.ages import ClusterAge, cluster_age, model_error_curve

__all__ = [
    "SweepResult",
    "refit_count",
    "systematics_sweep",
    "model_fingerprint",
    "DEFAULT_REDDENING_SIGMA",
    "DEFAULT_AGE_SCALE_DEX",
    "DEFAULT_CALIBRATION_SCALE_DEX",
    "DEFAULT_THRESHOLDS",
]

#: Default standard deviation of a cluster's E(BP-RP) [mag]: 0.02 mag in E(B-V), a typical
#: uncertainty of the reddening of a nearby open cluster, times E(BP-RP)/E(B-V) ~ 1.34.
DEFAULT_REDDENING_SIGMA = 0.03
#: Default correlated age-scale error [dex]: of the order of the difference between
#: lithium-depletion-boundary and turn-off ages of young clusters (the Pleiades: 125 Myr,
#: Stauffer et al. 1998, against ~100 Myr from the upper main sequence; 0.1 dex).
DEFAULT_AGE_SCALE_DEX = 0.1
#: Default independent error of each calibration cluster's age [dex].
DEFAULT_CALIBRATION_SCALE_DEX = 0.05
#: Default membership thresholds (cut instead of weight).
DEFAULT_THRESHOLDS = (0.5, 0.7, 0.9)
#: Ages perturbed by this much [dex] in the null refit that measures the training-noise floor.
NULL_PERTURBATION_DEX = 1e-6

_REFITS = {"count": 0}
_BUDGET_COLUMNS = ["component", "n_variants", "shift_dex", "systematic_dex", "uncertainty_dex", "in_total", "note"]
_VARIANT_COLUMNS = ["component", "variant", "n_used", "log10_age_median", "log10_age_p16", "log10_age_p84",
                    "shift_dex", "weight", "noise_dex", "note"]  # fmt: skip


def refit_count() -> int:
    """Number of flow refits actually trained in this process (cache hits do not count)."""
    return _REFITS["count"]


def model_fingerprint(model: RotationModel) -> str:
    """sha256 of a model's weights, architecture, standardization and training domain.

    Two models with any different number get different fingerprints, whether or not they were
    saved: the weights enter as :func:`~chronoflow.flows.artifact.weights_sha256` of the model's
    tensors as they are now (a card's ``weights_sha256`` is missing on unsaved models and stale
    on edited ones, so it cannot key a cache).
    """
    h = hashlib.sha256()
    for part in (getattr(model, "members", None) or [model]):
        h.update(json.dumps([part.config.to_dict(), part.scaling.to_dict(), part.domain.to_dict()], sort_keys=True).encode())
    h.update(weights_sha256(model.state_dict()).encode())
    return h.hexdigest()


@dataclass
class SweepResult:
    """Result of :func:`systematics_sweep`.

    Attributes
    ----------
    budget
        One row per component plus ``statistical``, ``total`` and ``total_relative`` (the total
        without the age scale, for ages compared on the calibration clusters' scale): ``component``,
        ``n_variants``, ``shift_dex`` (mean shift of the median log age), ``systematic_dex``
        (the component's standard deviation; for ``statistical`` (p84 - p16) / 2, for ``total``
        the quadrature sum described in the module docstring), ``uncertainty_dex`` (its own
        standard error), ``in_total`` and ``note``. All in dex.
    variants
        One row per variant: ``component``, ``variant``, ``n_used``, ``log10_age_median``,
        ``log10_age_p16``, ``log10_age_p84`` [log10 Myr], ``shift_dex``, ``weight`` (quadrature
        weight), ``noise_dex`` (statistical noise removed from the shift) and ``note``.
    nominal
        The nominal :class:`~chronoflow.inference.ages.ClusterAge`.
    settings
        The sweep's settings (sizes of the assumed errors, calibration set, ...).
    """

    budget: pd.DataFrame
    variants: pd.DataFrame
    nominal: ClusterAge
    settings: dict[str, Any] = field(default_factory=dict)

    def component(self, name: str) -> pd.Series:
        """The budget row of one component (``statistical`` and ``total`` included)."""
        rows = self.budget[self.budget["component"] == name]
        if rows.empty:
            raise ChronoflowError(f"no component {name!r}; allowed: {', '.join(self.budget['component'])}")
        return rows.iloc[0]

    def to_markdown(self) -> str:
        """The budget as a markdown table (what ``chronoflow sweep`` prints), all in dex."""

        def f(v, sign=False):
            return "" if v is None or not np.isfinite(v) else (f"{v:+.3f}" if sign else f"{v:.3f}")

        med = self.nominal.summary["median"]
        lines = [f"{self.nominal.cluster}: error budget of log10 age (median {med:.3f}, {10**med:.0f} Myr; {self.nominal.n_used} stars)",
                 "", "| component | variants | shift | sigma | +- | in total | note |", "|---|---:|---:|---:|---:|:---:|---|"]  # fmt: skip
        for r in self.budget.itertuples():
            lines.append(f"| {r.component} | {r.n_variants} | {f(r.shift_dex, True)} | {f(r.systematic_dex)} | "
                         f"{f(r.uncertainty_dex)} | {'yes' if r.in_total else 'no'} | {r.note} |")  # fmt: skip
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The JSON printed by ``chronoflow sweep --json``."""
        comps = self.budget[~self.budget["component"].isin(["statistical", "total", "total_relative"])]
        out: dict[str, Any] = {"cluster": self.nominal.cluster, "log10_age_median": self.nominal.summary["median"]}
        out["components"] = {
            r.component: {"n_variants": int(r.n_variants), "shift_dex": _num(r.shift_dex), "systematic_dex": _num(r.systematic_dex),
                          "uncertainty_dex": _num(r.uncertainty_dex), "in_total": bool(r.in_total), "note": r.note}
            for r in comps.itertuples()
        }  # fmt: skip
        out["statistical_dex"] = float(self.component("statistical")["systematic_dex"])
        total = self.component("total")
        out["total_dex"] = float(total["systematic_dex"])
        out["total_uncertainty_dex"] = _num(total["uncertainty_dex"])
        out["total_relative_dex"] = float(self.component("total_relative")["systematic_dex"])
        if self.settings.get("method") == "full":
            out["rhat_max"] = float(self.settings["rhat_max"])
            out["divergences"] = int(self.settings["divergences"])
        out["settings"] = self.settings
        return out


def _num(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


# -- calibration refits ------------------------------------------------------------------------


def _recipe(model: RotationModel) -> tuple[FlowConfig, TrainConfig, int]:
    """Architecture, training settings and epochs of the model's first member, from its card."""
    card = getattr(model, "card", None) or {}
    if "training" not in card or "architecture" not in card:
        raise ChronoflowError("the calibration refits need a model with a training card (a trained or saved model); "
                              "pass calibration_catalogue=None to skip them")  # fmt: skip
    _, bootstrap, member_epochs = card_members(card)
    epochs = member_epochs[0]
    cfg = replace(TrainConfig.from_dict(card["training"]), bootstrap=bootstrap, max_epochs=epochs, val_clusters=(),
                  refit_all=False, threads=1)  # fmt: skip
    return FlowConfig(**card["architecture"]), cfg, epochs


def _refit_key(fingerprint: str, catalogue_sha: str, offsets: dict[str, float], flow_config, config, epochs: int) -> str:
    payload = json.dumps(
        {"model": fingerprint, "catalogue": catalogue_sha, "offsets": sorted((k, repr(float(v))) for k, v in offsets.items()),
         "architecture": flow_config.to_dict(), "training": config.to_dict(), "epochs": epochs, "version": __version__},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _save_atomic(model: RotationModel, path: Path) -> None:
    from ..flows.artifact import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_model(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _refit(model, fingerprint, catalogue, catalogue_sha, offsets, directory: Path) -> RotationModel:
    """The first member's recipe trained from scratch on ``catalogue`` with per-cluster age
    offsets [dex]; cached on disk by a key of every input."""
    from ..flows.artifact import load_model

    flow_config, config, epochs = _recipe(model)
    offsets = {k: float(v) for k, v in offsets.items() if v != 0}  # unperturbed ages share one refit
    path = directory / f"refit-{_refit_key(fingerprint, catalogue_sha, offsets, flow_config, config, epochs)}.pt"
    if path.is_file():
        return load_model(path)
    shifted = catalogue.copy()
    shift = shifted["cluster"].map(offsets).fillna(0.0).to_numpy(float)
    shifted["fiducial_age_Myr"] = shifted["fiducial_age_Myr"].to_numpy(float) * 10**shift
    refit = train(shifted, flow_config, config, progress=False, train_baseline=False).model
    _REFITS["count"] += 1
    _save_atomic(refit, path)
    return refit


# -- the sweep ---------------------------------------------------------------------------------


def systematics_sweep(
    df: pd.DataFrame,
    cluster: str | None = None,
    *,
    by: str = "cluster",
    model: RotationModel | str | None = None,
    reddening_sigma: float = DEFAULT_REDDENING_SIGMA,
    n_quad: int = 5,
    colour_columns: dict[str, str] | None = None,
    membership_thresholds=DEFAULT_THRESHOLDS,
    alt_membership: str | None = "mem_prob_hdbscan",
    age_scale_dex: float = DEFAULT_AGE_SCALE_DEX,
    calibration_catalogue: pd.DataFrame | None = None,
    calibration_scale_dex: float = DEFAULT_CALIBRATION_SCALE_DEX,
    n_calibration: int = 4,
    seed: int = 0,
    cache: str | Path | None = None,
    progress: bool = True,
    method: str = "fast",
    full_kwargs: dict[str, Any] | None = None,
    **age_kwargs,
) -> SweepResult:
    """Error budget of a cluster age: statistical, each systematic component and the total.

    Parameters
    ----------
    df
        Catalogue-schema table holding the cluster.
    cluster, by
        Which cluster (or subgroup) to age; see :func:`~chronoflow.inference.ages.cluster_age`.
    model
        A loaded model, a path, or ``None`` for the shipped model.
    reddening_sigma
        Standard deviation of the cluster's E(BP-RP) [mag] (default
        :data:`DEFAULT_REDDENING_SIGMA`); 0 skips the component.
    n_quad
        Gauss-Hermite nodes of the extinction integral (odd, >= 5; the uncertainty compares it
        with the 3-node rule).
    colour_columns
        ``{label: column}`` of alternative intrinsic colours (e.g. from another dust map).
    membership_thresholds
        Each variant keeps the stars with membership >= threshold, all as members.
    alt_membership
        Alternative membership column (``None`` to skip); where it is missing the adopted
        membership is used.
    age_scale_dex
        Correlated error of the calibration age scale [dex] (default
        :data:`DEFAULT_AGE_SCALE_DEX`); 0 skips it.
    calibration_catalogue
        Training catalogue of the per-cluster calibration refits; ``None`` skips them (each
        refit trains the first member's recipe from scratch: about half a minute on one core
        for the shipped model, cached on disk).
    calibration_scale_dex
        Standard deviation of the per-cluster calibration-age errors [dex].
    n_calibration
        Perturbed refits (plus one unperturbed and one null refit).
    seed
        Seeds the perturbations.
    cache
        Directory of cached refits (default: ``<user cache>/refits``).
    progress
        Show a progress bar.
    method
        ``"fast"`` (default: every variant a fast grid age) or ``"full"``: extinction and
        membership from the hierarchical model instead (:func:`_full_components`: four PyMC
        runs with the reddening offset and the outlier fraction each freed or fixed; a few
        minutes per cluster); the age scale, calibration refits and model terms as in the fast
        budget.
    full_kwargs
        Sampler settings for ``method="full"`` (``draws``, ``tune``, ``chains``, ``cores``,
        ``seed``, ...; see :func:`~chronoflow.inference.hierarchical.full_cluster_age`).
    **age_kwargs
        Passed to every :func:`~chronoflow.inference.ages.cluster_age` call (``f_out``, ``prior``, ...).

    Returns
    -------
    SweepResult
    """
    from rich.progress import track

    for label, value in (("reddening_sigma", reddening_sigma), ("age_scale_dex", age_scale_dex),
                         ("calibration_scale_dex", calibration_scale_dex)):  # fmt: skip
        if not value >= 0:
            raise DomainError(f"{label} must be >= 0, got {value}")
    if n_quad < 5 or n_quad % 2 == 0:
        raise DomainError(f"n_quad must be odd and >= 5, got {n_quad}")
    if int(n_calibration) != n_calibration or n_calibration < 0:
        raise DomainError(f"n_calibration must be an integer >= 0, got {n_calibration}")
    if method not in ("fast", "full"):
        raise DomainError(f"unknown method {method!r}; allowed: 'fast', 'full'")
    model = resolve_model(model)
    nominal = cluster_age(df, cluster, by=by, model=model, **age_kwargs)
    name = nominal.cluster
    age_kwargs = dict(age_kwargs)
    selected = df[df[by].astype(str) == name] if by in df.columns else df
    member_col = age_kwargs.pop("membership", "mem_prob_source")
    settings: dict[str, Any] = {"cluster": name, "by": by, "reddening_sigma_mag": reddening_sigma, "n_quad": n_quad,
                                "age_scale_dex": age_scale_dex, "calibration_scale_dex": calibration_scale_dex,
                                "n_calibration": int(n_calibration) if calibration_catalogue is not None else 0, "seed": seed,
                                "method": method}  # fmt: skip
    full_rows: list[dict[str, Any]] = []
    if method == "full":
        full_rows, full_settings = _full_components(df, name, by, model, reddening_sigma, {**age_kwargs, "membership": member_col},
                                                     full_kwargs or {})  # fmt: skip
        settings.update(full_settings)
        reddening_sigma, membership_thresholds, alt_membership = 0.0, (), None  # measured by the full runs instead

    def age(table: pd.DataFrame, flow: RotationModel = model, membership: str | None = member_col) -> ClusterAge:
        return cluster_age(table, name, by=by, model=flow, membership=membership, **age_kwargs)

    # (component, label, weight, callable -> ClusterAge)
    jobs: list[tuple[str, str, float, Any]] = []
    if reddening_sigma > 0:
        for rule in (n_quad, 3):
            x, w = np.polynomial.hermite_e.hermegauss(rule)
            for xi, wi in zip(x, w / w.sum(), strict=True):
                offset = float(xi) * reddening_sigma
                label = f"E(BP-RP) {offset:+.4f} mag ({rule}-node rule)"
                jobs.append(("extinction" if rule == n_quad else "extinction_3", label, float(wi),
                             lambda d=selected.assign(BPRP_0=selected["BPRP_0"] - offset), o=offset: nominal if o == 0 else age(d)))  # fmt: skip
    for label, column in (colour_columns or {}).items():
        if column not in selected.columns:
            raise ChronoflowError(f"missing colour column {column!r} for variant {label!r}")
        jobs.append(("dust_maps", f"colour {label}", 1.0, lambda d=selected.assign(BPRP_0=selected[column]): age(d)))
    if member_col is not None and membership_thresholds:
        if member_col not in selected.columns:
            raise ChronoflowError(f"missing membership column {member_col!r}")
        for threshold in membership_thresholds:
            cut = selected[pd.to_numeric(selected[member_col], errors="coerce") >= threshold]
            jobs.append(("membership", f"cut p >= {threshold:g}", 1.0, lambda d=cut: age(d, membership=None)))
    if member_col is not None and alt_membership and alt_membership in selected.columns and selected[alt_membership].notna().any():
        alt = selected.assign(_alt_member=selected[alt_membership].fillna(selected[member_col]))
        jobs.append(("membership", f"{alt_membership} (fallback {member_col})", 1.0, lambda d=alt: age(d, membership="_alt_member")))
    if age_scale_dex > 0:
        for sign in (+1, -1):
            jobs.append(("age_scale", f"calibration ages {sign * age_scale_dex:+g} dex", 1.0,
                         lambda s=sign: age(selected, flow=model.shifted_in_age(s * age_scale_dex))))  # fmt: skip
    if calibration_catalogue is not None and n_calibration > 0:
        directory = Path(cache) if cache is not None else cache_dir() / "refits"
        in_set = by == "cluster" and name in set(calibration_catalogue["cluster"].astype(str))
        calib = calibration_catalogue[calibration_catalogue["cluster"].astype(str) != name] if in_set else calibration_catalogue
        settings["target_in_calibration_set"] = "removed before the refits" if in_set else "not in the calibration set"
        fingerprint, calib_sha = model_fingerprint(model), catalogue_sha256(calib)
        clusters = sorted(calib["cluster"].astype(str).unique())
        rng = np.random.default_rng(seed)
        draws = [dict(zip(clusters, rng.normal(0.0, calibration_scale_dex, len(clusters)), strict=True)) for _ in range(int(n_calibration))]
        null = dict(zip(clusters, np.random.default_rng([seed, 1]).choice([-1.0, 1.0], len(clusters)) * NULL_PERTURBATION_DEX, strict=True))

        def refit_age(offsets):
            return age(selected, flow=_refit(model, fingerprint, calib, calib_sha, offsets, directory))

        jobs.append(("calibration_base", "refit, fiducial ages", 1.0, lambda: refit_age({})))
        jobs.append(("calibration_null", f"refit, ages +-{NULL_PERTURBATION_DEX:g} dex (noise floor)", 1.0, lambda: refit_age(null)))
        for k, offsets in enumerate(draws):
            jobs.append(("calibration", f"refit, ages perturbed #{k}", 1.0, lambda o=offsets: refit_age(o)))

    rows = []
    for component, label, weight, run in track(jobs, description=f"sweep {name}", disable=not progress):
        try:
            res = run()
        except ChronoflowError as exc:  # e.g. a threshold that leaves no star: recorded, never hidden
            rows.append({"component": component, "variant": label, "n_used": 0, "weight": weight, "note": str(exc)})
            continue
        rows.append({"component": component, "variant": label, "n_used": res.n_used, "log10_age_median": res.summary["median"],
                     "log10_age_p16": res.summary["p16"], "log10_age_p84": res.summary["p84"], "weight": weight, "note": "",
                     "_stat": res.error_dex["statistical"]})  # fmt: skip
    variants = pd.DataFrame(rows, columns=[*_VARIANT_COLUMNS, "_stat"])
    variants["shift_dex"] = variants["log10_age_median"] - nominal.summary["median"]
    variants["noise_dex"] = 0.0
    stat0 = nominal.error_dex["statistical"]
    cuts = variants["variant"].str.startswith("cut p >=")
    variants.loc[cuts, "noise_dex"] = np.sqrt(np.clip(variants.loc[cuts, "_stat"] ** 2 - stat0**2, 0.0, None))
    calib_rows = variants["component"].isin(["calibration", "calibration_null"])
    if calib_rows.any():  # paired: against the refit on the fiducial ages, not against the shipped model
        base = variants.loc[variants["component"] == "calibration_base", "log10_age_median"]
        variants.loc[calib_rows, "shift_dex"] = variants.loc[calib_rows, "log10_age_median"] - (base.iloc[0] if len(base) else np.nan)
    budget = _budget(variants, nominal, model, full_rows)
    variants = variants.drop(columns="_stat").reset_index(drop=True)
    return SweepResult(budget, variants, nominal, settings)


def _rms_component(name: str, group: pd.DataFrame, note: str = "") -> dict[str, Any]:
    ok = group["shift_dex"].notna().to_numpy()
    shifts = group["shift_dex"].to_numpy(float)[ok]
    noise = group["noise_dex"].to_numpy(float)[ok]
    n = len(shifts)
    if n == 0:
        return {"component": name, "n_variants": 0, "shift_dex": np.nan, "systematic_dex": np.nan, "uncertainty_dex": np.nan,
                "note": "every variant failed: " + "; ".join(group["note"].astype(str))}  # fmt: skip
    sigma = math.sqrt(max(float(np.mean(shifts**2 - noise**2)), 0.0))
    if noise.any():
        note = (note + "; " if note else "") + "statistical noise of the subsamples removed"
    # standard error of an rms of n values, sigma / sqrt(2 n); where the noise removal leaves
    # little, the noise's own rms sets the scale (a 0 would claim a certainty the cuts lack)
    scale = max(sigma, math.sqrt(float(np.mean(noise**2))))
    return {"component": name, "n_variants": n, "shift_dex": float(np.mean(shifts)), "systematic_dex": sigma,
            "uncertainty_dex": scale / math.sqrt(2 * n), "note": note}  # fmt: skip


def _quadrature_component(group: pd.DataFrame, rule3: pd.DataFrame, nominal_median: float) -> dict[str, Any]:
    def moments(g):
        if g["log10_age_median"].isna().any():
            return np.nan, np.nan
        w = g["weight"].to_numpy(float)
        a = g["log10_age_median"].to_numpy(float)
        mean = float(np.sum(w * a))
        return mean, math.sqrt(max(float(np.sum(w * (a - mean) ** 2)), 0.0))

    mean, sigma = moments(group)
    _, sigma3 = moments(rule3)
    note = "" if np.isfinite(sigma) else "a quadrature node failed: " + "; ".join(group["note"][group["note"] != ""].astype(str))
    return {"component": "extinction", "n_variants": len(group), "shift_dex": mean - nominal_median, "systematic_dex": sigma,
            "uncertainty_dex": abs(sigma - sigma3) if np.isfinite(sigma3) else np.nan,
            "note": note or f"Gauss-Hermite, {len(group)} nodes; uncertainty: against the 3-node rule"}  # fmt: skip


def _budget(variants: pd.DataFrame, nominal: ClusterAge, model: RotationModel, full_rows=()) -> pd.DataFrame:
    rows: list[dict[str, Any]] = [r for r in full_rows if r["component"] != "statistical"]
    by = {c: g for c, g in variants.groupby("component", sort=False)}
    if "extinction" in by:
        rows.append(_quadrature_component(by["extinction"], by.get("extinction_3", by["extinction"].iloc[:0]), nominal.summary["median"]))
    if "dust_maps" in by:
        rows.append(_rms_component("dust_maps", by["dust_maps"]))
    if "membership" in by:
        rows.append(_rms_component("membership", by["membership"]))
    if "age_scale" in by:
        rows.append(_rms_component("age_scale", by["age_scale"], "exact (refit from scratch = shifted standardization)"))
        rows[-1]["uncertainty_dex"] = 0.0
    if "calibration" in by:
        row = _rms_component("calibration", by["calibration"])
        null = by.get("calibration_null", pd.DataFrame(columns=variants.columns))["shift_dex"].dropna()
        floor = float(abs(null.iloc[0])) if len(null) else np.nan
        if np.isfinite(row["systematic_dex"]) and np.isfinite(floor):
            raw = row["systematic_dex"]
            row["systematic_dex"] = math.sqrt(max(raw**2 - floor**2, 0.0))
            row["uncertainty_dex"] = math.hypot(row["uncertainty_dex"], floor)
            row["note"] = f"paired refits from scratch; training-noise floor {floor:.4f} dex removed"
        elif np.isfinite(row["systematic_dex"]):
            row["note"] = "paired refits from scratch; the null refit failed, no noise floor removed"
        rows.append(row)
    k = n_members(model)
    spread = nominal.error_dex.get("ensemble", 0.0)
    rows.append({"component": "model", "n_variants": k, "shift_dex": 0.0, "systematic_dex": float(spread) if k > 1 else np.nan,
                 "uncertainty_dex": float(spread) / math.sqrt(2 * (k - 1)) if k > 1 else np.nan,
                 "note": "spread of the ensemble members' medians" if k > 1 else "a single flow: no ensemble spread"})  # fmt: skip
    oos = nominal.error_dex.get("calibrated", 0.0) ** 2 + nominal.error_dex.get("extrapolation", 0.0) ** 2
    if nominal.error_dex.get("calibrated", 0.0) > 0 or nominal.error_dex.get("extrapolation", 0.0) > 0:
        curve = model_error_curve(model)
        n_eff = float(np.interp(nominal.summary["median"], curve.log10_age_myr, curve.n_eff)) if curve is not None and curve.n_eff else np.nan
        rows.append({"component": "out_of_sample", "n_variants": int(curve.n_clusters) if curve is not None else 0, "shift_dex": 0.0,
                     "systematic_dex": math.sqrt(oos), "uncertainty_dex": math.sqrt(oos / (2 * n_eff)) if n_eff > 0 else np.nan,
                     "note": "leave-one-out calibrated model error (and extrapolation) at this age; uncertainty "
                             f"sigma / sqrt(2 n_eff), n_eff {n_eff:.1f} clusters in the kernel"})  # fmt: skip

    full_stat = [r for r in full_rows if r["component"] == "statistical"]
    stat = full_stat[0]["systematic_dex"] if full_stat else nominal.error_dex["statistical"]
    per_cluster = ("extinction", "dust_maps", "membership", "calibration")
    sys = {r["component"]: r for r in rows}
    failed = [c for c, r in sys.items() if not np.isfinite(r["systematic_dex"]) and not (c == "model" and k == 1)]
    if failed:
        warnings.warn(f"{nominal.cluster}: component(s) {', '.join(failed)} failed (every variant or a node failed) and are "
                      "left out of the total; see the budget's notes", RuntimeWarning, stacklevel=3)  # fmt: skip
    pc = [sys[c] for c in per_cluster if c in sys and np.isfinite(sys[c]["systematic_dex"])]
    pc2 = sum(r["systematic_dex"] ** 2 for r in pc)
    oos_row = sys.get("out_of_sample")
    use_oos = oos_row is not None and oos_row["systematic_dex"] ** 2 >= pc2
    # the latent-member term of the hierarchical layer and the members' spread measure one thing:
    # the larger counts (evidence weights can concentrate on one member, Bayesian model averaging's
    # known overconfidence, so the spread is usually the larger)
    choice = sys.get("model_choice")
    choice_wins = choice is not None and np.isfinite(choice["systematic_dex"]) and (
        not np.isfinite(sys["model"]["systematic_dex"]) or choice["systematic_dex"] > sys["model"]["systematic_dex"])
    for r in rows:
        finite = np.isfinite(r["systematic_dex"])
        if r["component"] == "model_choice":
            r["in_total"] = bool(choice_wins)
        elif r["component"] == "model":
            r["in_total"] = bool(finite and not choice_wins)
        elif r["component"] in per_cluster:
            r["in_total"] = bool(finite and not use_oos)
        elif r["component"] == "out_of_sample":
            r["in_total"] = use_oos
        else:
            r["in_total"] = bool(finite)
    parts = [(r["systematic_dex"], r["uncertainty_dex"]) for r in rows if r["in_total"]]
    total = math.sqrt(stat**2 + sum(s**2 for s, _ in parts))
    unc = [s * u for s, u in parts if np.isfinite(u)]
    total_unc = math.sqrt(sum(v**2 for v in unc)) / total if total > 0 else 0.0
    note = ("out_of_sample in place of " if use_oos else "extinction, membership and calibration in place of out_of_sample"
            if oos_row is not None else "")  # fmt: skip
    if use_oos:
        note += ", ".join(c for c in per_cluster if c in sys) + " (it holds their typical size)"
    if failed:
        note += ("; " if note else "") + "left out (failed): " + ", ".join(failed)
    rows.append(full_stat[0] | {"in_total": True} if full_stat else
                {"component": "statistical", "n_variants": 0, "shift_dex": 0.0, "systematic_dex": stat, "uncertainty_dex": np.nan,
                 "in_total": True, "note": "(p84 - p16) / 2 of the posterior"})  # fmt: skip
    relative = math.sqrt(max(total**2 - sum(r["systematic_dex"] ** 2 for r in rows if r["component"] == "age_scale" and r["in_total"]), 0.0))
    rows.append({"component": "total", "n_variants": int(variants["log10_age_median"].notna().sum()), "shift_dex": np.nan,
                 "systematic_dex": total, "uncertainty_dex": total_unc, "in_total": True, "note": note})  # fmt: skip
    rows.append({"component": "total_relative", "n_variants": 0, "shift_dex": np.nan, "systematic_dex": relative,
                 "uncertainty_dex": np.nan, "in_total": False,
                 "note": "the total without the age scale: for ages compared on the calibration clusters' own scale"})  # fmt: skip
    return pd.DataFrame(rows, columns=_BUDGET_COLUMNS)


def _full_components(df, name, by, model, reddening_sigma, age_kwargs, full_kwargs) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Extinction and membership by the hierarchical model: a variance decomposition.

    Runs of :func:`~chronoflow.inference.hierarchical.full_cluster_age` (the age spread free in all):
    *fixed* (no reddening offset, outlier fraction fixed at 0.05, memberships as given, the
    ensemble's mixture density as one model), the reddening offset freed (Normal(0,
    ``reddening_sigma``)), the outlier fraction freed (Beta(1, 19)), both freed, and, for an
    ensemble, the model choice freed (a latent member: ``model_choice``). With ``s_x`` the posterior standard deviation of the mean log
    age in run x: statistical = ``s_fixed``; a component = sqrt(max(s_freed^2 - s_fixed^2, 0)).
    Uncertainties: the Monte Carlo error of each variance (``var * sqrt(2 / ESS)``), propagated.
    R-hat and divergences of every run are reported and warned on.
    """
    from ..inference.hierarchical import full_cluster_age

    kwargs = {"progressbar": False, **full_kwargs}
    fast_kwargs = {k: v for k, v in age_kwargs.items() if k in ("membership", "background", "cuts", "ruwe_max", "include_out_of_domain")}
    runs = {"fixed": (0.0, 0.05, False), "extinction": (reddening_sigma, 0.05, False), "membership": (0.0, None, False),
            "all": (reddening_sigma, None, False)}  # fmt: skip
    if n_members(model) > 1:
        runs["model_choice"] = (0.0, 0.05, True)
    out: dict[str, tuple[float, float, float, int, float]] = {}  # variance, ESS, R-hat, divergences, median
    for label, (red, f_fixed, choice) in runs.items():
        res = full_cluster_age(df, name, by=by, model=model, reddening_prior_mag=red, f_out_fixed=f_fixed, model_choice=choice,
                               **fast_kwargs, **kwargs)  # fmt: skip
        draws = res.idata.posterior["log10_age"].values.ravel()
        ess = float(res.summary.loc["log10_age", "ess_bulk"])
        out[label] = (float(np.var(draws, ddof=1)), ess, res.rhat_max, res.n_divergent, float(np.median(draws)))
    rhat = max(v[2] for v in out.values())
    div = sum(v[3] for v in out.values())
    if rhat > 1.01 or div:
        warnings.warn(f"{name}: full budget runs have R-hat up to {rhat:.3f} and {div} divergences; raise draws/tune",
                      RuntimeWarning, stacklevel=3)  # fmt: skip

    def se_var(label):
        var, ess = out[label][0], out[label][1]
        return var * math.sqrt(2.0 / max(ess, 1.0))

    v0 = out["fixed"][0]
    rows = []
    for comp in ("extinction", "membership", "model_choice"):
        if (comp == "extinction" and reddening_sigma == 0) or comp not in out:
            continue
        diff = out[comp][0] - v0
        sigma = math.sqrt(max(diff, 0.0))
        se = math.hypot(se_var(comp), se_var("fixed"))
        unc = se / (2 * sigma) if sigma > math.sqrt(se) else math.sqrt(se)  # delta method, or its scale near 0
        what = ("latent ensemble member (a mixture of the members' posteriors) against their mixture density"
                if comp == "model_choice" else "posterior variance freed minus fixed")  # fmt: skip
        rows.append({"component": comp, "n_variants": 2, "shift_dex": out[comp][4] - out["fixed"][4], "systematic_dex": sigma,
                     "uncertainty_dex": unc, "note": f"hierarchical: {what} (R-hat {out[comp][2]:.3f})"})  # fmt: skip
    s0 = math.sqrt(v0)
    rows.append({"component": "statistical", "n_variants": 1, "shift_dex": 0.0, "systematic_dex": s0,
                 "uncertainty_dex": se_var("fixed") / (2 * s0) if s0 > 0 else np.nan,
                 "note": "hierarchical: posterior sd of the mean log age with reddening and outlier fraction fixed"})  # fmt: skip
    both = math.sqrt(max(out["all"][0] - v0, 0.0))
    settings = {"rhat_max": rhat, "divergences": div, "full_sd_dex": {k: math.sqrt(v[0]) for k, v in out.items()},
                "full_joint_systematic_dex": both, "full_settings": {k: v for k, v in kwargs.items() if k != "progressbar"}}  # fmt: skip
    return rows, settings
