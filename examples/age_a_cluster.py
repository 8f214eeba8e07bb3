"""Age a cluster from its rotators and read the result.

    python examples/age_a_cluster.py [CLUSTER] [--catalogue PATH]

Ages the cluster with the fast grid posterior, prints the age with its 16-84 % interval, the
stars most likely to be outliers, and writes ``<cluster>_age.png`` (posterior beside the
period-colour diagram at the inferred age).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import chronoflow as cf
from chronoflow.plotting import plot_cluster_age

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cluster", nargs="?", default="Pleiades")
    parser.add_argument("--catalogue", default=os.environ.get("CHRONOFLOW_CATALOGUE", ROOT.parent / "shared/catalogs/prot_catalogue.csv"))
    parser.add_argument("--out-dir", default=".")
    args = parser.parse_args()

    catalogue = cf.load_catalogue(args.catalogue)
    model = cf.load_model()
    result = cf.cluster_age(catalogue, args.cluster, model=model)

    age, log_age = result.age_myr, result.summary
    print(f"{result.cluster}: {result.n_used} of {result.n_rows} stars used")
    print(f"age = {age['median']:.0f} Myr (16-84 %: {age['p16']:.0f} - {age['p84']:.0f} Myr); "
          f"log10 age/Myr = {log_age['median']:.3f}")
    outliers = result.stars[result.stars["used"]].sort_values("p_outlier", ascending=False).head(5)
    print("most likely outliers (not on the cluster's rotation sequence):")
    print(outliers[["GaiaDR3_ID", "Prot", "BPRP_0", "p_outlier"]].to_string(index=False))
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(args.out_dir) / f"{result.cluster}_age.png"
    plot_cluster_age(result, model, path)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
