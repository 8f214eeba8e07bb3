"""Catalogue-scale benchmark: single-star ages for a synthetic survey, three ways, side by side.

    python benchmarks/bench_scale.py --catalogue ../shared/catalogs/prot_catalogue.csv [--n 1000000]

1. Writes a synthetic survey of ``--n`` stars (``chronoflow.analysis.forward.synthetic_field``: colours and
   errors drawn from the catalogue, log-uniform ages, periods from the flow, 0.1 % bad rows) to
   Parquet in row groups of ``--chunk-rows``.
2. Ages it (a) in memory (read whole, one ``star_ages`` call, write), (b) streaming
   (``age_stars_file``, ``--chunk-rows`` at a time) with ``--threads`` torch threads, and (c) on a
   local Dask cluster of ``--workers`` processes x 1 thread (``age_stars_file_dask`` on
   ``local_cluster``), and (d) the same on ``distributed.LocalCluster`` with Dask's default worker
   environment (``MALLOC_TRIM_THRESHOLD_=65536``). Each runs in
   a fresh Python process, so its peak memory (max RSS) is its own; for Dask the peaks of the
   client and of every worker are reported.
3. Compares the three outputs (largest difference in dex, flags), prints stars/s, ratios and peak memory, and projects
   from the per-worker rate what a cluster of ``--project-workers`` workers would take for
   ``--project-stars`` stars (linear scaling assumed: partitions are independent; scheduler and
   I/O overheads at that scale are not measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_mode(mode: str, src: Path, dst: Path, chunk_rows: int, threads: int, workers: int) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    from chronoflow.flows.artifact import load_model

    torch.set_num_threads(threads)
    load_model()  # not timed: every mode starts with the model file warm on disk
    if mode == "memory":
        import pandas as pd

        from chronoflow.scale.streaming import age_chunk

        t0 = time.perf_counter()
        res = age_chunk(pd.read_parquet(src))
        res.to_parquet(dst, index=False)
        return {"seconds": time.perf_counter() - t0, "rows": len(res), "peak_mb": _maxrss_mb()}
    if mode == "streaming":
        from chronoflow.scale.streaming import age_stars_file

        rep = age_stars_file(src, dst, chunk_rows=chunk_rows, progress=False)
        return {"seconds": rep.seconds, "rows": rep.n_rows, "peak_mb": _maxrss_mb()}
    import distributed

    from chronoflow.scale.dask_backend import age_stars_file_dask, local_cluster

    t0 = time.perf_counter()
    if mode == "dask-default":  # Dask's own worker environment (MALLOC_TRIM_THRESHOLD_=65536)
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    else:
        cluster = local_cluster(workers, 1)  # what age_stars_file_dask starts by itself
    client = distributed.Client(cluster)
    startup = time.perf_counter() - t0
    rep = age_stars_file_dask(src, dst, client=client, progress=False)
    worker_mb = sorted(v / 1024 for v in client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values())
    client.close()
    cluster.close()
    return {"seconds": rep.seconds, "rows": rep.n_rows, "partitions": rep.n_chunks, "startup_s": startup,
            "peak_mb": _maxrss_mb(), "worker_peak_mb": worker_mb}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalogue", default=os.environ.get("CHRONOFLOW_CATALOGUE"), help="catalogue for colours/errors")
    p.add_argument("--n", type=int, default=1_000_000, help="stars in the synthetic survey")
    p.add_argument("--chunk-rows", type=int, default=100_000, help="rows per streaming chunk / Parquet row group")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the in-memory and streaming runs")
    p.add_argument("--workers", type=int, default=2, help="local Dask workers (1 thread each)")
    p.add_argument("--project-workers", type=int, default=100)
    p.add_argument("--project-stars", type=float, default=1e8)
    p.add_argument("--work-dir", type=Path, default=None, help="where the input and outputs go (default: a temp dir)")
    p.add_argument("--modes", default="memory,streaming,dask,dask-default",
                   help="dask: chronoflow's local cluster (local_cluster); dask-default: distributed.LocalCluster as it comes")
    p.add_argument("--run-mode", help=argparse.SUPPRESS)
    p.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.run_mode:  # child process: one measurement, printed as JSON on the last line
        print(json.dumps(run_mode(args.run_mode, args.src, args.dst, args.chunk_rows, args.threads, args.workers)))
        return

    import numpy as np
    import pandas as pd

    from chronoflow.data.catalogue import load_catalogue
    from chronoflow.analysis.forward import synthetic_field

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="chronoflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"survey_{args.n}.parquet"
    t0 = time.perf_counter()
    survey = synthetic_field(args.n, catalogue=load_catalogue(args.catalogue), bad_fraction=0.001, seed=0)
    survey.to_parquet(src, index=False, row_group_size=args.chunk_rows)
    n_bad = int((survey["bad_kind"] != "").sum())
    del survey
    print(f"synthetic survey: {args.n} stars ({n_bad} bad on purpose) in {time.perf_counter() - t0:.1f} s -> {src}")
    print(f"machine: {os.cpu_count()} cores; torch threads {args.threads} (memory, streaming); "
          f"Dask {args.workers} workers x 1 thread")  # fmt: skip

    results = {}
    for mode in args.modes.split(","):
        dst = work / f"ages_{mode}.parquet"
        cmd = [sys.executable, __file__, "--run-mode", mode, "--src", str(src), "--dst", str(dst),
               "--chunk-rows", str(args.chunk_rows), "--threads", str(args.threads), "--workers", str(args.workers)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            sys.exit(f"{mode} failed:\n{res.stderr[-3000:]}")
        results[mode] = json.loads(res.stdout.strip().splitlines()[-1]) | {"output": dst}
        r = results[mode]
        extra = (f"; {r['partitions']} partitions; cluster start {r['startup_s']:.1f} s (not timed); worker peaks "
                 f"{', '.join(f'{m:.0f}' for m in r['worker_peak_mb'])} MB") if mode.startswith("dask") else ""  # fmt: skip
        print(f"{mode:>12}: {r['rows']} stars in {r['seconds']:.1f} s = {r['rows'] / r['seconds']:.0f} stars/s; "
              f"peak memory {r['peak_mb']:.0f} MB{extra}", flush=True)  # fmt: skip

    ages = ["log10_age_p16", "log10_age_median", "log10_age_p84", "log10_age_map"]
    tables = {m: pd.read_parquet(r["output"], columns=ages + ["flag"]) for m, r in results.items()}
    first = next(iter(tables))
    for m, t in tables.items():
        diff = np.abs(t[ages].to_numpy() - tables[first][ages].to_numpy())
        same_nan = np.array_equal(np.isnan(diff), np.isnan(tables[first][ages].to_numpy()))
        print(f"{m:>12} vs {first}: max |difference| {np.nanmax(diff, initial=0.0):.1e} dex, rows differing "
              f"{int((diff > 0).any(axis=1).sum())}, same missing ages {same_nan}, same flags "
              f"{t['flag'].tolist() == tables[first]['flag'].tolist()}")  # fmt: skip

    rate = {m: r["rows"] / r["seconds"] for m, r in results.items()}
    if "memory" in rate:
        for m in rate:
            print(f"ratio {m} / memory (stars/s): {rate[m] / rate['memory']:.2f}")
    if "dask" in rate:
        per_worker = rate["dask"] / args.workers
        hours = args.project_stars / (per_worker * args.project_workers) / 3600
        print(f"Dask per worker (1 thread): {per_worker:.0f} stars/s; projection for {args.project_workers} such workers: "
              f"{per_worker * args.project_workers:.0f} stars/s, {args.project_stars:.0f} stars in {hours:.2f} h, "
              f"each worker under {max(results['dask']['worker_peak_mb']):.0f} MB (linear scaling assumed)")  # fmt: skip


if __name__ == "__main__":
    main()
