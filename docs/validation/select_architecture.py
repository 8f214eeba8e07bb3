"""Choose chronoflow's default flow architecture and training settings by held-out-cluster NLL.

Usage::

    python docs/validation/select_architecture.py            # full sweep (~35-40 min on 2 cores)
    python docs/validation/select_architecture.py --quick    # smoke test (a few minutes)

The full run writes ``docs/validation/architecture.md`` next to this file; ``--quick`` writes to
a temporary file unless ``--out`` is given (its numbers are not meant for any decision).

Method (details in the generated markdown):

* grouped K-fold over clusters: the eligible validation clusters (not among the two youngest or
  the two oldest by fiducial age, >= 30 stars after the training cuts, not in
  ``chronoflow.data.catalogue.REVISED_CLUSTERS``) are sorted by age and dealt round-robin into three
  disjoint folds; each fold is held out once while the flow trains on every other cluster
  (``chronoflow.flows.training.train`` with ``val_clusters=fold`` and ``refit_all=False``);
* score of a configuration = mean over folds of the held-out mean NLL per star;
* the noise yardstick is the seed-to-seed scatter of that score (the reference configuration is
  trained with three seeds); the fold-to-fold scatter is reported too, but it mostly measures how
  hard each fold is, which is common to every configuration;
* stage 1 sweeps the training settings on the paper architecture, stage 2-3 sweep the
  architecture with the chosen training settings, stage 4 re-trains the contenders with two more
  seeds; the default is the cheapest architecture (MLP multiply-adds per evaluation) whose
  three-seed score is within the noise of the best one.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

# The project's data folder sits beside the repository; $CHRONOFLOW_CATALOGUE overrides it.
CATALOGUE = os.environ.get(
    "CHRONOFLOW_CATALOGUE", str(Path(__file__).resolve().parents[3] / "shared" / "catalogs" / "prot_catalogue.csv")
)
N_FOLDS = 3
PAPER_ARCH = dict(n_transforms=3, n_bins=8, hidden=64, n_hidden_layers=2)
# The package's TrainConfig defaults at the time of writing (the reference for "no change").
REFERENCE_TRAIN = dict(learning_rate=2e-3, batch_size=256, weight_decay=0.0)


# ---------------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One point of the search: architecture + training settings + seed."""

    n_transforms: int = 3
    n_bins: int = 8
    hidden: int = 64
    n_hidden_layers: int = 2
    learning_rate: float = 2e-3
    batch_size: int = 256
    weight_decay: float = 0.0
    seed: int = 0

    @property
    def arch(self) -> tuple[int, int, int, int]:
        return (self.n_transforms, self.n_bins, self.hidden, self.n_hidden_layers)

    @property
    def training(self) -> tuple[float, int, float]:
        return (self.learning_rate, self.batch_size, self.weight_decay)

    def arch_label(self) -> str:
        return f"T{self.n_transforms}-K{self.n_bins}-H{self.hidden}-L{self.n_hidden_layers}"

    def train_label(self) -> str:
        return f"lr={self.learning_rate:g} bs={self.batch_size} wd={self.weight_decay:g}"

    def macs(self) -> int:
        """Multiply-adds of the context MLPs per evaluation (the dominant inference cost)."""
        h, layers, k = self.hidden, self.n_hidden_layers, self.n_bins
        return self.n_transforms * (3 * h + (layers - 1) * h * h + h * (3 * k - 1))


# ---------------------------------------------------------------------------------------------
# folds
# ---------------------------------------------------------------------------------------------
def training_frame(catalogue):
    """The stars ``train`` actually uses: published cuts + finite de-reddened colour."""
    from chronoflow.data.catalogue import training_sample
    from chronoflow.flows.training import TrainConfig

    df = training_sample(catalogue, ruwe_max=TrainConfig().ruwe_max)[0]
    return df[df["BPRP_0"].notna() & df["e_BPRP_0"].notna()]


def make_folds(df, n_folds: int = N_FOLDS) -> tuple[list[list[str]], Any]:
    """Eligible clusters sorted by fiducial age, dealt round-robin into ``n_folds`` folds."""
    from chronoflow.data.catalogue import REVISED_CLUSTERS

    stats = df.groupby("cluster")["fiducial_age_Myr"].agg(["median", "size"]).sort_values("median")
    inner = stats.iloc[2:-2]
    eligible = inner[(inner["size"] >= 30) & ~inner.index.isin(REVISED_CLUSTERS)]
    folds = [[str(c) for c in eligible.index[i::n_folds]] for i in range(n_folds)]
    return folds, stats


# ---------------------------------------------------------------------------------------------
# worker
# ---------------------------------------------------------------------------------------------
_CAT = None


def _init_worker(path: str) -> None:
    global _CAT
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    import chronoflow

    _CAT = chronoflow.load_catalogue(path)


def _fit_one(job: tuple[Setting, int, tuple[str, ...], int, int]) -> dict[str, Any]:
    import warnings

    from chronoflow.flows.flow import FlowConfig
    from chronoflow.flows.training import TrainConfig, train

    s, fold, val, max_epochs, patience = job
    flow_cfg = FlowConfig(
        kind="spline_flow", n_transforms=s.n_transforms, n_bins=s.n_bins, hidden=s.hidden,
        n_hidden_layers=s.n_hidden_layers,
    )
    train_cfg = TrainConfig(
        seed=s.seed, max_epochs=max_epochs, patience=patience, batch_size=s.batch_size,
        learning_rate=s.learning_rate, weight_decay=s.weight_decay, val_clusters=tuple(val),
        refit_all=False, threads=1,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(_CAT, flow_cfg, train_cfg, progress=False)
    wall = time.perf_counter() - t0
    card = result.card
    v_flow, v_base = card["validation"]["flow"], card["validation"]["baseline"]
    return {
        "setting": s,
        "fold": fold,
        "n_val_stars": v_flow["n_stars"],
        "nll": v_flow["nll"],
        "cov68": v_flow["coverage_68"],
        "cov95": v_flow["coverage_95"],
        "pit_ks": v_flow["pit_ks"],
        "nll_per_cluster": v_flow["nll_per_cluster"],
        "base_nll": v_base["nll"],
        "base_nll_per_cluster": v_base["nll_per_cluster"],
        "base_cov68": v_base["coverage_68"],
        "base_cov95": v_base["coverage_95"],
        "best_epoch": card["epochs"]["flow_split_best"],
        "base_best_epoch": card["epochs"]["baseline_split_best"],
        "train_nll_final": card["train_nll_final"],
        "n_params": card["n_parameters"],
        "wall_s": wall,
        "warnings": sorted({str(w.message)[:120] for w in caught}),
    }


def run_jobs(pool, settings: list[Setting], folds, cfg: "Budget", done: dict) -> None:
    """Fit every (setting, fold) not yet in ``done`` (keyed by (setting, fold))."""
    jobs = [
        (s, f, tuple(folds[f]), cfg.max_epochs, cfg.patience)
        for s in settings for f in range(len(folds)) if (s, f) not in done
    ]
    # longest first: small batches and wide MLPs take longest
    jobs.sort(key=lambda j: (-j[0].macs() / j[0].batch_size ** 0.5))
    t0 = time.perf_counter()
    for i, res in enumerate(pool.map(_fit_one, jobs), 1):
        done[(res["setting"], res["fold"])] = res
        s = res["setting"]
        print(
            f"  [{i}/{len(jobs)} {time.perf_counter() - t0:6.0f}s] {s.arch_label()} {s.train_label()} "
            f"seed={s.seed} fold={res['fold']}: nll={res['nll']:.4f} base={res['base_nll']:.4f} "
            f"best_epoch={res['best_epoch']} {res['wall_s']:.0f}s",
            flush=True,
        )


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------
@dataclass
class Score:
    setting: Setting
    fold_nll: list[float]
    mean: float
    fold_sd: float
    star_weighted: float
    cov68: float
    cov95: float
    base_fold_nll: list[float]
    base_mean: float
    base_cov68: float
    base_cov95: float
    best_epochs: list[int]
    base_best_epochs: list[int]
    wall_s: float
    n_params: int
    flags: list[str] = field(default_factory=list)


def score(setting: Setting, done: dict, n_folds: int, cfg: "Budget") -> Score:
    rs = [done[(setting, f)] for f in range(n_folds)]
    n = np.array([r["n_val_stars"] for r in rs], float)
    nll = np.array([r["nll"] for r in rs])
    base = np.array([r["base_nll"] for r in rs])
    flags = []
    if not np.all(np.isfinite(nll)):
        flags.append("non-finite NLL")
    if any(r["best_epoch"] <= 3 for r in rs):
        flags.append("best epoch <= 3")
    if any(r["best_epoch"] > cfg.max_epochs - cfg.patience for r in rs):
        flags.append("no early stop")
    if any(r["warnings"] for r in rs):
        flags.append("warnings: " + "; ".join(sorted({w for r in rs for w in r["warnings"]}))[:200])
    return Score(
        setting=setting,
        fold_nll=list(nll),
        mean=float(nll.mean()),
        fold_sd=float(nll.std(ddof=1)) if len(nll) > 1 else float("nan"),
        star_weighted=float((nll * n).sum() / n.sum()),
        cov68=float(sum(r["cov68"] * r["n_val_stars"] for r in rs) / n.sum()),
        cov95=float(sum(r["cov95"] * r["n_val_stars"] for r in rs) / n.sum()),
        base_fold_nll=list(base),
        base_mean=float(base.mean()),
        base_cov68=float(sum(r["base_cov68"] * r["n_val_stars"] for r in rs) / n.sum()),
        base_cov95=float(sum(r["base_cov95"] * r["n_val_stars"] for r in rs) / n.sum()),
        best_epochs=[r["best_epoch"] for r in rs],
        base_best_epochs=[r["base_best_epoch"] for r in rs],
        wall_s=float(np.mean([r["wall_s"] for r in rs])),
        n_params=rs[0]["n_params"],
        flags=flags,
    )


def seed_scores(setting: Setting, seeds, done, n_folds, cfg) -> list[Score]:
    return [score(replace(setting, seed=k), done, n_folds, cfg) for k in seeds]


def inference_time(setting: Setting, n: int = 100_000, repeats: int = 5) -> float:
    """Seconds per 10^5 log_prob evaluations of an (untrained) model, one thread, best of N."""
    import torch

    from chronoflow.flows.flow import FlowConfig, build_model

    model = build_model(FlowConfig(n_transforms=setting.n_transforms, n_bins=setting.n_bins,
                                   hidden=setting.hidden, n_hidden_layers=setting.n_hidden_layers), seed=0)
    rng = np.random.default_rng(0)
    ctx = np.column_stack([rng.uniform(1, 3.5, n), rng.uniform(0.5, 3.0, n), rng.uniform(-3, -1, n)])
    lp = rng.uniform(-0.5, 1.5, n)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = math.inf
        with torch.no_grad():
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.log_prob(lp, ctx)
                best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return best * 1e5 / n


# ---------------------------------------------------------------------------------------------
# budget / grids
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    max_epochs: int
    patience: int
    learning_rates: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    weight_decays: tuple[float, ...]
    n_transforms: tuple[int, ...]
    hiddens: tuple[int, ...]
    n_top_stage3: int
    extra_seeds: tuple[int, ...]


FULL = Budget(300, 30, (5e-4, 1e-3, 2e-3), (256, 1024), (0.0, 1e-4), (2, 3, 4), (32, 64, 128), 2, (1, 2))
QUICK = Budget(6, 2, (1e-3, 2e-3), (1024,), (0.0,), (2, 3), (32, 64), 1, (1,))


# ---------------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------------
def _f(x: float, nd: int = 3) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.{nd}f}"


def _table(scores: list[Score], best_mean: float, best: Score | None, kind: str) -> list[str]:
    """Markdown table; Δ is paired per fold against ``best``."""
    head = ["config", "mean NLL ± fold sd", "Δ vs best (paired ± sd)", "per-fold NLL", "star-wtd NLL",
            "cov68 / cov95", "params", "MLP MACs", "best epochs", "s / fit"]
    if kind == "training":
        head.insert(5, "baseline NLL (mean)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in sorted(scores, key=lambda s: s.mean):
        s = sc.setting
        label = s.train_label() if kind == "training" else s.arch_label()
        if sc.flags:
            label += " ⚠"
        if best is not None:
            d = np.array(sc.fold_nll) - np.array(best.fold_nll)
            delta = f"{_f(d.mean())} ± {_f(d.std(ddof=1))}" if sc is not best else "0"
        else:
            delta = ""
        row = [label, f"{_f(sc.mean)} ± {_f(sc.fold_sd)}", delta, " / ".join(_f(x) for x in sc.fold_nll),
               _f(sc.star_weighted), f"{_f(sc.cov68, 2)} / {_f(sc.cov95, 2)}", str(sc.n_params),
               str(s.macs()), ", ".join(map(str, sc.best_epochs)), f"{sc.wall_s:.0f}"]
        if kind == "training":
            row.insert(5, _f(sc.base_mean))
        lines.append("| " + " | ".join(row) + " |")
    return lines


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny grids and epoch budget (smoke test)")
    ap.add_argument("--out", type=Path, default=None, help="markdown output path")
    ap.add_argument("--catalogue", default=CATALOGUE)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also dump every fit's raw result to this file")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out = args.out or (Path(tempfile.gettempdir()) / "architecture_quick.md" if args.quick
                       else Path(__file__).with_name("architecture.md"))

    import multiprocessing as mp

    import torch

    import chronoflow
    from chronoflow.flows.training import catalogue_sha256

    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    catalogue = chronoflow.load_catalogue(args.catalogue)
    df = training_frame(catalogue)
    folds, stats = make_folds(df)
    fold_stars = [int(df["cluster"].isin(f).sum()) for f in folds]
    print("folds:", *[f"{i}: {f} ({n} stars)" for i, (f, n) in enumerate(zip(folds, fold_stars))], sep="\n  ")
    nf = len(folds)
    done: dict = {}
    ref = Setting(**PAPER_ARCH, **REFERENCE_TRAIN)

    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(args.catalogue,)) as pool:
        # -- stage 1: training settings on the paper architecture (+ seed repeats of the reference)
        stage1 = [Setting(**PAPER_ARCH, learning_rate=lr, batch_size=bs, weight_decay=wd)
                  for lr in cfg.learning_rates for bs in cfg.batch_sizes for wd in cfg.weight_decays]
        ref_seeds = [replace(ref, seed=k) for k in cfg.extra_seeds]
        print(f"stage 1: {len(stage1)} training settings + {len(ref_seeds)} reference seeds", flush=True)
        run_jobs(pool, stage1 + ref_seeds + ([ref] if ref not in stage1 else []), folds, cfg, done)
        t1 = time.perf_counter()
        s1 = [score(s, done, nf, cfg) for s in stage1]
        ref_runs = seed_scores(ref, (0, *cfg.extra_seeds), done, nf, cfg)
        sigma_seed = float(np.std([r.mean for r in ref_runs], ddof=1))
        best1 = min(s1, key=lambda s: s.mean)
        ref_in_s1 = next((s for s in s1 if s.setting == ref), None)
        if ref_in_s1 is not None and ref_in_s1.mean <= best1.mean + sigma_seed:
            chosen_train, train_reason = ref, "the current defaults are within the seed noise of the best setting"
        else:
            chosen_train, train_reason = best1.setting, "lowest mean held-out NLL, better than the current defaults by more than the seed noise"
        print(f"stage 1 done ({t1 - t_start:.0f}s): sigma_seed={sigma_seed:.4f}; training -> "
              f"{chosen_train.train_label()} ({train_reason})", flush=True)

        # -- stage 2: n_transforms x hidden (8 bins, 2 layers) with the chosen training settings
        tr = dict(learning_rate=chosen_train.learning_rate, batch_size=chosen_train.batch_size,
                  weight_decay=chosen_train.weight_decay)
        stage2 = [Setting(n_transforms=t, n_bins=8, hidden=h, n_hidden_layers=2, **tr)
                  for t in cfg.n_transforms for h in cfg.hiddens]
        print(f"stage 2: {len(stage2)} architectures", flush=True)
        run_jobs(pool, stage2, folds, cfg, done)
        t2 = time.perf_counter()
        s2 = [score(s, done, nf, cfg) for s in stage2]

        # -- stage 3: 16 bins and 3 hidden layers for the best stage-2 architectures
        top = [s.setting for s in sorted(s2, key=lambda s: s.mean)[: cfg.n_top_stage3]]
        stage3 = []
        for s in top:
            for v in (replace(s, n_bins=16), replace(s, n_hidden_layers=3)):
                if v not in stage3 and v not in stage2:
                    stage3.append(v)
        print(f"stage 3: {len(stage3)} variants of {[s.arch_label() for s in top]}", flush=True)
        run_jobs(pool, stage3, folds, cfg, done)
        t3 = time.perf_counter()
        s3 = [score(s, done, nf, cfg) for s in stage3]
        arch_scores = s2 + s3
        best_arch = min(arch_scores, key=lambda s: s.mean)

        # -- stage 4: more seeds for the contenders: the best, the cheapest within noise, the paper one
        within = [s for s in arch_scores if s.mean <= best_arch.mean + sigma_seed]
        cheapest = min(within, key=lambda s: (s.setting.macs(), s.mean))
        paper = Setting(**PAPER_ARCH, **tr)
        contenders = []
        for s in (best_arch.setting, cheapest.setting, paper):
            if s not in contenders:
                contenders.append(s)
        print(f"stage 4: seeds {cfg.extra_seeds} for {[s.arch_label() for s in contenders]}", flush=True)
        run_jobs(pool, [replace(s, seed=k) for s in contenders for k in cfg.extra_seeds], folds, cfg, done)
        t4 = time.perf_counter()

    seeds = (0, *cfg.extra_seeds)
    multi = {s: seed_scores(s, seeds, done, nf, cfg) for s in contenders}
    if paper == ref:
        pooled_runs = [multi[s] for s in contenders]
    else:
        pooled_runs = [multi[s] for s in contenders] + [ref_runs]
    # pooled within-config seed variance of the fold-mean score
    pooled_var = np.mean([np.var([r.mean for r in runs], ddof=1) for runs in pooled_runs])
    sigma_pooled = float(np.sqrt(pooled_var))
    tol_final = sigma_pooled * math.sqrt(2.0 / len(seeds))  # sd of a difference of two seed-means
    seed_mean = {s: float(np.mean([r.mean for r in multi[s]])) for s in contenders}
    best_multi = min(contenders, key=lambda s: seed_mean[s])
    final_ok = [s for s in contenders if seed_mean[s] <= seed_mean[best_multi] + tol_final]
    final = min(final_ok, key=lambda s: (s.macs(), seed_mean[s]))

    arch_settings = {s.setting.arch: s.setting for s in arch_scores}
    t_inf = {a: inference_time(s) for a, s in sorted(arch_settings.items())}
    t_end = time.perf_counter()

    # ------------------------------------------------------------------------------------------
    # report
    # ------------------------------------------------------------------------------------------
    L: list[str] = []
    w = L.append
    w("# Choice of the default flow architecture and training settings")
    w("")
    if args.quick:
        w("> **QUICK MODE** (tiny grids, 6 epochs): a smoke test of the script; do not use these numbers.")
        w("")
    w(f"Generated by `python docs/validation/select_architecture.py{' --quick' if args.quick else ''}` on "
      f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC (chronoflow {chronoflow.__version__}, torch "
      f"{torch.__version__}, Python {platform.python_version()}, {args.workers} worker processes × 1 thread, "
      f"{os.cpu_count()} CPUs). Total wall time **{(t_end - t_start) / 60:.1f} min**. Every number below "
      "comes from that run.")
    w("")
    w(f"Catalogue: `../shared/catalogs/{Path(args.catalogue).name}` ({len(catalogue)} rows, sha256 `{catalogue_sha256(catalogue)[:16]}…`); "
      f"{len(df)} stars in {df['cluster'].nunique()} clusters after the training cuts.")
    w("")
    w("## Method")
    w("")
    w("* **Grouped K-fold over clusters.** Stars of one cluster share an age, so only whole clusters are held "
      "out. Eligible validation clusters: not among the two youngest or two oldest clusters by fiducial age "
      "(holding those out would test extrapolation), at least 30 stars after the training cuts, and not in "
      "`REVISED_CLUSTERS` (their fiducial ages are known to be off). The eligible clusters are sorted by age "
      f"and dealt round-robin into {nf} disjoint folds, so each fold spans the whole age range:")
    w("")
    w("| fold | held-out clusters (fiducial age / Myr) | stars |")
    w("|---|---|---|")
    for i, (f, n) in enumerate(zip(folds, fold_stars)):
        w(f"| {i} | " + ", ".join(f"{c} ({stats.loc[c, 'median']:g})" for c in f) + f" | {n} |")
    w("")
    w("* Each fit is `chronoflow.flows.training.train(catalogue, FlowConfig(...), TrainConfig(val_clusters=fold, "
      f"refit_all=False, max_epochs={cfg.max_epochs}, patience={cfg.patience}, threads=1, ...))`: Adam with a "
      "cosine learning-rate decay over `max_epochs`, early stopping on the held-out NLL, the held-out metrics "
      "from `card['validation']`. The Gaussian baseline (`card['validation']['baseline']`, default "
      "architecture) is trained in the same call with the same training settings and folds.")
    w("* **Score** = mean over folds of the held-out mean NLL per star (nats per log10 d; lower is better). "
      "Also given: the fold-to-fold standard deviation, the per-fold values, the star-weighted mean over all "
      "held-out stars, and the PIT coverage of the central 68 % / 95 % predictive intervals (star-weighted "
      "over folds; ideal 0.68 / 0.95). 'Δ vs best' is the paired per-fold difference to the best row "
      "(mean ± sd over folds).")
    w("* **Noise.** The fold-to-fold scatter mostly says how hard each fold is, which is shared by all "
      "configurations, so it is not the right yardstick for comparing them. The relevant noise is the "
      "seed-to-seed scatter of the score (initialisation and batch order, which also moves the early-stopping "
      f"epoch): the reference configuration ({ref.arch_label()}, {ref.train_label()}) is trained with seeds "
      f"{', '.join(map(str, (0, *cfg.extra_seeds)))}, giving **σ_seed = {sigma_seed:.4f}** nats (sd of the "
      "fold-mean score over seeds). Single-seed differences below σ_seed are treated as ties.")
    w("* Early stopping selects the epoch on the same held-out clusters that are scored, so all scores are "
      "slightly optimistic; the bias is common to every configuration.")
    w("* **Stages.** (1) training settings on the paper architecture "
      f"({Setting(**PAPER_ARCH).arch_label()}: T = spline transforms, K = bins, H = hidden width, L = hidden "
      "layers); (2) n_transforms × hidden with 8 bins and 2 layers, using the stage-1 training settings; "
      f"(3) 16 bins and 3 hidden layers for the {cfg.n_top_stage3} best stage-2 architectures; (4) seeds "
      f"{', '.join(map(str, cfg.extra_seeds))} for the contenders (best score, cheapest within σ_seed of it, "
      "and the paper architecture). MLP MACs = multiply-adds of the context MLPs per log-density evaluation "
      "(∝ inference cost). Inference time is measured separately (untrained model, 10^5 evaluations, 1 thread).")
    w("* 's / fit' is the wall time of one `train` call (one process, one thread, two fits running side by "
      "side); it includes the Gaussian baseline fit and scales with the number of epochs before early "
      "stopping, so it is a rough training cost only. The inference-time table is the clean cost measure.")
    w("* **Rule.** Training settings: keep the current defaults unless another setting beats them by more "
      "than σ_seed. Architecture: among the stage-4 contenders, the one with the fewest MLP MACs whose "
      f"{len(seeds)}-seed mean score is within σ_pooled·√(2/{len(seeds)}) of the best {len(seeds)}-seed mean "
      "(σ_pooled: seed scatter pooled over the configurations trained with several seeds).")
    w("")
    w(f"## Stage 1: training settings ({Setting(**PAPER_ARCH).arch_label()}, seed 0)")
    w("")
    w(f"Wall time {(t1 - t_start) / 60:.1f} min.")
    w("")
    L += _table(s1, best1.mean, best1, "training")
    w("")
    w(f"Reference {ref.train_label()} with seeds {', '.join(map(str, (0, *cfg.extra_seeds)))}: scores "
      + ", ".join(f"{r.mean:.4f} (folds " + " / ".join(_f(x) for x in r.fold_nll) + f"; best epochs "
                  f"{', '.join(map(str, r.best_epochs))})" for r in ref_runs)
      + f" → σ_seed = {sigma_seed:.4f}.")
    w("")
    base_ref = ref_runs[0]
    w(f"Gaussian baseline with the reference settings: mean NLL {base_ref.base_mean:.4f} (folds "
      + " / ".join(_f(x) for x in base_ref.base_fold_nll)
      + f"), coverage {base_ref.base_cov68:.2f} / {base_ref.base_cov95:.2f}, best epochs "
      + ", ".join(map(str, base_ref.base_best_epochs)) + ".")
    w("")
    w(f"**Chosen training settings: {chosen_train.train_label()}** ({train_reason}).")
    w("")
    w(f"## Stages 2-3: architectures ({chosen_train.train_label()}, seed 0)")
    w("")
    w(f"Wall time {(t2 - t1) / 60:.1f} min (stage 2) + {(t3 - t2) / 60:.1f} min (stage 3).")
    w("")
    L += _table(arch_scores, best_arch.mean, best_arch, "arch")
    w("")
    b = arch_scores[0]
    w(f"Gaussian baseline with these training settings: mean NLL {b.base_mean:.4f} (folds "
      + " / ".join(_f(x) for x in b.base_fold_nll) + f"), coverage {b.base_cov68:.2f} / {b.base_cov95:.2f}.")
    w("")
    w("Inference time (s per 10^5 `log_prob` evaluations, 1 thread, untrained weights):")
    w("")
    w("| architecture | params | MLP MACs | s / 1e5 evals |")
    w("|---|---|---|---|")
    for a, s in sorted(arch_settings.items(), key=lambda kv: kv[1].macs()):
        n_par = next(x.n_params for x in arch_scores if x.setting.arch == a)
        w(f"| {s.arch_label()} | {n_par} | {s.macs()} | {t_inf[a]:.3f} |")
    w("")
    w(f"## Stage 4: seed repeats of the contenders ({chosen_train.train_label()})")
    w("")
    w(f"Wall time {(t4 - t3) / 60:.1f} min. σ_pooled = {sigma_pooled:.4f}; tolerance σ_pooled·√(2/{len(seeds)}) "
      f"= {tol_final:.4f}.")
    w("")
    w("| architecture | score per seed (" + ", ".join(map(str, seeds)) + ") | seed mean | seed sd | "
      "Δ vs best seed mean | cov68 / cov95 (seed mean) | best epochs (per seed: folds) | MLP MACs | s / 1e5 evals |")
    w("|---|---|---|---|---|---|---|---|---|")
    for s in sorted(contenders, key=lambda s: seed_mean[s]):
        runs = multi[s]
        means = [r.mean for r in runs]
        w(f"| {s.arch_label()}{' ⚠' if any(r.flags for r in runs) else ''} | "
          + ", ".join(f"{m:.4f}" for m in means)
          + f" | {np.mean(means):.4f} | {np.std(means, ddof=1):.4f} | {seed_mean[s] - seed_mean[best_multi]:.4f} | "
          f"{np.mean([r.cov68 for r in runs]):.2f} / {np.mean([r.cov95 for r in runs]):.2f} | "
          + "; ".join(",".join(map(str, r.best_epochs)) for r in runs)
          + f" | {s.macs()} | {t_inf[s.arch]:.3f} |")
    w("")
    w("## Chosen default")
    w("")
    w("```python")
    w(f"FlowConfig(kind=\"spline_flow\", n_transforms={final.n_transforms}, n_bins={final.n_bins}, "
      f"hidden={final.hidden}, n_hidden_layers={final.n_hidden_layers}, tail_bound=5.0)")
    w(f"TrainConfig(learning_rate={final.learning_rate:g}, batch_size={final.batch_size}, "
      f"weight_decay={final.weight_decay:g}, max_epochs={cfg.max_epochs}, patience={cfg.patience})")
    w("```")
    w("")
    why = (f"{final.arch_label()} has the fewest MLP multiply-adds ({final.macs()}) among the contenders whose "
           f"{len(seeds)}-seed mean score is within {tol_final:.4f} nats of the best "
           f"({best_multi.arch_label()}, {seed_mean[best_multi]:.4f}); its own is {seed_mean[final]:.4f}.")
    w(why)
    flagged: dict[Setting, Score] = {}
    for sc in s1 + arch_scores + [r for runs in multi.values() for r in runs] + ref_runs:
        if sc.flags:
            flagged.setdefault(sc.setting, sc)
    w("")
    w(f"Held-out NLL per cluster of the chosen default (mean over seeds {', '.join(map(str, seeds))}) and of the "
      "Gaussian baseline (seed 0), same training settings:")
    w("")
    w("| cluster | fiducial age / Myr | fold | stars | flow NLL | baseline NLL |")
    w("|---|---|---|---|---|---|")
    for f, names in enumerate(folds):
        for c in names:
            fl = np.mean([done[(replace(final, seed=k), f)]["nll_per_cluster"][c] for k in seeds])
            bl = done[(final, f)]["base_nll_per_cluster"][c]
            w(f"| {c} | {stats.loc[c, 'median']:g} | {f} | {int(stats.loc[c, 'size'])} | {fl:.3f} | {bl:.3f} |")
    w("")
    w("## Observations")
    w("")
    epochs = [r["best_epoch"] for r in done.values()]
    w(f"* Best (early-stopping) epochs over all {len(done)} fits: median {np.median(epochs):.0f}, range "
      f"{min(epochs)}-{max(epochs)} (of max_epochs = {cfg.max_epochs}).")
    nonfinite = [k for k, r in done.items() if not np.isfinite(r["nll"])]
    w(f"* Fits with a non-finite held-out NLL: {len(nonfinite)}.")
    flow_beats = sum(r["nll"] < r["base_nll"] for r in done.values())
    w(f"* The flow beats the Gaussian baseline on the held-out fold in {flow_beats} of {len(done)} fits.")
    worse = [(c, r["nll_per_cluster"][c], r["base_nll_per_cluster"][c]) for (st, f), r in done.items()
             if st == final for c in folds[f] if r["nll_per_cluster"][c] > r["base_nll_per_cluster"][c]]
    w("* Held-out clusters where the chosen flow (seed 0) is worse than the baseline: "
      + (", ".join(f"{c} ({a:.3f} vs {b:.3f})" for c, a, b in worse) if worse else "none") + ".")
    fin = multi[final]
    w(f"* PIT coverage of the chosen flow (mean over seeds): {np.mean([r.cov68 for r in fin]):.3f} / "
      f"{np.mean([r.cov95 for r in fin]):.3f} for the nominal 0.68 / 0.95 intervals; the baseline's "
      f"(seed 0): {fin[0].base_cov68:.3f} / {fin[0].base_cov95:.3f}.")
    w(f"* Load average (1 min) at start / end of the run: {load0:.2f} / {os.getloadavg()[0]:.2f}.")
    if flagged:
        w("* Flagged configurations (⚠): " + "; ".join(
            f"{s.setting.arch_label()} {s.setting.train_label()} seed {s.setting.seed}: {', '.join(s.flags)}"
            for s in flagged.values()))
    w("")
    if args.json is not None:
        import json
        from dataclasses import asdict

        rows = [{**{k: v for k, v in r.items() if k != "setting"}, **asdict(r["setting"])} for r in done.values()]
        args.json.write_text(json.dumps(rows, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(L))
    print(f"\nwrote {out}\ntotal {(t_end - t_start) / 60:.1f} min\n{why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
