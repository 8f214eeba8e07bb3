"""Leave-one-cluster-out validation: retrain without each cluster, then age it.

This is the honest test of cluster ages: the flow never saw the cluster it ages. The residual of
each cluster is ``median model age - fiducial age`` in dex; the rms is reported with and without
the four clusters whose fiducial ages the ChronoFlow paper revised.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from .ages import cluster_age
from .catalogue import REVISED_CLUSTERS
from .flow import FlowConfig
from .training import TrainConfig, train

__all__ = ["leave_one_out", "loo_rms"]


def _one(args: tuple[pd.DataFrame, str, FlowConfig, TrainConfig]) -> dict[str, Any]:
    import torch

    catalogue, name, flow_config, config = args
    torch.set_num_threads(config.threads)
    rest = catalogue[catalogue["cluster"] != name]
    model = train(rest, flow_config, config, progress=False, train_baseline=False).model
    res = cluster_age(catalogue, name, model=model)
    fiducial = float(res.stars["fiducial_age_Myr"].median())
    return {
        "cluster": name,
        "n_used": res.n_used,
        "fiducial_age_myr": fiducial,
        "log10_age_median": res.summary["median"],
        "log10_age_p16": res.summary["p16"],
        "log10_age_p84": res.summary["p84"],
        "residual_dex": res.summary["median"] - np.log10(fiducial),
        "revised_in_paper": name in REVISED_CLUSTERS,
    }


def leave_one_out(
    catalogue: pd.DataFrame,
    clusters: list[str] | None = None,
    *,
    flow_config: FlowConfig | None = None,
    epochs: int = 60,
    seed: int = 0,
    jobs: int = 2,
    progress: bool = True,
) -> pd.DataFrame:
    """Retrain without each cluster (fixed epoch budget, no inner validation split) and age it.

    Parameters
    ----------
    catalogue
        The full catalogue (published cuts are applied inside training and ageing).
    clusters
        Clusters to leave out in turn (default: all).
    flow_config
        Architecture (default: :class:`~chronoflow.flow.FlowConfig` ()).
    epochs
        Training epochs per fold (the shipped model's early-stopped count is a sensible choice).
    seed
        Training seed.
    jobs
        Folds trained in parallel processes (each single-threaded).
    progress
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per cluster: ``cluster``, ``n_used``, ``fiducial_age_myr`` [Myr],
        ``log10_age_median``/``p16``/``p84`` [log10 Myr], ``residual_dex`` and
        ``revised_in_paper``, sorted by fiducial age.
    """
    from rich.progress import track

    names = clusters if clusters is not None else sorted(catalogue["cluster"].unique())
    config = TrainConfig(seed=seed, max_epochs=epochs, val_clusters=(), refit_all=False, threads=1)
    tasks = [(catalogue, name, flow_config or FlowConfig(), config) for name in names]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            rows = list(track(pool.map(_one, tasks), total=len(tasks), description="leave-one-out", disable=not progress))
    else:
        rows = [_one(t) for t in track(tasks, description="leave-one-out", disable=not progress)]
    return pd.DataFrame(rows).sort_values("fiducial_age_myr").reset_index(drop=True)


def loo_rms(table: pd.DataFrame) -> dict[str, float]:
    """rms residual [dex] over all clusters and without the clusters the paper revised."""
    res = table["residual_dex"].to_numpy(float)
    keep = ~table["revised_in_paper"].to_numpy(bool)
    return {"rms_all_dex": float(np.sqrt(np.mean(res**2))), "rms_without_revised_dex": float(np.sqrt(np.mean(res[keep] ** 2)))}
