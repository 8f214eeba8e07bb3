"""Full (hierarchical PyMC) against fast (grid) cluster ages for five catalogue clusters.

    python docs/validation/full_vs_fast.py [--catalogue PATH] [--out docs/validation/full_vs_fast.md]

Default sampler settings: 4 chains x (1000 tune + 1000 draws) on 2 cores, tabulated likelihood.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import chronoflow as cf

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ("Pleiades", "M37", "Praesepe", "Hyades", "NGC6811")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--catalogue", default=os.environ.get("CHRONOFLOW_CATALOGUE", ROOT.parent / "shared/catalogs/prot_catalogue.csv"))
    parser.add_argument("--out", default=ROOT / "docs/validation/full_vs_fast.md")
    args = parser.parse_args()
    df = cf.load_catalogue(args.catalogue)
    model = cf.load_model()
    lines = [
        "# Full against fast cluster ages",
        "",
        "Written by `python docs/validation/full_vs_fast.py`: the hierarchical model (`full_cluster_age(...)`, "
        "4 chains x (1000 tune + 1000 draws), seed 0) against the fast grid posterior, log10 age in Myr. "
        "'|diff| / fast 68 % width' below 1 means the medians agree within the fast 68 % interval.",
        "",
        "| cluster | N used | fast median (p16-p84) | full median (p16-p84) | |diff| / fast 68 % width | spread [dex] | E(BP-RP) offset [mag] | R-hat max | divergences | wall [s] |",
        "|---|---:|---|---|---:|---|---|---:|---:|---:|",
    ]
    for name in CLUSTERS:
        t0 = time.perf_counter()
        res = cf.full_cluster_age(df, name, model=model, seed=0, progressbar=False)
        wall = time.perf_counter() - t0
        d, f = res.to_dict(), res.fast.summary
        full = d["log10_age_myr"]
        ratio = abs(full["median"] - f["median"]) / (f["p84"] - f["p16"])
        sp, off = d["age_spread_dex"], d["reddening_offset"]
        lines.append(
            f"| {name} | {d['n_used']} | {f['median']:.3f} ({f['p16']:.3f}-{f['p84']:.3f}) | {full['median']:.3f} "
            f"({full['p16']:.3f}-{full['p84']:.3f}) | {ratio:.2f} | {sp['median']:.3f} ({sp['p16']:.3f}-{sp['p84']:.3f}) | "
            f"{off['median']:+.3f} ({off['p16']:+.3f}-{off['p84']:+.3f}) | {d['rhat_max']:.3f} | {res.n_divergent} | {wall:.0f} |"
        )
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
