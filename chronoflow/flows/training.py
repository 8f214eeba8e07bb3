"""Training: cluster-wise validation split, early stopping, metrics, and the model card.

:func:`train` is the one entry point (the CLI's ``chronoflow train`` calls it). It

1. applies the published cuts to the catalogue (:func:`chronoflow.data.catalogue.training_sample`);
2. holds out whole clusters for validation (:func:`split_by_cluster`; never random stars, since
   stars of one cluster share an age and would leak it);
3. fits the flow and the Gaussian baseline on the other clusters with early stopping on the
   held-out negative log-likelihood, and records per-cluster NLL and PIT calibration;
4. optionally refits on all clusters for the early-stopped number of epochs (the shipped model),
   and returns the model with a card that makes the run reproducible.
"""

from __future__ import annotations

import copy
import hashlib
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..data.catalogue import REVISED_CLUSTERS, training_sample
from ..errors import ChronoflowError
from .card import MODEL_FORMAT, MODEL_FORMAT_VERSION
from .flow import (
    FlowConfig,
    RotationModel,
    Standardization,
    TrainingDomain,
    build_model,
    make_context,
)

__all__ = ["TrainConfig", "TrainResult", "catalogue_sha256", "evaluate", "split_by_cluster", "train"]


#: Resampling schemes of :attr:`TrainConfig.bootstrap`.
BOOTSTRAP_KINDS = ("none", "stars", "clusters")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (recorded in the model card).

    Attributes
    ----------
    seed
        Seeds the weight initialisation, the batch order and the validation split.
    max_epochs, patience
        Epoch budget and early-stopping patience (epochs without a better validation NLL).
    batch_size, learning_rate, weight_decay
        Adam settings; the learning rate follows a cosine decay over ``max_epochs``.
    n_val_clusters
        Clusters held out for validation when ``val_clusters`` is not given.
    val_clusters
        Explicit validation clusters (names in the ``cluster`` column).
    membership_weighted
        Weight each star's log-likelihood by its membership probability ``mem_prob_source``.
    ruwe_max
        RUWE cut of the published sample.
    refit_all
        After early stopping, refit on all clusters for the best number of epochs.
    threads
        torch threads during training (small networks run fastest on one).
    age_noise_dex
        Standard deviation [dex] of Gaussian noise added to every star's log10 age label, drawn
        afresh for every minibatch (noise regularization of a conditional density, Rothfuss et
        al. 2019): the ~27 distinct cluster ages are known to 0.03-0.1 dex, and the noise keeps
        the flow from learning per-cluster quirks as sharp functions of age. 0 disables it.
    age_noise_gap
        Widen the label noise where calibration ages are sparse: every star's noise standard
        deviation is ``max(age_noise_dex, age_noise_gap * gap)``, with ``gap`` [dex] the distance
        from its cluster's log10 age to the nearest other training age (so the flow sees labels
        spread into the gaps instead of interpolating freely across them). 0 disables it.
    bootstrap
        ``"none"``; ``"stars"`` (Poisson(1) weight per star, seeded: a bootstrap of the stars
        within every cluster) or ``"clusters"`` (Poisson(1) weight per cluster, so some clusters
        are left out): used to train ensemble members on resampled data.
    """

    seed: int = 0
    # Defaults chosen by grouped K-fold over clusters (docs/validation/architecture.md).
    max_epochs: int = 300
    patience: int = 30
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    n_val_clusters: int = 5
    val_clusters: tuple[str, ...] | None = None
    membership_weighted: bool = False
    ruwe_max: float = 1.4
    refit_all: bool = True
    threads: int = 1
    # Chosen by leave-one-cluster-out cluster ages (docs/validation/regularization.md).
    age_noise_dex: float = 0.10
    age_noise_gap: float = 0.0
    bootstrap: str = "none"

    def __post_init__(self) -> None:
        if self.bootstrap not in BOOTSTRAP_KINDS:
            raise ChronoflowError(f"bootstrap={self.bootstrap!r}; allowed: {', '.join(map(repr, BOOTSTRAP_KINDS))}")
        if not self.age_noise_dex >= 0:
            raise ChronoflowError(f"age_noise_dex must be >= 0 dex, got {self.age_noise_dex}")
        if not self.age_noise_gap >= 0:
            raise ChronoflowError(f"age_noise_gap must be >= 0, got {self.age_noise_gap}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded in a model card's ``training`` entry."""
        d = asdict(self)
        d["val_clusters"] = list(self.val_clusters) if self.val_clusters is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The settings of a card's ``training`` entry (:meth:`to_dict`); keys that are not
        settings (recorded results) are ignored, lists become tuples."""
        fields = cls.__dataclass_fields__
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields})


@dataclass
class TrainResult:
    """What :func:`train` returns: the model to use, the baseline, and the card."""

    model: RotationModel
    baseline: RotationModel | None
    card: dict[str, Any]


def catalogue_sha256(df: pd.DataFrame) -> str:
    """sha256 of a table's content (column names and values), independent of its file format."""
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df.reset_index(drop=True), index=False).to_numpy().tobytes())
    return h.hexdigest()


def split_by_cluster(df: pd.DataFrame, n_val: int = 5, seed: int = 0) -> tuple[list[str], list[str]]:
    """Choose validation clusters spread over age, never the age extremes.

    Clusters are sorted by fiducial age; the two youngest and two oldest always train (a held-out
    extreme would test extrapolation, not the fit), and so do the clusters whose fiducial ages the
    ChronoFlow paper revised (:data:`~chronoflow.data.catalogue.REVISED_CLUSTERS`: their labels are
    known to be off by 0.2-0.35 dex, which would blur the comparison). From the rest, one cluster
    with at least 30 stars is drawn (seeded) from each of ``n_val`` consecutive age bins.

    Returns
    -------
    train_clusters, val_clusters : list of str
    """
    stats = df.groupby("cluster")["fiducial_age_Myr"].agg(["median", "size"]).sort_values("median")
    names = list(stats.index)
    if n_val <= 0:
        return names, []
    inner = stats.iloc[2:-2]
    inner = inner[(inner["size"] >= 30) & ~inner.index.isin(REVISED_CLUSTERS)]
    if len(inner) < n_val:
        raise ChronoflowError(f"cannot hold out {n_val} clusters: only {len(inner)} eligible (>= 30 stars, not an age extreme)")
    rng = np.random.default_rng(seed)
    val = [str(rng.choice(part)) for part in np.array_split(np.asarray(inner.index, dtype=object), n_val)]
    return [c for c in names if c not in val], val


def _arrays(df: pd.DataFrame):
    log_prot = np.log10(df["Prot"].to_numpy(float))
    context = make_context(df["fiducial_age_Myr"].to_numpy(float), df["BPRP_0"].to_numpy(float), df["e_BPRP_0"].to_numpy(float))
    weight = df["mem_prob_source"].to_numpy(float)
    groups = pd.factorize(df["cluster"], sort=True)[0] if "cluster" in df.columns else np.zeros(len(df), dtype=int)
    return log_prot, context, weight, groups


def _noise_scale(log_age: np.ndarray, cfg: "TrainConfig") -> np.ndarray:
    """Per-star standard deviation [dex] of the age-label noise (see ``TrainConfig.age_noise_gap``)."""
    sd = np.full(len(log_age), float(cfg.age_noise_dex))
    ages = np.unique(log_age)
    if cfg.age_noise_gap > 0 and len(ages) > 1:
        gaps = np.diff(ages)
        nearest = np.minimum(np.r_[np.inf, gaps], np.r_[gaps, np.inf])
        sd = np.maximum(sd, cfg.age_noise_gap * nearest[np.searchsorted(ages, log_age)])
    return sd


def _bootstrap_weights(groups: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Poisson(1) resampling weights per star or per cluster (``groups``: cluster codes)."""
    if kind == "none":
        return np.ones(len(groups))
    rng = np.random.default_rng([seed, 0xB007])
    if kind == "stars":
        return rng.poisson(1.0, len(groups)).astype(float)
    per_cluster = rng.poisson(1.0, int(groups.max()) + 1 if len(groups) else 0).astype(float)
    if not per_cluster.any():
        per_cluster[rng.integers(len(per_cluster))] = 1.0
    return per_cluster[groups]


@contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _fit(
    model: RotationModel,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    cfg: TrainConfig,
    epochs: int,
    progress,
    label: str,
) -> tuple[RotationModel, dict[str, Any]]:
    """Adam with minibatches; early stopping on ``val`` when given, else exactly ``epochs``."""
    generator = torch.Generator().manual_seed(cfg.seed)
    y = torch.as_tensor(train[0])
    ctx = torch.as_tensor(train[1])
    w = torch.tensor((train[2] if cfg.membership_weighted else np.ones_like(train[2]))
                     * _bootstrap_weights(train[3], cfg.bootstrap, cfg.seed))
    w = w / w.mean()
    noise_sd = torch.as_tensor(_noise_scale(train[1][:, 0], cfg), dtype=ctx.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    best = (np.inf, 0, copy.deepcopy(model.state_dict()))
    history = []
    task = progress.add_task(label, total=epochs) if progress is not None else None
    n = len(y)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            c = ctx[idx]
            if cfg.age_noise_dex > 0 or cfg.age_noise_gap > 0:
                noise = torch.randn(len(idx), generator=generator, dtype=c.dtype) * noise_sd[idx]
                c = torch.cat([c[:, :1] + noise[:, None], c[:, 1:]], dim=1)
            loss = -(w[idx] * model.log_prob(y[idx], c, check_domain=False)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        model.eval()
        record = {"epoch": epoch, "train_nll": total / n}
        if val is not None:
            with torch.no_grad():
                val_nll = float(-model.log_prob(torch.as_tensor(val[0]), torch.as_tensor(val[1]), check_domain=False).mean())
            record["val_nll"] = val_nll
            if val_nll < best[0] - 1e-5:
                best = (val_nll, epoch, copy.deepcopy(model.state_dict()))
            elif epoch - best[1] >= cfg.patience:
                history.append(record)
                break
        history.append(record)
        if task is not None:
            progress.update(task, advance=1, description=f"{label}  nll {record.get('val_nll', record['train_nll']):.4f}")
    if val is not None:
        model.load_state_dict(best[2])
    model.eval()
    info = {"epochs_run": history[-1]["epoch"], "best_epoch": best[1] if val is not None else epochs, "history": history}
    return model, info


def evaluate(model: RotationModel, df: pd.DataFrame) -> dict[str, Any]:
    """Held-out metrics of ``model`` on ``df`` (one or more clusters).

    Returns
    -------
    dict
        ``nll`` (mean negative log-likelihood per star, nats per log10 d), ``nll_per_cluster``,
        and PIT calibration: ``pit_ks`` (KS distance of the PIT values from uniform),
        ``pit_ks_pvalue``, ``coverage_68`` and ``coverage_95`` (fractions of stars inside the
        central 68 % and 95 % predictive intervals).
    """
    from scipy import stats

    log_prot, context, _, _ = _arrays(df)
    with torch.no_grad():
        # Held-out clusters may sit just outside the training ranges: that is what is measured.
        lp = model.log_prob(log_prot, context, check_domain=False)
        pit = model.cdf(log_prot, context)
    per_cluster = pd.Series(-lp, index=df["cluster"].to_numpy()).groupby(level=0).mean()
    ks = stats.kstest(pit, "uniform")
    return {
        "n_stars": int(len(df)),
        "nll": float(-lp.mean()),
        "nll_per_cluster": {str(k): float(v) for k, v in per_cluster.items()},
        "pit_ks": float(ks.statistic),
        "pit_ks_pvalue": float(ks.pvalue),
        "coverage_68": float(np.mean(np.abs(pit - 0.5) <= 0.34)),
        "coverage_95": float(np.mean(np.abs(pit - 0.5) <= 0.475)),
    }


def train(
    catalogue: pd.DataFrame,
    flow_config: FlowConfig | None = None,
    config: TrainConfig | None = None,
    *,
    baseline_config: FlowConfig | None = None,
    progress: bool = True,
    apply_cuts: bool = True,
    train_baseline: bool = True,
) -> TrainResult:
    """Train the flow (and the Gaussian baseline) on a catalogue.

    Parameters
    ----------
    catalogue
        A validated catalogue (see :func:`chronoflow.load_catalogue`).
    flow_config
        Architecture; default :class:`FlowConfig` ().
    config
        Training settings; default :class:`TrainConfig` ().
    baseline_config
        Architecture of the Gaussian baseline (default: one hidden layer pair of 64).
    progress
        Show a rich progress bar.
    apply_cuts
        Apply the published cuts first (``config.ruwe_max``).
    train_baseline
        Also fit the Gaussian baseline (``TrainResult.baseline`` is ``None`` otherwise).

    Returns
    -------
    TrainResult
        ``model`` (refitted on all clusters when ``config.refit_all``), ``baseline`` and
        ``card`` (a JSON-serializable dict, see :func:`chronoflow.flows.artifact.save_model`).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    flow_config = flow_config or FlowConfig()
    config = config or TrainConfig()
    baseline_config = baseline_config or FlowConfig(kind="gaussian")
    t0 = time.perf_counter()
    df = training_sample(catalogue, ruwe_max=config.ruwe_max)[0] if apply_cuts else catalogue
    df = df[df["BPRP_0"].notna() & df["e_BPRP_0"].notna()]
    if config.val_clusters is not None:
        unknown = sorted(set(config.val_clusters) - set(df["cluster"]))
        if unknown:
            raise ChronoflowError(f"unknown validation cluster(s) {unknown}; known: {sorted(df['cluster'].unique())}")
        val_names = list(config.val_clusters)
        train_names = [c for c in df["cluster"].unique() if c not in val_names]
    else:
        train_names, val_names = split_by_cluster(df, config.n_val_clusters, config.seed)
    df_train = df[df["cluster"].isin(train_names)]
    df_val = df[df["cluster"].isin(val_names)]
    if len(df_train) == 0:
        raise ChronoflowError("no training stars left after the cuts and the validation split")
    tr = _arrays(df_train)
    va = _arrays(df_val) if len(df_val) else None

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _threads(config.threads), Progress(*columns, disable=not progress, transient=False) as bar:
        scaling = Standardization.fit(tr[0], tr[1])
        domain = TrainingDomain.fit(tr[1], tr[0])
        flow, flow_info = _fit(
            build_model(flow_config, scaling, domain, seed=config.seed), tr, va, config, config.max_epochs, bar, "flow (split)"
        )
        base, base_info = None, {"best_epoch": None}
        if train_baseline:
            base, base_info = _fit(
                build_model(baseline_config, scaling, domain, seed=config.seed), tr, va, config, config.max_epochs, bar,
                "baseline (split)",
            )
        validation = {}
        if va is not None:
            validation = {"flow": evaluate(flow, df_val)}
            if base is not None:
                validation["baseline"] = evaluate(base, df_val)
        final, final_info, final_names = flow, flow_info, train_names
        if config.refit_all and va is not None:
            everything = _arrays(df)
            scaling_all = Standardization.fit(everything[0], everything[1])
            domain_all = TrainingDomain.fit(everything[1], everything[0])
            final, final_info = _fit(
                build_model(flow_config, scaling_all, domain_all, seed=config.seed), everything, None,
                config, flow_info["best_epoch"], bar, "flow (all clusters)",
            )
            final_names = sorted(df["cluster"].unique())

    import nflows

    whole_file = catalogue.attrs.get("n_rows") == len(catalogue)
    card = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "chronoflow_version": __version__,
        "torch_version": torch.__version__,
        "nflows_version": getattr(nflows, "__version__", "0.14"),
        "architecture": flow_config.to_dict(),
        "n_parameters": final.n_parameters(),
        "standardization": final.scaling.to_dict(),
        "training_domain": final.domain.to_dict(),
        "training": config.to_dict(),
        "catalogue_sha256": catalogue_sha256(catalogue),
        # The file the table was read from, when it was used whole (pandas copies attrs to subsets).
        "catalogue_file": catalogue.attrs.get("source") if whole_file else None,
        "catalogue_file_sha256": catalogue.attrs.get("sha256") if whole_file else None,
        "n_catalogue_rows": int(len(catalogue)),
        "n_training_stars": int(len(df) if final is not flow else len(df_train)),
        "clusters": sorted(final_names),
        "split": {"train_clusters": sorted(train_names), "val_clusters": sorted(val_names)},
        "epochs": {"flow_split_best": flow_info["best_epoch"], "baseline_split_best": base_info["best_epoch"], "final": final_info["best_epoch"]},
        "baseline_architecture": baseline_config.to_dict(),
        "validation": validation,
        "train_nll_final": final_info["history"][-1]["train_nll"],
        "wall_time_s": round(time.perf_counter() - t0, 2),
    }
    final.card = card
    return TrainResult(model=final, baseline=base, card=card)

