"""Speed of the age posteriors, measured side by side in one run.

    python benchmarks/bench_ages.py [--catalogue PATH] [--threads 1 2] [--naive-stars 5]

(a) the cluster age of Praesepe on the 1000-point grid (adaptive and dense),
(b) single-star throughput over the whole catalogue (adaptive and dense), and against the path before
    the single-star model-error term and flags (the flow's posterior summarized, nothing else:
    ``flow_only_star_ages`` below),
(c) the naive way: one flow call per grid point per star, like the published code, on a few stars,
(d) the shipped ensemble against its first member alone (the cost of the ensemble), and (d') the
    stars x ages grid of Praesepe against the model's own ``log_prob`` (nflows' spline transforms,
    the training path) on the same star-age pairs: the speed of the grid path and its largest
    difference from the reference (the previous grid implementation is measured by
    ``experiments/legacy_grid.py``),
(e) on a machine with a CUDA GPU: (a) and (b) with ``device="cuda"`` against the CPU runs above,
and the speed ratios between them. (a)-(d) pin ``device="cpu"``. Timings are the best of ``--repeat`` runs (wall clock).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

import chronoflow as cf
from chronoflow.inference import ages as _ages
from chronoflow.flows.artifact import load_model
from chronoflow.flows.ensemble import FlowEnsemble, n_members
from chronoflow.flows.flow import make_context
from chronoflow.inference.posterior import age_grid

ROOT = Path(__file__).resolve().parents[1]

cluster_age = partial(_ages.cluster_age, device="cpu")
star_ages = partial(_ages.star_ages, device="cpu")


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def flow_only_star_ages(df, model, chunk_stars: int = 256) -> dict:
    """The single-star path as it was before the model-error term, the period error and the
    rotation flags (release of 5 Dec 2026): the flow's log-flat posterior on the adaptive grid,
    summarized (16/50/84 % and MAP), chunk by chunk, for the same usable rows."""
    from chronoflow.inference.likelihood import StarInputs
    from chronoflow.inference.posterior import normalize, summarize_posterior

    inputs = StarInputs.from_frame(df, model)
    idx = np.flatnonzero(inputs.usable())
    grid = age_grid()
    out = {}
    for start in range(0, len(idx), chunk_stars):
        rows = idx[start : start + chunk_stars]
        log_post = _ages._star_log_likelihood(model, inputs.log_prot[rows], inputs.colour[rows],
                                              inputs.log_err[rows], grid, "adaptive", 96, "cpu")  # fmt: skip
        out[start] = summarize_posterior(normalize(log_post, grid), grid)
    return out


def reference_grid(model, log_prot, bprp0, log10_e_bprp0, grid, max_pairs: int = 262_144) -> np.ndarray:
    """``array[stars, ages]`` of ln p from the model's own ``log_prob`` (nflows' spline transforms,
    the path training uses) on every star-age pair, ``max_pairs`` pairs at a time: the reference
    the grid path (``log_prob_grid``) is measured against."""
    out = np.empty((len(log_prot), len(grid)))
    step = max(1, max_pairs // len(grid))
    with torch.no_grad():
        for i in range(0, len(log_prot), step):
            rows = slice(i, i + step)
            ctx = np.stack(np.broadcast_arrays(grid[None, :], bprp0[rows, None], log10_e_bprp0[rows, None]), axis=-1)
            out[rows] = model.log_prob(np.repeat(log_prot[rows, None], len(grid), axis=1), ctx, check_domain=False)
    return out


def naive_star_seconds(model, stars, grid) -> float:
    """One flow call per grid point per star (what the published code does)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for row in stars.itertuples():
            lp = np.log10(row.Prot)
            for a in grid:
                model.log_prob(lp, make_context(10**a, row.BPRP_0, row.e_BPRP_0), check_domain=False)
    return (time.perf_counter() - t0) / len(stars)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalogue", default=os.environ.get("CHRONOFLOW_CATALOGUE", ROOT.parent / "shared/catalogs/prot_catalogue.csv"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--naive-stars", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    df = cf.load_catalogue(args.catalogue)
    model = load_model()
    grid = age_grid()
    usable = df.dropna(subset=["BPRP_0", "e_BPRP_0"])
    print(f"chronoflow {cf.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; grid {len(grid)} points; model {model.n_parameters()} parameters")
    cluster_age(df, "Praesepe", model=model)  # warm up
    naive = naive_star_seconds(model, usable.sample(args.naive_stars, random_state=0), grid)
    print(f"(c) naive, one flow call per grid point: {naive:.3f} s per star ({1 / naive:.2f} stars/s, 1 thread)")
    for threads in args.threads:
        torch.set_num_threads(threads)
        res = cluster_age(df, "Praesepe", model=model)
        t_cluster = best_of(lambda: cluster_age(df, "Praesepe", model=model), args.repeat)
        t_cluster_dense = best_of(lambda: cluster_age(df, "Praesepe", model=model, method="dense"), max(1, args.repeat - 1))
        t_stars = best_of(lambda: star_ages(df, model=model), args.repeat)
        t_stars_dense = best_of(lambda: star_ages(df, model=model, method="dense"), 1)
        t_stars_prev = best_of(lambda: flow_only_star_ages(df, model), args.repeat)
        t_stars_flow = best_of(lambda: star_ages(df, model=model, model_error=False), args.repeat)
        n = len(df)
        print(f"\n[{threads} thread{'s' * (threads > 1)}]")
        print(f"(a) Praesepe ({res.n_used} stars used): adaptive {t_cluster:.3f} s, dense {t_cluster_dense:.3f} s "
              f"(adaptive is {t_cluster_dense / t_cluster:.1f}x faster); median log10 age {res.summary['median']:.3f}")
        print(f"(b) single stars, whole catalogue ({n} rows): adaptive {n / t_stars:.0f} stars/s ({t_stars:.2f} s), "
              f"dense {n / t_stars_dense:.0f} stars/s ({t_stars_dense:.2f} s)")
        print(f"(b') single stars with the model-error term, period errors and flags (star_ages' default) {n / t_stars:.0f} "
              f"stars/s against the flow-only path of before {n / t_stars_prev:.0f} stars/s -> x{t_stars_prev / t_stars:.2f}; "
              f"star_ages(model_error=False) {n / t_stars_flow:.0f} stars/s")
        print(f"    per star: adaptive {t_stars / n * 1e3:.3f} ms vs naive {naive * 1e3:.0f} ms -> "
              f"{naive / (t_stars / n):.0f}x faster than the naive way; dense is {naive / (t_stars_dense / n):.0f}x faster")
        if n_members(model) > 1:
            single = FlowEnsemble([model.members[0]])
            t_c1 = best_of(lambda: cluster_age(df, "Praesepe", model=single), args.repeat)
            t_s1 = best_of(lambda: star_ages(df, model=single), 1)
            k = n_members(model)
            print(f"(d) ensemble of {k}: Praesepe {t_cluster:.3f} s vs its first member alone {t_c1:.3f} s "
                  f"(x{t_cluster / t_c1:.2f} the cost); single stars {n / t_stars:.0f} vs {n / t_s1:.0f} stars/s "
                  f"(x{t_stars / t_s1:.2f})")
        used = res.stars[res.stars["used"].to_numpy(bool)]
        pairs = (np.log10(used["Prot"].to_numpy(float)), used["BPRP_0"].to_numpy(float), np.log10(used["e_BPRP_0"].to_numpy(float)), grid)
        diff = np.abs(model.log_prob_grid(*pairs, device="cpu") - reference_grid(model, *pairs)).max()
        t_grid = best_of(lambda: model.log_prob_grid(*pairs, device="cpu"), args.repeat)
        t_ref = best_of(lambda: reference_grid(model, *pairs), 1)
        print(f"(d') Praesepe's grid ({len(used)} stars x {len(grid)} ages): grid path {t_grid:.3f} s vs the model's own "
              f"log_prob (nflows) on the same pairs {t_ref:.3f} s -> the grid path is {t_ref / t_grid:.2f}x faster; "
              f"largest difference {diff:.1e} nats")
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
        _ages.cluster_age(df, "Praesepe", model=model, device="cuda")  # warm up: copies the model, starts CUDA
        _ages.star_ages(df.head(1000), model=model, device="cuda")
        t_cluster_gpu = best_of(lambda: _ages.cluster_age(df, "Praesepe", model=model, device="cuda"), args.repeat)
        t_dense_gpu = best_of(lambda: _ages.cluster_age(df, "Praesepe", model=model, method="dense", device="cuda"), args.repeat)
        t_stars_gpu = best_of(lambda: _ages.star_ages(df, model=model, device="cuda"), args.repeat)
        print(f"\n(e) {gpu}: Praesepe adaptive {t_cluster_gpu:.3f} s ({t_cluster / t_cluster_gpu:.2f}x the last CPU run), "
              f"dense {t_dense_gpu:.3f} s ({t_cluster_dense / t_dense_gpu:.2f}x); single stars {n / t_stars_gpu:.0f} stars/s "
              f"({t_stars / t_stars_gpu:.2f}x)")
    else:
        print("\n(e) no CUDA GPU seen by torch: GPU figures not measured")


if __name__ == "__main__":
    main()
