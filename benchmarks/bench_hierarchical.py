"""Cost of the full hierarchical cluster model, measured in one run.

    python benchmarks/bench_hierarchical.py [--stars 300] [--draws 1000] [--tune 1000] [--chains 4]

Prints the logp+gradient cost per evaluation for the tabulated and the exact (torch Op) flow
likelihood on a synthetic cluster, then samples the tabulated model (4 chains on 2 cores) and
reports wall time, R-hat, divergences and the recovered parameters.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import chronoflow as cf
from chronoflow.analysis.forward import synthetic_cluster
from chronoflow.inference.hierarchical import build_cluster_model, sample_cluster_model


def logp_grad_cost(pm_model, repeat: int = 50) -> float:
    fn = pm_model.logp_dlogp_function(ravel_inputs=True)
    fn.set_extra_values({})
    x = np.concatenate([np.ravel(v) for v in pm_model.initial_point().values()])
    fn(x)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn(x)
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stars", type=int, default=300)
    parser.add_argument("--age", type=float, default=600.0)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    flow = cf.load_model()
    df = synthetic_cluster(args.age, args.stars, colours=np.linspace(0.6, 2.6, 200), f_field=0.05, f_outlier=0.03,
                           reddening_offset=0.01, age_spread_dex=0.02, seed=args.seed, model=flow)
    fast = cf.cluster_age(df, model=flow)
    used = fast.stars[fast.stars["used"]]
    print(f"synthetic cluster: {args.stars} rows, {len(used)} used; true age {args.age:g} Myr "
          f"(log10 {np.log10(args.age):.3f}), spread 0.02 dex, E(BP-RP) offset +0.01 mag")
    t0 = time.perf_counter()
    table_model = build_cluster_model(used, flow, center=fast.summary["median"], likelihood="table")
    t_build = time.perf_counter() - t0
    exact_model = build_cluster_model(used, flow, center=fast.summary["median"], likelihood="exact")
    t_table, t_exact = logp_grad_cost(table_model), logp_grad_cost(exact_model, repeat=10)
    print(f"logp+grad per evaluation: table {t_table * 1e3:.3f} ms, exact flow Op {t_exact * 1e3:.2f} ms "
          f"({t_exact / t_table:.0f}x); table build {t_build:.2f} s")
    t0 = time.perf_counter()
    idata = sample_cluster_model(table_model, draws=args.draws, tune=args.tune, chains=args.chains, cores=2,
                                 seed=args.seed, progressbar=False)
    wall = time.perf_counter() - t0
    import arviz as az

    summary = az.summary(idata, var_names=["log10_age", "age_spread_dex", "reddening_offset", "f_out"])
    print(f"table build + sampling: {wall + t_build:.1f} s wall")
    print(f"sampling {args.chains} chains x ({args.tune} tune + {args.draws} draws) on 2 cores: {wall:.1f} s wall; "
          f"R-hat max {summary['r_hat'].max():.3f}; divergences {int(idata.sample_stats['diverging'].values.sum())}")
    print(summary[["mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "r_hat"]].to_string())


if __name__ == "__main__":
    main()
