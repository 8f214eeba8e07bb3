"""Single-star intervals out of sample: leave-one-cluster-out coverage of ``star_ages``.

    python docs/validation/star_loo.py [--catalogue PATH] [--jobs 2] [--clusters NAME ...] [--curves FILE.npz]

For each cluster, the shipped recipe (every member, its early-stopped epochs, seeds 0-4, as
``chronoflow validate loo``) is retrained without it, and every star of the cluster that passes
the training cuts is aged on its own with :func:`chronoflow.star_ages` (defaults: adaptive grid,
log-flat prior; ``model_error=False``: the flow's posterior alone, which ``star_error.py`` then
recalibrates with the single-star model-error term). A star is *covered* when its own calibration age (its subgroup's, for Sco-Cen
and Taurus) lies inside the 16-84 % interval the function returns (open-ended where the row is
flagged beyond the calibration ages), or inside the central 95 % of its posterior. The same
stars aged by the shipped model, which saw them, give the in-sample coverage. Writes
``star_loo.csv`` (one row per cluster) beside itself and prints the summary.

Then a measurement, not a feature of the package: would a temperature on the out-of-sample
posteriors (``posterior ** (1 / T)``, one T per bin of the star's posterior median age) make the
68 % intervals honest? T is calibrated by a nested leave-one-cluster-out (on the other clusters'
stars only) and the coverage of each held-out cluster is measured with it
(``star_loo_tempering.csv``).
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


#: Bins of the star's own (untempered) posterior median [log10 Myr] for the tempering study, and
#: the temperatures tried.
TEMPER_BINS = (-np.inf, 1.5, 2.0, 2.5, 3.0, np.inf)
TEMPERATURES = np.round(np.arange(1.0, 6.01, 0.1), 2)


def _coverage(stars: pd.DataFrame, model, keep: list | None = None) -> dict:
    from chronoflow.inference.ages import star_ages
    from chronoflow.inference.posterior import age_grid, quantiles

    # The flow's posterior alone (model_error=False): this script measures the flow; the
    # single-star model-error term is fitted and judged on its output by star_error.py.
    table, post = star_ages(stars, model=model, return_posteriors=True, model_error=False)
    if keep is not None:  # the posteriors of the aged stars, for the tempering study (float32)
        ok = table["log10_age_median"].notna().to_numpy()
        keep.append((post[ok].astype(np.float32), np.log10(stars["fiducial_age_Myr"].to_numpy(float))[ok],
                     stars["GaiaDR3_ID"].to_numpy()[ok]))
    truth = np.log10(stars["fiducial_age_Myr"].to_numpy(float))
    aged = table["log10_age_median"].notna().to_numpy()
    q = quantiles(post[aged], age_grid(), (0.025, 0.975))
    t = truth[aged]
    inside68 = (table["log10_age_p16"].to_numpy()[aged] <= t) & (t <= table["log10_age_p84"].to_numpy()[aged])
    inside95 = (q[:, 0] <= t) & (t <= q[:, 1])
    half = 0.5 * (table["log10_age_p84"] - table["log10_age_p16"]).to_numpy()[aged]
    return {"n_aged": int(aged.sum()), "coverage_68": float(inside68.mean()), "coverage_95": float(inside95.mean()),
            "median_half_width_dex": float(np.median(half)),
            "median_abs_error_dex": float(np.median(np.abs(table["log10_age_median"].to_numpy()[aged] - t)))}  # fmt: skip


def _fold(args):
    from chronoflow.analysis.validation import fold_model
    from chronoflow.data.catalogue import REVISED_CLUSTERS, training_sample
    from chronoflow.flows.flow import FlowConfig

    catalogue, name, card, config, epochs, bootstrap, shipped = args
    model = fold_model(catalogue, name, FlowConfig(**card["architecture"]), config, epochs, bootstrap)
    stars = training_sample(catalogue[catalogue["cluster"] == name])[0]
    out = {"cluster": name, "fiducial_age_myr": float(stars["fiducial_age_Myr"].median()), "n_stars": len(stars),
           "revised_in_paper": name in REVISED_CLUSTERS}  # fmt: skip
    keep: list = []
    out.update({f"loo_{k}": v for k, v in _coverage(stars, model, keep).items()})
    out.update({f"shipped_{k}": v for k, v in _coverage(stars, shipped).items()})
    return out, keep[0]  # (posteriors, log10 true ages, Gaia DR3 ids) of the aged stars


def _tempered_intervals(post: np.ndarray, temperature: np.ndarray):
    """16/84 and 2.5/97.5 % points of ``post ** (1 / T)`` (per star T), on the default grid."""
    from chronoflow.inference.posterior import age_grid, quantiles

    with np.errstate(divide="ignore"):
        log_post = np.log(np.maximum(post.astype(float), 0.0))
    log_post = log_post / temperature[:, None]
    log_post -= log_post.max(axis=1, keepdims=True)
    return quantiles(np.exp(log_post), age_grid(), (0.025, 0.16, 0.5, 0.84, 0.975))


def tempering_study(curves: dict[str, tuple[np.ndarray, np.ndarray]], kept: list[str]) -> pd.DataFrame:
    """Nested leave-one-cluster-out calibration of a posterior temperature per age bin.

    For each held-out cluster, the temperature of each bin of posterior median age is the
    smallest in ``TEMPERATURES`` whose 68 % intervals hold the calibration age of at least 68 %
    of the *other* clusters' stars in that bin (their out-of-sample posteriors); the held-out
    cluster's stars are then aged with those temperatures. Returns one row per cluster with its
    coverage before and after and the temperatures used."""
    from chronoflow.inference.posterior import age_grid, quantiles

    grid = age_grid()
    med = {c: quantiles(p.astype(float), grid, (0.5,))[:, 0] for c, (p, _) in curves.items()}
    bins = {c: np.digitize(m, TEMPER_BINS[1:-1]) for c, m in med.items()}
    # inside[c][T] : boolean per star, for every candidate temperature
    inside = {}
    for c, (p, truth) in curves.items():
        rows = []
        for temp in TEMPERATURES:
            q = _tempered_intervals(p, np.full(len(p), temp))
            rows.append(((q[:, 1] <= truth) & (truth <= q[:, 3]), (q[:, 0] <= truth) & (truth <= q[:, 4]), 0.5 * (q[:, 3] - q[:, 1])))
        inside[c] = rows
    n_bins = len(TEMPER_BINS) - 1
    pooled = []  # coverage by the bin of the star's own posterior median, all clusters pooled (T = 1)
    for b in range(n_bins):
        hits = np.concatenate([inside[o][0][0][bins[o] == b] for o in kept])
        hits95 = np.concatenate([inside[o][0][1][bins[o] == b] for o in kept])
        pooled.append({"median_lo": TEMPER_BINS[b], "median_hi": TEMPER_BINS[b + 1], "n": len(hits),
                       "coverage_68": float(hits.mean()) if len(hits) else np.nan,
                       "coverage_95": float(hits95.mean()) if len(hits) else np.nan})  # fmt: skip
    print("coverage by the star's posterior median [log10 Myr], out of sample, T = 1 (no open ends):")
    print(pd.DataFrame(pooled).round(3).to_string(index=False))
    out = []
    for c in curves:
        temps = []
        for b in range(n_bins):
            others = [o for o in kept if o != c]
            chosen = TEMPERATURES[-1]
            for i, temp in enumerate(TEMPERATURES):
                hits = np.concatenate([inside[o][i][0][bins[o] == b] for o in others])
                if len(hits) == 0 or hits.mean() >= 0.68:
                    chosen = temp
                    break
            temps.append(float(chosen))
        star_t = np.asarray(temps)[bins[c]]
        q = _tempered_intervals(curves[c][0], star_t)
        truth = curves[c][1]
        q1 = inside[c][0]
        out.append({"cluster": c, "n": len(truth), "coverage_68_t1": float(q1[0].mean()), "coverage_95_t1": float(q1[1].mean()),
                    "half_width_t1": float(np.median(q1[2])),
                    "coverage_68_tempered": float(((q[:, 1] <= truth) & (truth <= q[:, 3])).mean()),
                    "coverage_95_tempered": float(((q[:, 0] <= truth) & (truth <= q[:, 4])).mean()),
                    "half_width_tempered": float(np.median(0.5 * (q[:, 3] - q[:, 1]))),
                    "temperatures": " ".join(f"{t:g}" for t in temps)})  # fmt: skip
    return pd.DataFrame(out)


def main() -> None:
    import chronoflow as cf
    from chronoflow.flows.artifact import load_model
    from chronoflow.flows.ensemble import card_members
    from chronoflow.flows.training import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=HERE.parents[1].parent / "shared" / "catalogs" / "prot_catalogue.csv")
    parser.add_argument("--clusters", nargs="+", default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--curves", type=Path, default=None, help="save (or, if it exists, reuse) the out-of-sample posteriors here (.npz)")
    args = parser.parse_args()
    shipped = load_model()
    card = shipped.card
    _, bootstrap, epochs = card_members(card)
    config = replace(TrainConfig.from_dict(card["training"]), val_clusters=(), refit_all=False, threads=1)
    catalogue = cf.load_catalogue(args.catalogue)
    names = args.clusters or sorted(catalogue["cluster"].unique())
    tasks = [(catalogue, name, card, config, epochs, bootstrap, shipped) for name in names]
    curves, ids = {}, {}
    if args.curves is not None and args.curves.is_file():  # reuse an earlier run's folds
        saved = np.load(args.curves)
        curves = {c: (saved[f"{c}/post"], saved[f"{c}/truth"]) for c in names}
        table = pd.read_csv(HERE / "star_loo.csv")
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = []
            for row, curve in pool.map(_fold, tasks):
                rows.append(row)
                curves[row["cluster"]] = curve[:2]
                ids[row["cluster"]] = curve[2]
                print(f"{row['cluster']}: {row['loo_n_aged']} stars, out of sample 68 % {row['loo_coverage_68']:.3f}, "
                      f"in sample {row['shipped_coverage_68']:.3f}", flush=True)
        if args.curves is not None:
            np.savez_compressed(args.curves, **{f"{c}/{k}": v for c, (p, t) in curves.items()
                                                for k, v in (("post", p), ("truth", t), ("ids", ids[c]))})
        table = pd.DataFrame(rows).sort_values("fiducial_age_myr").reset_index(drop=True)
    table.to_csv(HERE / "star_loo.csv", index=False)
    kept = table[~table["revised_in_paper"]]
    for prefix, label in (("loo", "out of sample (leave-one-out)"), ("shipped", "in sample (shipped model)")):
        n = kept[f"{prefix}_n_aged"]
        print(f"{label}: {int(n.sum())} stars of {len(kept)} clusters; star-weighted coverage "
              f"68 % {np.average(kept[f'{prefix}_coverage_68'], weights=n):.3f}, "
              f"95 % {np.average(kept[f'{prefix}_coverage_95'], weights=n):.3f}; "
              f"median over clusters of the 68 % coverage {kept[f'{prefix}_coverage_68'].median():.3f}")
    # The tempering study (a measurement: the package does not temper single-star posteriors).
    study = tempering_study(curves, list(kept["cluster"]))
    study = study.merge(table[["cluster", "fiducial_age_myr", "revised_in_paper"]], on="cluster").sort_values("fiducial_age_myr")
    study.to_csv(HERE / "star_loo_tempering.csv", index=False)
    ks = study[~study["revised_in_paper"]]
    for lo, hi in ((0, 30), (30, 300), (300, np.inf), (0, np.inf)):
        b = ks[(ks["fiducial_age_myr"] >= lo) & (ks["fiducial_age_myr"] < hi)]
        w = b["n"]
        print(f"tempering, clusters {lo}-{hi} Myr ({len(b)}, {int(w.sum())} stars): 68 % "
              f"{np.average(b['coverage_68_t1'], weights=w):.3f} -> {np.average(b['coverage_68_tempered'], weights=w):.3f}, "
              f"95 % {np.average(b['coverage_95_t1'], weights=w):.3f} -> {np.average(b['coverage_95_tempered'], weights=w):.3f}, "
              f"median half-width {b['half_width_t1'].median():.3f} -> {b['half_width_tempered'].median():.3f} dex")
    print(study[["cluster", "n", "coverage_68_t1", "coverage_68_tempered", "temperatures"]].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
