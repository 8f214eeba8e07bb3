"""The single-star model-error term: candidates measured out of sample, and the chosen one fitted.

    python docs/validation/star_error.py --curves star_loo_curves.npz [--catalogue PATH] [--calibrate MODEL.pt]

Input: the out-of-sample posteriors that ``star_loo.py --curves FILE`` saves (every cluster left
out of the shipped recipe in turn; each of its stars aged on its own by the fold's model with
the flow's posterior alone, log-flat prior, the default grid). Every candidate form of the
single-star model-error term is **cross-fitted**: the stars of a held-out cluster get the term
fitted on the other clusters' stars only, and their intervals are then scored against their
cluster's age. Only the 23 clusters whose age the paper did not revise are used (the revised
four's fiducial ages are known to be off by 0.2-0.35 dex).

Candidates (see ``docs/validation/star_error.md``):

* ``flow``: the flow's posterior alone (what ``star_ages`` returned before the term);
* ``kernel``: the posterior convolved in log age with a Gaussian whose width is chosen per bin
  of the posterior median (smallest width in 0-1.5 dex whose 68 % intervals hold >= 68 % of the
  other clusters' stars in that bin);
* ``quantile_median``: the quantile recalibration of :mod:`chronoflow.inference.star_error`,
  local in the posterior median only;
* ``quantile_median_colour``: the same, local in the median and the colour (star weights 1);
* ``quantile_median_colour_w``: the same with star weights 1/sqrt(stars of the cluster), so that
  the largest clusters do not decide the map alone.

Writes ``star_error.csv`` (one row per candidate and group) and ``star_error_clusters.csv`` (one
row per candidate and cluster) beside itself and prints the tables. With ``--calibrate``, fits
the chosen form on all 23 clusters and writes it into the model file's card
(``card["single_star_error"]``, with an amendment entry; the weights are unchanged).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.integrate import trapezoid

from chronoflow.analysis.star_validation import MEDIAN_BINS, star_weights

HERE = Path(__file__).resolve().parent
KERNEL_WIDTHS = np.round(np.arange(0.0, 1.51, 0.05), 2)
CANDIDATES = ["flow", "kernel", "quantile_median", "quantile_median_w", "quantile_median_colour", "quantile_median_colour_w",
              "quantile_sym_median", "quantile_sym_median_w", "quantile_sym_median_colour_w", "quantile_widen_median",
              "quantile_widen_median_w", "quantile_widen_median_colour_w", "quantile_two_median", "quantile_two_median_w",
              "quantile_two_median_colour_w"]
CHOSEN = "quantile_widen_median"


def load_stars(curves_file: Path, catalogue_file: Path | None):
    """Per-star table (cluster, truth, colour, ...) and the posteriors, from star_loo's curves."""
    import chronoflow as cf
    from chronoflow.data.catalogue import REVISED_CLUSTERS, training_sample
    from chronoflow.analysis.star_validation import star_rows
    from chronoflow.inference.posterior import age_grid

    saved = np.load(curves_file)
    names = sorted({k.split("/")[0] for k in saved.files})
    cat = cf.load_catalogue(catalogue_file)
    kept = training_sample(cat)[0]
    by_id = kept.set_index("GaiaDR3_ID")
    grid = age_grid()
    rows, posts = [], []
    for c in names:
        if c in REVISED_CLUSTERS:
            continue
        post = saved[f"{c}/post"].astype(float)
        post /= trapezoid(post, grid, axis=1)[:, None]
        truth = saved[f"{c}/truth"]
        ids = saved[f"{c}/ids"]
        calib = np.log10(kept.loc[kept["cluster"] != c, "fiducial_age_Myr"].to_numpy(float))  # the fold's calibration ages
        rows.append(star_rows(c, by_id.loc[ids].reset_index(), truth, post, grid, (calib.min(), calib.max())))
        posts.append(post)
    return pd.concat(rows, ignore_index=True), np.concatenate(posts), grid


def smooth(post: np.ndarray, grid: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Each row convolved with a Gaussian of its own width [dex] in log age (renormalized)."""
    from scipy.ndimage import gaussian_filter1d

    out = post.copy()
    step = grid[1] - grid[0]
    for w in np.unique(width):  # a few dozen widths, each one vectorized over its stars
        if w > 0:
            rows = width == w
            out[rows] = gaussian_filter1d(post[rows], w / step, axis=1, mode="constant")
    return out / trapezoid(out, grid, axis=1)[:, None]


def candidate(name: str, stars: pd.DataFrame, post: np.ndarray, grid: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Posteriors of the ``test`` stars under candidate ``name`` fitted on the ``train`` stars."""
    from chronoflow.analysis.star_validation import honest_posteriors
    from chronoflow.inference.posterior import quantiles
    from chronoflow.inference.star_error import fit_star_error, pit_values

    p = post[test]
    if name == "flow":
        return p
    if name == "kernel":
        bins_tr = np.digitize(stars["median"].to_numpy()[train], MEDIAN_BINS[1:-1])
        bins_te = np.digitize(stars["median"].to_numpy()[test], MEDIAN_BINS[1:-1])
        truth = stars["truth"].to_numpy()[train]
        widths = np.zeros(len(MEDIAN_BINS) - 1)
        for b in range(len(widths)):
            rows = np.flatnonzero(train)[bins_tr == b]
            widths[b] = KERNEL_WIDTHS[-1]
            for w in KERNEL_WIDTHS:
                q = quantiles(smooth(post[rows], grid, np.full(len(rows), w)), grid, (0.16, 0.84))
                t = truth[bins_tr == b]
                if len(rows) == 0 or ((q[:, 0] <= t) & (t <= q[:, 1])).mean() >= 0.68:
                    widths[b] = w
                    break
        return smooth(p, grid, widths[bins_te])
    kw = {}
    if "_colour" not in name:
        kw.update(colour_nodes=(1.0,), bandwidths=(0.25, np.inf))
    weights = star_weights(stars["n_cluster"].to_numpy(float)[train]) if name.endswith("_w") else None
    s = stars[train]
    colour = stars["colour"].to_numpy()
    if "_two" in name:  # widen, then recalibrate the central widths of the widened posteriors
        first = fit_star_error(s["median"], s["colour"], s["pit"], weights, symmetric="widen", **kw)
        widened = honest_posteriors(first, post[train], grid, colour[train])
        second = fit_star_error(s["median"], s["colour"], pit_values(widened, grid, s["truth"].to_numpy()), weights,
                                symmetric=True, **kw)  # fmt: skip
        return honest_posteriors(second, honest_posteriors(first, p, grid, colour[test]), grid, colour[test])
    kw["symmetric"] = "widen" if "_widen" in name else "_sym" in name
    fitted = fit_star_error(s["median"], s["colour"], s["pit"], weights, **kw)
    return honest_posteriors(fitted, p, grid, colour[test])


def markdown_tables(table: pd.DataFrame) -> str:
    """Two Markdown tables (68 % coverage, then 95 % coverage and widths), one row per candidate."""
    groups = [g for g in table["group"].unique() if not g.startswith("honest")]
    short = {g: g.replace("true age ", "").replace("flow median ", "m ") for g in groups}
    short = {g: v.replace("m -inf-", "m < ").replace("300-inf Myr", ">= 300 Myr").replace("m 3-inf", "m >= 3") for g, v in short.items()}
    t = table.set_index(["candidate", "group"])
    lines = ["**68 % coverage, star-weighted** (true-age bands [Myr]; bins m of the flow posterior's median "
             "[log10 Myr]; the last column counts each cluster once):", "",
             "| candidate | " + " | ".join(short[g] for g in groups) + " | all, cluster-weighted |",
             "|---|" + "---:|" * (len(groups) + 1)]
    for c in table["candidate"].unique():
        cells = [f"{t.loc[(c, g), 'coverage_68']:.3f}" for g in groups]
        lines.append(f"| `{c}` | " + " | ".join(cells) + f" | {t.loc[(c, 'all'), 'cluster_weighted_68']:.3f} |")
    lines += ["", "**95 % coverage, star-weighted, and median 68 % half-width [dex]** by true-age band:", "",
              "| candidate | " + " | ".join(f"95 %, {short[g]}" for g in groups[:4]) + " | "
              + " | ".join(f"half-width, {short[g]}" for g in groups[:4]) + " |",
              "|---|" + "---:|" * 8]
    for c in table["candidate"].unique():
        cells = [f"{t.loc[(c, g), 'coverage_95']:.3f}" for g in groups[:4]]
        cells += [f"{t.loc[(c, g), 'median_half_width_dex']:.3f}" for g in groups[:4]]
        lines.append(f"| `{c}` | " + " | ".join(cells) + " |")
    lines += ["", "95 % coverage by bin of the flow median:", "",
              "| candidate | " + " | ".join(short[g] for g in groups[4:]) + " |", "|---|" + "---:|" * len(groups[4:])]
    for c in table["candidate"].unique():
        lines.append(f"| `{c}` | " + " | ".join(f"{t.loc[(c, g), 'coverage_95']:.3f}" for g in groups[4:]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, required=True)
    parser.add_argument("--catalogue", type=Path, default=HERE.parents[1].parent / "shared" / "catalogs" / "prot_catalogue.csv")
    parser.add_argument("--calibrate", type=Path, default=None, help="write the chosen form, fitted on all clusters, into this model file")
    parser.add_argument("--candidates", nargs="+", default=CANDIDATES)
    args = parser.parse_args()
    from chronoflow.analysis.star_validation import coverage_table, interval_scores

    stars, post, grid = load_stars(args.curves, args.catalogue)
    summary, per_cluster = [], []
    for name in args.candidates:
        scored = []
        for c in stars["cluster"].unique():  # cross-fitting: each cluster's term fitted without it
            test = (stars["cluster"] == c).to_numpy()
            p = candidate(name, stars, post, grid, ~test, test)
            scored.append(interval_scores(stars[test], p, grid))
        scored = pd.concat(scored).loc[stars.index]
        summary.append(coverage_table(stars, scored).assign(candidate=name))
        pc = stars.join(scored).groupby("cluster", sort=False).agg(
            age_myr=("truth", lambda t: 10 ** t.iloc[0]), n=("in68", "size"), coverage_68=("in68", "mean"),
            coverage_95=("in95", "mean"), median_half_width_dex=("half_width", "median"))  # fmt: skip
        per_cluster.append(pc.assign(candidate=name).reset_index())
        print(f"{name}: done", flush=True)
    table = pd.concat(summary, ignore_index=True)[["candidate", *summary[0].columns[:-1]]]
    table.to_csv(HERE / "star_error.csv", index=False, float_format="%.4f")
    clusters = pd.concat(per_cluster).sort_values(["candidate", "age_myr"])
    clusters.to_csv(HERE / "star_error_clusters.csv", index=False, float_format="%.4f")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table.round(3).to_string(index=False))
    (HERE / "star_error_tables.md").write_text(markdown_tables(table))
    if args.calibrate is not None:
        from chronoflow.flows.artifact import load_model, save_model
        from chronoflow.inference.star_error import SHIPPED_FORM, fit_star_error

        fitted = fit_star_error(stars["median"], stars["colour"], stars["pit"], **SHIPPED_FORM,
                                source=f"docs/validation/star_error.py ({CHOSEN}) on the leave-one-out posteriors of star_loo.py: "
                                       f"{stars['cluster'].nunique()} clusters, {len(stars)} stars")  # fmt: skip
        target = load_model(args.calibrate)
        card = dict(target.card)
        card["single_star_error"] = fitted.to_dict()
        card["amendments"] = list(card.get("amendments", [])) + [{
            "date": dt.date.today().isoformat(),
            "what": f"single_star_error added: {CHOSEN} fitted by docs/validation/star_error.py; weights unchanged"}]  # fmt: skip
        save_model(target, args.calibrate, card=card)
        print(f"wrote the single-star model-error term into {args.calibrate}")


if __name__ == "__main__":
    main()
