"""Systematics sweeps and the error budget of a cluster age.

A sweep ages one cluster many times with the fast method, each time changing one assumption
(a *variant*), and compares the medians with the nominal age. Components, each a set of named
variants (the gyro-interp way: systematics are data):

* ``extinction``: reddening offsets in E(BP-RP) (the intrinsic colour becomes
  ``BPRP_0 - offset``), and alternative colour columns the user supplies (other dust maps or
  extinction laws, computed with :mod:`chronoflow.extinction`);
* ``membership``: cutting at membership thresholds instead of weighting, and the HDBSCAN
  membership column instead of the adopted one;
* ``calibration``: the training clusters' fiducial ages perturbed (per cluster, Gaussian in dex)
  and the flow refitted by a warm-started fine-tune, cached on disk by a key of its inputs;
* ``model``: fine-tunes with unperturbed ages and different seeds (the model's own variance).

For each component the budget gives the mean shift of the median log age (dex), the spread of
the variant medians, and its systematic error: the rms of the shifts. The total is the quadrature
sum of the statistical half-width (p84 - p16) / 2 and every component.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._cache import cache_dir
from .ages import ClusterAge, cluster_age
from .artifact import resolve_model
from .errors import ChronoflowError, DomainError
from .flow import RotationModel
from .training import catalogue_sha256, fine_tune

__all__ = ["SweepResult", "refit_count", "systematics_sweep", "DEFAULT_REDDENING_OFFSETS", "DEFAULT_THRESHOLDS"]

#: Default reddening offsets in E(BP-RP) [mag].
DEFAULT_REDDENING_OFFSETS = (-0.04, -0.02, 0.02, 0.04)
#: Default membership thresholds (cut instead of weight).
DEFAULT_THRESHOLDS = (0.5, 0.7, 0.9)

_REFITS = {"count": 0}


def refit_count() -> int:
    """Number of flow refits actually trained in this process (cache hits do not count)."""
    return _REFITS["count"]


@dataclass
class SweepResult:
    """Result of :func:`systematics_sweep`.

    Attributes
    ----------
    budget
        One row per component plus ``statistical`` and ``total``: ``component``,
        ``n_variants``, ``mean_shift_dex``, ``spread_dex`` (std of the variant medians),
        ``systematic_dex`` (rms shift; for ``statistical`` the half-width, for ``total`` the
        quadrature sum).
    variants
        One row per variant: ``component``, ``variant``, ``n_used``, ``log10_age_median``,
        ``log10_age_p16``, ``log10_age_p84`` [log10 Myr], ``shift_dex``.
    nominal
        The nominal :class:`~chronoflow.ages.ClusterAge`.
    """

    budget: pd.DataFrame
    variants: pd.DataFrame
    nominal: ClusterAge
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON printed by ``chronoflow sweep --json``."""
        comps = self.budget[~self.budget["component"].isin(["statistical", "total"])]
        out: dict[str, Any] = {"cluster": self.nominal.cluster, "log10_age_median": self.nominal.summary["median"]}
        out["components"] = {
            r.component: {"n_variants": int(r.n_variants), "mean_shift_dex": float(r.mean_shift_dex),
                          "spread_dex": float(r.spread_dex), "systematic_dex": float(r.systematic_dex)}
            for r in comps.itertuples()
        }  # fmt: skip
        total = self.budget.set_index("component")["systematic_dex"]
        out["statistical_dex"] = float(total["statistical"])
        out["total_dex"] = float(total["total"])
        return out


def _refit_key(model: RotationModel, catalogue: pd.DataFrame, offsets: dict[str, float], epochs: int, seed: int) -> str:
    payload = json.dumps(
        {"model": (getattr(model, "card", {}) or {}).get("weights_sha256"), "catalogue": catalogue_sha256(catalogue),
         "offsets": sorted((k, round(v, 10)) for k, v in offsets.items()), "epochs": epochs, "seed": seed}
    )  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _refit(model, catalogue, offsets, epochs, seed, directory: Path) -> RotationModel:
    """Fine-tune on the catalogue with per-cluster age offsets [dex]; cached by input key."""
    from .artifact import load_model, save_model

    path = directory / f"refit-{_refit_key(model, catalogue, offsets, epochs, seed)}.pt"
    if path.is_file():
        return load_model(path)
    shifted = catalogue.copy()
    shift = shifted["cluster"].map(offsets).fillna(0.0).to_numpy(float)
    shifted["fiducial_age_Myr"] = shifted["fiducial_age_Myr"].to_numpy(float) * 10**shift
    tuned = fine_tune(model, shifted, epochs=epochs, seed=seed)
    _REFITS["count"] += 1
    directory.mkdir(parents=True, exist_ok=True)
    save_model(tuned, path)
    return tuned


def systematics_sweep(
    df: pd.DataFrame,
    cluster: str | None = None,
    *,
    by: str = "cluster",
    model: RotationModel | str | None = None,
    reddening_offsets=DEFAULT_REDDENING_OFFSETS,
    colour_columns: dict[str, str] | None = None,
    membership_thresholds=DEFAULT_THRESHOLDS,
    alt_membership: str | None = "mem_prob_hdbscan",
    calibration_catalogue: pd.DataFrame | None = None,
    calibration_scale_dex: float = 0.05,
    n_calibration: int = 4,
    n_seeds: int = 2,
    fine_tune_epochs: int = 10,
    seed: int = 0,
    cache: str | Path | None = None,
    progress: bool = True,
    **age_kwargs,
) -> SweepResult:
    """Error budget of a cluster age: statistical, each systematic component, and the total.

    Parameters
    ----------
    df
        Catalogue-schema table holding the cluster.
    cluster, by
        Which cluster (or subgroup) to age; see :func:`~chronoflow.ages.cluster_age`.
    model
        A loaded model, a path, or ``None`` for the shipped model.
    reddening_offsets
        Offsets in E(BP-RP) [mag]; each variant ages the cluster with ``BPRP_0 - offset``.
        Empty: no reddening variants.
    colour_columns
        ``{label: column}`` of alternative intrinsic colours (e.g. from another dust map).
    membership_thresholds
        Each variant keeps stars with membership >= threshold and treats them as members.
    alt_membership
        Alternative membership column (``None`` to skip); where it is missing the adopted
        membership is used.
    calibration_catalogue
        Training catalogue for the calibration refits; ``None`` skips the ``calibration`` and
        ``model`` components.
    calibration_scale_dex
        Standard deviation of the per-cluster fiducial-age perturbations [dex]; 0 gives refits
        with unperturbed ages.
    n_calibration, n_seeds
        Perturbed-age refits, and seed refits with unperturbed ages.
    fine_tune_epochs
        Epochs of each warm-started refit.
    seed
        Seeds the perturbations and the refits.
    cache
        Directory of cached refits (default: ``<user cache>/refits``).
    progress
        Show a progress bar.
    **age_kwargs
        Passed to every :func:`~chronoflow.ages.cluster_age` call (``f_out``, ``prior``, ...).

    Returns
    -------
    SweepResult
    """
    from rich.progress import track

    model = resolve_model(model)
    if calibration_scale_dex < 0:
        raise DomainError(f"calibration_scale_dex must be >= 0, got {calibration_scale_dex}")
    nominal = cluster_age(df, cluster, by=by, model=model, **age_kwargs)
    name = nominal.cluster
    age_kwargs = dict(age_kwargs)
    selected = df[df[by].astype(str) == name] if by in df.columns else df

    member_col = age_kwargs.pop("membership", "mem_prob_source")

    def age(table: pd.DataFrame, flow: RotationModel = model, membership: str | None = member_col) -> ClusterAge:
        return cluster_age(table, name, by=by, model=flow, membership=membership, **age_kwargs)

    jobs: list[tuple[str, str, Any]] = []  # (component, variant label, callable -> ClusterAge)
    for offset in reddening_offsets:
        jobs.append(("extinction", f"E(BP-RP) {offset:+g} mag", lambda d=selected.assign(BPRP_0=selected["BPRP_0"] - offset): age(d)))
    for label, column in (colour_columns or {}).items():
        if column not in selected.columns:
            raise ChronoflowError(f"missing colour column {column!r} for variant {label!r}")
        jobs.append(("extinction", f"colour {label}", lambda d=selected.assign(BPRP_0=selected[column]): age(d)))
    for threshold in membership_thresholds:
        cut = selected[pd.to_numeric(selected[member_col], errors="coerce") >= threshold]
        jobs.append(("membership", f"cut p >= {threshold:g}", lambda d=cut: age(d, membership=None)))
    if alt_membership and alt_membership in selected.columns and selected[alt_membership].notna().any():
        alt = selected.assign(_alt_member=selected[alt_membership].fillna(selected[member_col]))
        jobs.append(("membership", f"{alt_membership} (fallback {member_col})", lambda d=alt: age(d, membership="_alt_member")))
    if calibration_catalogue is not None:
        directory = Path(cache) if cache is not None else cache_dir() / "refits"
        rng = np.random.default_rng(seed)
        clusters = sorted(calibration_catalogue["cluster"].unique())
        for k in range(n_calibration):
            offsets = dict(zip(clusters, rng.normal(0, calibration_scale_dex, len(clusters))))
            jobs.append(("calibration", f"ages perturbed #{k}", lambda o=offsets, k=k: age(
                selected, _refit(model, calibration_catalogue, o, fine_tune_epochs, seed + k, directory))))
        for k in range(n_seeds):
            jobs.append(("model", f"seed {seed + 100 + k}", lambda k=k: age(
                selected, _refit(model, calibration_catalogue, {}, fine_tune_epochs, seed + 100 + k, directory))))

    rows = []
    for component, label, run in track(jobs, description=f"sweep {name}", disable=not progress):
        try:
            res = run()
        except ChronoflowError as exc:  # e.g. a threshold that leaves no star: record, do not hide
            rows.append({"component": component, "variant": label, "n_used": 0, "log10_age_median": np.nan,
                         "log10_age_p16": np.nan, "log10_age_p84": np.nan, "note": str(exc)})  # fmt: skip
            continue
        rows.append({"component": component, "variant": label, "n_used": res.n_used, "log10_age_median": res.summary["median"],
                     "log10_age_p16": res.summary["p16"], "log10_age_p84": res.summary["p84"], "note": ""})  # fmt: skip
    variants = pd.DataFrame(rows, columns=["component", "variant", "n_used", "log10_age_median", "log10_age_p16", "log10_age_p84", "note"])
    variants["shift_dex"] = variants["log10_age_median"] - nominal.summary["median"]
    return SweepResult(_budget(variants, nominal), variants, nominal, {"cluster": name, "by": by})


def _budget(variants: pd.DataFrame, nominal: ClusterAge) -> pd.DataFrame:
    rows = []
    for component, group in variants.groupby("component", sort=False):
        shifts = group["shift_dex"].dropna().to_numpy(float)
        rows.append({
            "component": component, "n_variants": len(shifts),
            "mean_shift_dex": float(shifts.mean()) if len(shifts) else np.nan,
            "spread_dex": float(shifts.std()) if len(shifts) else np.nan,
            "systematic_dex": float(np.sqrt(np.mean(shifts**2))) if len(shifts) else np.nan,
        })  # fmt: skip
    stat = (nominal.summary["p84"] - nominal.summary["p16"]) / 2
    parts = np.array([r["systematic_dex"] for r in rows], dtype=float)
    rows.append({"component": "statistical", "n_variants": 0, "mean_shift_dex": 0.0, "spread_dex": 0.0, "systematic_dex": stat})
    total = float(np.sqrt(stat**2 + np.nansum(parts**2)))
    rows.append({"component": "total", "n_variants": len(variants), "mean_shift_dex": np.nan, "spread_dex": np.nan, "systematic_dex": total})
    return pd.DataFrame(rows)
