"""Leave-one-cluster-out validation: retrain the whole recipe without each cluster, then age it.

This is the honest test of cluster ages: the model never saw the cluster it ages. Each fold trains
the ensemble recipe (:func:`chronoflow.flows.ensemble.train_ensemble`: K members, seeds and bootstrap
resamples, the training settings of the shipped model) on every other cluster and ages the
held-out one with the fast method. The residual is ``median model age - fiducial age`` in dex.

:func:`calibrate_loo` then turns the residuals into the model-error term
(:mod:`chronoflow.inference.model_error`) and measures its coverage honestly: the total error quoted for
cluster i uses a model-error curve calibrated on the *other* clusters only (nested leave-one-out).
The clusters whose fiducial ages the ChronoFlow paper revised never enter a calibration.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ..data.catalogue import REVISED_CLUSTERS
from ..flows.ensemble import FlowEnsemble, train_ensemble
from ..flows.flow import FlowConfig
from ..flows.training import TrainConfig
from ..inference.ages import cluster_age
from ..inference.model_error import (
    DEFAULT_BANDWIDTH,
    ModelErrorCurve,
    calibrate_model_error,
    error_budget,
)

__all__ = ["calibrate_loo", "describe_recipe", "fold_model", "leave_one_out", "loo_metrics", "loo_rms"]


def fold_model(catalogue: pd.DataFrame, name: str, flow_config: FlowConfig, config: TrainConfig, epochs: list[int],
               bootstrap: str = "stars") -> FlowEnsemble:  # fmt: skip
    """The recipe retrained without cluster ``name``: one member per entry of ``epochs`` (fixed
    epoch counts, seeds ``config.seed + k``), in ``config.threads`` threads, no progress bar.

    The fold of :func:`leave_one_out`; the validation scripts in ``docs/validation/`` use it to
    age a held-out cluster in other ways (by subgroup, star by star). The process's torch thread
    count is restored on return."""
    import torch

    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        rest = catalogue[catalogue["cluster"] != name]
        model = train_ensemble(rest, len(epochs), flow_config, config, bootstrap=bootstrap, progress=False, baseline=False,
                               member_epochs=epochs).model  # fmt: skip
    finally:
        torch.set_num_threads(old_threads)
    return FlowEnsemble(list(model.members))


def _one(args: tuple[pd.DataFrame, str, FlowConfig, TrainConfig, list[int], str, list[int]]) -> list[dict[str, Any]]:
    import torch

    catalogue, name, flow_config, config, epochs, bootstrap, subsets = args
    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # the fold trains and ages in config.threads threads
    try:
        model = fold_model(catalogue, name, flow_config, config, epochs, bootstrap)
        return [_age_row(catalogue, name, FlowEnsemble(list(model.members)[:k])) for k in subsets]
    finally:
        torch.set_num_threads(old_threads)


def _age_row(catalogue: pd.DataFrame, name: str, model: FlowEnsemble) -> dict[str, Any]:
    res = cluster_age(catalogue, name, model=model)
    fiducial = float(res.stars["fiducial_age_Myr"].median())
    lo, hi = model.domain.log10_age_myr
    return {
        "n_members": model.n_members,
        "cluster": name,
        "n_used": res.n_used,
        "fiducial_age_myr": fiducial,
        "log10_age_median": res.summary["median"],
        "log10_age_p16": res.summary["p16"],
        "log10_age_p84": res.summary["p84"],
        "residual_dex": res.summary["median"] - np.log10(fiducial),
        "revised_in_paper": name in REVISED_CLUSTERS,
        "statistical_dex": res.error_dex["statistical"],
        "ensemble_dex": res.error_dex["ensemble"],
        "calibrated_lo": lo,
        "calibrated_hi": hi,
        "member_medians": " ".join(f"{v:.4f}" for v in (res.member_medians or [res.summary["median"]])),
    }


def leave_one_out(
    catalogue: pd.DataFrame,
    clusters: list[str] | None = None,
    *,
    flow_config: FlowConfig | None = None,
    config: TrainConfig | None = None,
    n_members: int = 1,
    bootstrap: str = "stars",
    subsets: list[int] | None = None,
    epochs: int | list[int] = 45,
    seed: int = 0,
    jobs: int = 2,
    progress: bool = True,
) -> pd.DataFrame:
    """Retrain the recipe without each cluster (fixed epochs, no inner validation split) and age it.

    Parameters
    ----------
    catalogue
        The full catalogue (published cuts are applied inside training and ageing).
    clusters
        Clusters to leave out in turn (default: all).
    flow_config
        Architecture (default: :class:`~chronoflow.flows.flow.FlowConfig` ()).
    config
        Training settings (age-label noise, weight decay, ...); ``seed``, ``max_epochs``, the
        validation split and the refit are set here. Default :class:`~chronoflow.flows.training.TrainConfig` ().
    n_members, bootstrap
        Ensemble members per fold and their resampling (see :func:`~chronoflow.flows.ensemble.train_ensemble`).
    subsets
        Also age each held-out cluster with the first k members for every k listed (to choose K
        by measurement); default: only ``n_members``.
    epochs
        Training epochs of every member, or one value per member (the shipped members'
        early-stopped counts are the natural choice).
    seed
        Seed of member 0 (member k gets ``seed + k``).
    jobs
        Folds trained in parallel processes (each single-threaded).
    progress
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per cluster (and member count k), sorted by k and fiducial age: ``n_members``,
        ``cluster``, ``n_used``, ``fiducial_age_myr``
        [Myr], ``log10_age_median``/``p16``/``p84`` [log10 Myr], ``residual_dex``,
        ``revised_in_paper``, ``statistical_dex`` ((p84 - p16)/2), ``ensemble_dex`` (spread of the
        members' medians), ``calibrated_lo``/``calibrated_hi`` (the fold's calibration ages,
        log10 Myr) and ``member_medians``. :func:`calibrate_loo` adds the total error.
    """
    from rich.progress import track

    names = clusters if clusters is not None else sorted(catalogue["cluster"].unique())
    budgets = [int(epochs)] * n_members if np.ndim(epochs) == 0 else [int(e) for e in epochs]
    if len(budgets) != n_members:
        raise ValueError(f"epochs needs one value per member ({n_members}), got {len(budgets)}")
    ks = sorted({n_members, *(subsets or [])})
    if ks[0] < 1 or ks[-1] > n_members:
        raise ValueError(f"subsets must lie in 1..{n_members}, got {subsets}")
    config = replace(config or TrainConfig(), seed=seed, val_clusters=(), refit_all=False, threads=1)
    tasks = [(catalogue, name, flow_config or FlowConfig(), config, budgets, bootstrap, ks) for name in names]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            parts = list(track(pool.map(_one, tasks), total=len(tasks), description="leave-one-out", disable=not progress))
    else:
        parts = [_one(t) for t in track(tasks, description="leave-one-out", disable=not progress)]
    table = pd.DataFrame([row for part in parts for row in part])
    return table.sort_values(["n_members", "fiducial_age_myr"]).reset_index(drop=True)


def _calibration_rows(table: pd.DataFrame) -> np.ndarray:
    return ~table["revised_in_paper"].to_numpy(bool) & np.isfinite(table["residual_dex"].to_numpy(float))


def _curve(table: pd.DataFrame, rows: np.ndarray, bandwidth_dex: float) -> ModelErrorCurve:
    t = table[rows]
    ens = t["ensemble_dex"] if "ensemble_dex" in t else None
    return calibrate_model_error(t["log10_age_median"], t["residual_dex"], t["statistical_dex"], ens,
                                 bandwidth_dex=bandwidth_dex, nodes=np.round(np.arange(0.0, 4.15, 0.1), 2))  # fmt: skip


def calibrate_loo(table: pd.DataFrame, *, bandwidth_dex: float = DEFAULT_BANDWIDTH) -> tuple[pd.DataFrame, ModelErrorCurve]:
    """Model-error term from leave-one-out residuals, and the total error each fold would have quoted.

    Parameters
    ----------
    table
        Output of :func:`leave_one_out`.
    bandwidth_dex
        Kernel bandwidth of the calibration in log10 age [dex].

    Returns
    -------
    table : pandas.DataFrame
        ``table`` plus ``calibrated_dex`` (the model-error curve fitted on every *other*
        non-revised cluster, at this cluster's model age), ``model_dex``, ``total_dex``
        (:func:`~chronoflow.inference.model_error.error_budget` with that curve and the fold's calibration
        range), ``inside_total`` (|residual| <= total_dex) and ``flag``.
    curve : ModelErrorCurve
        Calibrated on all non-revised clusters: the term the shipped model carries.
    """
    if "n_members" in table and table["n_members"].nunique() > 1:
        raise ValueError("calibrate_loo needs one row per cluster: select one n_members first")
    out = table.reset_index(drop=True).copy()
    if "statistical_dex" not in out:  # an older table: statistical error from its percentiles
        out["statistical_dex"] = 0.5 * (out["log10_age_p84"] - out["log10_age_p16"])
    calib = _calibration_rows(out)
    full = _curve(out, calib, bandwidth_dex)
    cols: dict[str, list] = {"calibrated_dex": [], "model_dex": [], "total_dex": [], "flag": []}
    for i, row in out.iterrows():
        others = calib.copy()
        others[i] = False
        curve = _curve(out, others, bandwidth_dex) if calib[i] else full
        members = [float(v) for v in str(row.get("member_medians", "")).split()] or None
        rng = (row["calibrated_lo"], row["calibrated_hi"]) if "calibrated_lo" in row else None
        parts, flag = error_budget(row["log10_age_median"], row["log10_age_p16"], row["log10_age_p84"], members, curve, rng)
        cols["calibrated_dex"].append(parts["calibrated"])
        cols["model_dex"].append(parts["model"])
        cols["total_dex"].append(parts["total"])
        cols["flag"].append(flag)
    for k, v in cols.items():
        out[k] = v
    out["inside_total"] = np.abs(out["residual_dex"]) <= out["total_dex"]
    return out, full


def loo_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Summary figures of a (calibrated) leave-one-out table.

    Over the non-revised clusters ("all") and the interior ones (without the youngest and the
    oldest, whose leave-one-out is pure extrapolation): rms and median |residual| [dex], the share
    of clusters whose |residual| is within the statistical error (``coverage_statistical``) and
    within the total error (``coverage_total``, when ``total_dex`` is present), and the median
    total error [dex].
    """
    t = table[~table["revised_in_paper"].to_numpy(bool)].sort_values("fiducial_age_myr")
    stat = t["statistical_dex"] if "statistical_dex" in t else 0.5 * (t["log10_age_p84"] - t["log10_age_p16"])
    out: dict[str, float] = {}
    for label, part in (("all", slice(None)), ("interior", slice(1, -1))):
        r = t["residual_dex"].to_numpy(float)[part]
        out[f"n_{label}"] = int(len(r))
        out[f"rms_{label}_dex"] = float(np.sqrt(np.mean(r**2)))
        out[f"median_abs_{label}_dex"] = float(np.median(np.abs(r)))
        out[f"coverage_statistical_{label}"] = float(np.mean(np.abs(r) <= stat.to_numpy(float)[part]))
        if "total_dex" in t:
            out[f"coverage_total_{label}"] = float(np.mean(t["inside_total"].to_numpy(bool)[part]))
            out[f"median_total_{label}_dex"] = float(np.median(t["total_dex"].to_numpy(float)[part]))
    return out


def loo_rms(table: pd.DataFrame) -> dict[str, float]:
    """rms residual [dex] over all clusters and without the clusters the paper revised."""
    res = table["residual_dex"].to_numpy(float)
    keep = ~table["revised_in_paper"].to_numpy(bool)
    return {"rms_all_dex": float(np.sqrt(np.mean(res**2))), "rms_without_revised_dex": float(np.sqrt(np.mean(res[keep] ** 2)))}


def describe_recipe(flow_config: FlowConfig, config: TrainConfig, *, n_members: int, n_total: int,
                    bootstrap: str | None, epochs: list[int]) -> str:
    """One line naming the training recipe a leave-one-out run retrained: architecture, members
    per fold (of the model's ``n_total``), bootstrap, seeds, epochs per member, age-label noise
    [dex] and weight decay. It heads ``loo.md`` and is stored with a calibrated model-error term."""
    return (f"architecture {flow_config.to_dict()}; {n_members} of {n_total} members per fold "
            f"(bootstrap {bootstrap!r}, seeds {config.seed}-{config.seed + n_members - 1}), epochs {list(epochs)}; "
            f"age-label noise {config.age_noise_dex:g} dex, weight decay {config.weight_decay:g}")  # fmt: skip
