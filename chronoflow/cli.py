"""Command-line interface: ``chronoflow --help``.

Every command reports user errors (:class:`~chronoflow.errors.ChronoflowError`) as one red line
on stderr and exits with status 2; no traceback.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._version import __version__
from .errors import ChronoflowError, first_line

__all__ = ["app", "main"]

app = typer.Typer(
    name="chronoflow",
    help="Gyrochronology with a conditional normalizing flow: ages from rotation periods.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
catalogue_app = typer.Typer(help="Inspect and check rotator catalogues.", no_args_is_help=True)
app.add_typer(catalogue_app, name="catalogue")
model_app = typer.Typer(help="Inspect model files.", no_args_is_help=True)
app.add_typer(model_app, name="model")
validate_app = typer.Typer(help="Validation runs (slow).", no_args_is_help=True)
app.add_typer(validate_app, name="validate")

out = Console()
err = Console(stderr=True)


def _writable(option: str, value: Optional[Path], folder_ok: bool = False) -> Optional[Path]:
    """Refuse an output path that cannot be written, before any work (one line naming it)."""
    if value is None:
        return value
    parent = value.parent if str(value.parent) else Path(".")
    if not parent.exists():
        raise ChronoflowError(f"{option} {value}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise ChronoflowError(f"{option} {value}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise ChronoflowError(f"{option} {value}: the folder {parent} is not writable")
    if value.is_dir() and not folder_ok:
        raise ChronoflowError(f"{option} {value}: is a folder; give a file name")
    if value.is_file() and not os.access(value, os.W_OK):
        raise ChronoflowError(f"{option} {value}: the file exists and is not writable")
    return value


def _option_name(param: typer.CallbackParam) -> str:
    return next((o for o in param.opts if o.startswith("--")), str(param.name))


def _check_output(param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """Option callback: an output file that can be written (checked while the options are read)."""
    return _writable(_option_name(param), value)


def _check_output_folder_ok(param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """As :func:`_check_output`, for outputs that may be folders (Dask writes a folder of parts)."""
    return _writable(_option_name(param), value, folder_ok=True)


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"chronoflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Gyrochronology with a conditional normalizing flow."""


@catalogue_app.command("summary")
def catalogue_summary(
    file: Optional[Path] = typer.Argument(
        None, help="Catalogue file (CSV/Parquet/FITS). Default: $CHRONOFLOW_CATALOGUE or the published catalogue."
    ),
    by: str = typer.Option("cluster", help="Group by 'cluster' or 'subgroup'."),
) -> None:
    """Print one line per cluster: stars, fiducial age, colour range, and the training cuts."""
    from .data.catalogue import load_catalogue, summarize, training_sample

    df = load_catalogue(file)
    summary = summarize(df, by=by)  # refuses a column it cannot group by, in one line
    table = Table(title=f"{len(df)} stars in {len(summary)} {escape(by)}s")
    for name in (by, "N", "age [Myr]", "(BP-RP)0 range [mag]", "median Prot [d]"):
        table.add_column(escape(name), justify="left" if name == by else "right")
    for name, row in summary.iterrows():
        table.add_row(
            str(name), str(int(row.n_stars)), f"{row.age_myr:g}", f"{row.bprp0_min:.2f} - {row.bprp0_max:.2f}",
            f"{row.prot_median_d:.2f}",
        )
    out.print(table)
    _, report = training_sample(df)
    cuts = Table(title="Published training cuts")
    for name in ("cut", "removed", "remaining"):
        cuts.add_column(name, justify="left" if name == "cut" else "right")
    for row in report.itertuples():
        cuts.add_row(row.cut, str(row.removed), str(row.remaining))
    out.print(cuts)


@catalogue_app.command("check")
def catalogue_check(file: Path = typer.Argument(..., help="Catalogue file to validate.")) -> None:
    """Validate a catalogue file against the schema; exit 0 when it passes."""
    from .data.catalogue import load_catalogue

    df = load_catalogue(file)
    out.print(f"[green]ok[/green]: {escape(str(file))} has {len(df)} valid rows")


@app.command("train")
def train_command(
    out_file: Path = typer.Option(..., "--out", callback=_check_output, help="Where to write the model file (*.pt)."),
    catalogue: Optional[Path] = typer.Option(
        None, "--catalogue", help="Training catalogue. Default: $CHRONOFLOW_CATALOGUE or the published catalogue."
    ),
    seed: int = typer.Option(0, help="Seed of member 0 (member k: seed + k): initialisation, batch order, the validation split."),
    members: Optional[int] = typer.Option(None, help="Ensemble members (default: as many as the shipped ensemble; 1: a single flow)."),
    bootstrap: str = typer.Option("stars", help="Resampling of each member: 'stars', 'clusters' or 'none'."),
    age_noise: Optional[float] = typer.Option(None, help="Noise on the log10 age labels \\[dex] (default: the TrainConfig default)."),
    weight_decay: Optional[float] = typer.Option(None, help="Adam weight decay (default: the TrainConfig default)."),
    max_epochs: Optional[int] = typer.Option(None, help="Epoch budget (default: the TrainConfig default)."),
    membership_weighted: bool = typer.Option(False, help="Weight each star by its membership probability."),
    refit_all: bool = typer.Option(True, help="Refit on all clusters after early stopping on held-out clusters."),
    val_cluster: Optional[list[str]] = typer.Option(None, help="Validation cluster (repeatable); default: chosen by seed."),
    threads: int = typer.Option(1, help="torch threads."),
    overwrite: bool = typer.Option(False, help="Replace an existing model file."),
) -> None:
    """Train the flow ensemble (and the Gaussian baseline) with the published cuts; write model + card.

    The model-error term is calibrated afterwards by `chronoflow validate loo --calibrate FILE`.
    """
    import dataclasses

    from .data.catalogue import load_catalogue
    from .flows.artifact import save_model
    from .flows.ensemble import DEFAULT_MEMBERS, train_ensemble
    from .flows.training import TrainConfig

    if members is None:
        members = DEFAULT_MEMBERS
    if out_file.exists() and not overwrite:
        raise ChronoflowError(f"{out_file} exists; pass --overwrite to replace it")
    config = TrainConfig(seed=seed, membership_weighted=membership_weighted, refit_all=refit_all, threads=threads)
    changes = {k: v for k, v in (("max_epochs", max_epochs), ("age_noise_dex", age_noise), ("weight_decay", weight_decay)) if v is not None}
    if val_cluster:
        changes["val_clusters"] = tuple(val_cluster)
    config = dataclasses.replace(config, **changes)
    result = train_ensemble(load_catalogue(catalogue), members, config=config, bootstrap=bootstrap, progress=True)
    save_model(result.model, out_file)
    _print_card(result.card)
    out.print(f"[green]wrote[/green] {escape(str(out_file))}")


def _print_card(card: dict) -> None:
    from .flows.card import card_rows

    table = Table(title="chronoflow model card", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for k, v in card_rows(card):
        table.add_row(k, v)
    out.print(table)


@model_app.command("info")
def model_info(
    model: Optional[Path] = typer.Option(None, "--model", help="Model file. Default: $CHRONOFLOW_MODEL or the shipped model."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole card as JSON."),
) -> None:
    """Print the model card of the model in use (the shipped pretrained model by default)."""
    import json

    from .flows.artifact import load_model

    card = load_model(model).card
    if as_json:
        print(json.dumps(card, indent=2, sort_keys=True))
    else:
        _print_card(card)


def _refuse_unused(ctx: typer.Context, method: str, unused: dict[str, tuple[str, ...]]) -> None:
    """One line when an option that ``--method METHOD`` does not use was given on the command line."""
    names = {p.name: p.opts[0] for p in ctx.command.params}
    given = [names[n] for n in unused[method] if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"]
    if given:
        other = next(m for m in unused if m != method)
        raise ChronoflowError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} not used by --method {method} "
                              f"(only by --method {other}); leave {'it' if len(given) == 1 else 'them'} out")


def _read_user_table(file: Optional[Path]):
    """A user's table (any columns), or the published catalogue when no file is given."""
    from .data.catalogue import load_catalogue, read_table

    if file is None:
        return load_catalogue()
    try:
        return read_table(file)  # checks the file first (check_table_file): its refusals are one line already
    except ChronoflowError:
        raise
    except Exception as exc:
        raise ChronoflowError(f"could not read {file}: {type(exc).__name__}: {first_line(exc)}") from None


@app.command("age-cluster")
def age_cluster_command(
    ctx: typer.Context,
    file: Optional[Path] = typer.Argument(None, help="CSV/Parquet/FITS in the catalogue schema. Default: the published catalogue."),
    cluster: Optional[str] = typer.Option(None, "--cluster", "-c", help="Cluster to age (may be omitted when FILE holds one)."),
    by: str = typer.Option("cluster", help="Select on 'cluster' or 'subgroup'."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    plot: Optional[Path] = typer.Option(None, "--plot", callback=_check_output, help="Save the posterior + period-colour figure here."),
    f_out: float = typer.Option(0.05, help="Outlier fraction of the mixture likelihood."),
    membership: str = typer.Option("mem_prob_source", help="Membership column ('none': all members)."),
    no_cuts: bool = typer.Option(False, "--no-cuts", help="Do not apply the published cuts."),
    include_out_of_domain: bool = typer.Option(False, "--include-out-of-domain", help="Also use stars whose period, colour or colour error lies outside the training domain (extrapolated; flagged either way)."),
    prior: str = typer.Option("log-flat", help="'log-flat' or 'flat' (in age)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (default: the shipped model)."),
    method: str = typer.Option("fast", help="'fast' (grid posterior) or 'full' (hierarchical PyMC model)."),
    draws: int = typer.Option(1000, help="\\[full] draws per chain."),
    tune: int = typer.Option(1000, help="\\[full] tuning steps per chain."),
    chains: int = typer.Option(4, help="\\[full] chains."),
    seed: int = typer.Option(0, help="\\[full] sampler seed."),
    idata_out: Optional[Path] = typer.Option(None, "--out", callback=_check_output, help="\\[full] write the ArviZ InferenceData (.nc)."),
    device: str = typer.Option("auto", help="Where the flow runs (with --method full: for the per-star tables; NUTS samples on the CPU): 'auto' (a CUDA GPU when torch sees one, else the CPU), 'cpu', 'cuda' or 'cuda:N'."),
) -> None:
    """Age a cluster from its rotators: posterior median and 16/84 percentiles."""
    from .flows.artifact import load_model
    from .flows.device import resolve_device
    from .inference.ages import cluster_age

    if method not in ("fast", "full"):
        raise ChronoflowError(f"unknown method {method!r}; allowed: 'fast', 'full'")
    _refuse_unused(ctx, method, {"fast": ("draws", "tune", "chains", "seed", "idata_out"), "full": ("plot", "f_out", "prior")})
    resolve_device(device)  # a bad device is refused before the model, the table or PyMC is loaded
    flow = load_model(model)
    df = _read_user_table(file)
    member_col = None if membership.lower() == "none" else membership
    if method == "full":
        from .inference.hierarchical import full_cluster_age

        res = full_cluster_age(df, cluster, by=by, model=flow, membership=member_col, cuts=not no_cuts,
                               include_out_of_domain=include_out_of_domain,
                               draws=draws, tune=tune, chains=chains, seed=seed, progressbar=not as_json, device=device)  # fmt: skip
        if idata_out is not None:
            res.idata.to_netcdf(str(idata_out))
        if as_json:
            print(res.to_json())
            return
        out.print(res.to_text(), markup=False)
        return
    res = cluster_age(df, cluster, by=by, model=flow, f_out=f_out, membership=member_col, cuts=not no_cuts, prior=prior,
                      include_out_of_domain=include_out_of_domain, device=device)
    # The result first, then the figure: a figure that fails never loses the age.
    if as_json:
        print(res.to_json(), flush=True)
    else:
        out.print(res.to_text(), markup=False)
    if plot is not None:
        from .plotting import plot_cluster_age

        plot_cluster_age(res, flow, plot)
        if not as_json:
            out.print(f"  figure: {plot}", markup=False)


@app.command("age-stars")
def age_stars_command(
    file: Path = typer.Argument(..., help="CSV (NULL = missing) or Parquet with Prot \\[d], BPRP_0 \\[mag], e_BPRP_0 \\[mag], optionally e_Prot \\[d] (period error) and ruwe / non_single_star (binarity flags); FITS with --scheduler memory."),
    out_file: Path = typer.Option(..., "--out", callback=_check_output_folder_ok, help="Output .parquet (or .csv): every input row plus the median, 68 % and 95 % intervals with the model error, the flow's alone (log10_age_stat_*) and a flag. With --scheduler dask: a directory of Parquet parts."),
    scheduler: str = typer.Option("streaming", help="'streaming' (chunks in this process, bounded memory), 'memory' (whole table at once) or 'dask'."),
    chunk_rows: int = typer.Option(100_000, help="Rows per chunk (streaming)."),
    address: Optional[str] = typer.Option(None, help="Dask scheduler address (tcp://host:8786); default: a local cluster."),
    workers: int = typer.Option(2, help="Workers of the local Dask cluster."),
    threads_per_worker: int = typer.Option(1, help="Threads per local Dask worker."),
    blocksize: str = typer.Option("4MB", help="CSV bytes per Dask partition (Parquet: one partition per row group)."),
    prior: str = typer.Option("log-flat", help="'log-flat' or 'flat' (in age)."),
    include_out_of_domain: bool = typer.Option(False, "--include-out-of-domain", help="Also age rows whose period, colour or colour error lies outside the training domain (extrapolated; flagged either way). Default: NaN ages there."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (default: the shipped model)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    device: str = typer.Option("auto", help="Where the flow runs: 'auto' (a CUDA GPU when torch sees one, else the CPU), 'cpu', 'cuda' or 'cuda:N'."),
) -> None:
    """Single-star ages for every row of FILE: median, 68 % and 95 % intervals with the single-star model error, the flow's own percentiles and rotation flags; bad rows flagged, never dropped."""
    from .flows.artifact import load_model

    if scheduler == "memory":
        from .scale.streaming import age_chunk

        if out_file.suffix.lower() not in (".csv", ".parquet"):
            raise ChronoflowError(f"unknown output format {out_file.suffix!r}; allowed: .csv, .parquet")
        res = age_chunk(_read_user_table(file), model=load_model(model), prior=prior,
                        include_out_of_domain=include_out_of_domain, device=device)  # the whole table as one chunk
        _write_table(res, out_file)
        n_rows, n_aged, n_flag = len(res), int(res["log10_age_median"].notna().sum()), int((res["flag"] != "").sum())
    elif scheduler == "streaming":
        from .scale.streaming import age_stars_file

        report = age_stars_file(file, out_file, chunk_rows=chunk_rows, model=load_model(model), prior=prior, progress=progress,
                                include_out_of_domain=include_out_of_domain, device=device)
        n_rows, n_aged, n_flag = report.n_rows, report.n_aged, report.n_flagged
    elif scheduler == "dask":
        from .scale.dask_backend import age_stars_file_dask

        report = age_stars_file_dask(file, out_file, address=address, n_workers=workers, threads_per_worker=threads_per_worker,
                                     blocksize=blocksize, model=model, prior=prior, progress=progress,
                                     include_out_of_domain=include_out_of_domain, device=device)  # fmt: skip
        n_rows, n_aged, n_flag = report.n_rows, report.n_aged, report.n_flagged
    else:
        raise ChronoflowError(f"unknown scheduler {scheduler!r}; allowed: 'streaming', 'memory', 'dask'")
    out.print(f"aged {n_aged} of {n_rows} rows ({n_rows - n_aged} without an age, {n_flag} flagged) -> {escape(str(out_file))}")


@app.command("age-star")
def age_star_command(
    prot: float = typer.Option(..., "--prot", help="Rotation period \\[d]."),
    bprp0: float = typer.Option(..., "--bprp0", help="De-reddened colour (BP-RP)0 \\[mag]."),
    e_bprp0: float = typer.Option(0.027, "--e-bprp0", help="Error of (BP-RP)0 \\[mag] (default: the catalogue's median colour error)."),
    e_prot: Optional[float] = typer.Option(None, "--e-prot", help="Error of the period \\[d]; the likelihood is convolved with it."),
    ruwe: Optional[float] = typer.Option(None, "--ruwe", help="Gaia RUWE of the star (for the binarity flag)."),
    plot: Optional[Path] = typer.Option(None, "--plot", callback=_check_output, help="Save the posterior + period-colour figure here."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (default: the shipped model)."),
    device: str = typer.Option("auto", help="Where the flow runs: 'auto' (a CUDA GPU when torch sees one, else the CPU), 'cpu', 'cuda' or 'cuda:N'."),
) -> None:
    """Age one star: median, 68 % and 95 % intervals (with the model error) and the flow posterior's own 68 %."""
    from .flows.artifact import load_model
    from .flows.device import resolve_device
    from .inference.single_star import star_age

    resolve_device(device)  # a bad device is refused before the model is loaded
    res = star_age(prot, bprp0, e_bprp0, e_prot=e_prot, ruwe=ruwe, model=load_model(model), device=device)
    if as_json:  # printed before the figure is drawn: a plotting failure does not lose the age
        print(res.to_json(), flush=True)
    else:
        out.print(res.to_text(), markup=False, highlight=False, soft_wrap=True)
    if plot is not None:
        res.plot(plot)
        if not as_json:
            out.print(f"  figure: {plot}", markup=False, highlight=False, soft_wrap=True)


@app.command("synthetic-stars")
def synthetic_stars_command(
    n: int = typer.Option(..., "--n", help="Number of stars."),
    out_file: Path = typer.Option(..., "--out", callback=_check_output, help="Output table (.parquet or .csv)."),
    catalogue: Optional[Path] = typer.Option(None, help="Catalogue to draw colours and errors from (default: $CHRONOFLOW_CATALOGUE or the published one)."),
    bad_fraction: float = typer.Option(0.0, help="Fraction of rows made unusable on purpose (missing/negative values)."),
    seed: int = typer.Option(0, help="Seed."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (default: the shipped model)."),
) -> None:
    """A synthetic survey of N field stars (log-uniform ages, real colours and errors, periods from the flow)."""
    from .analysis.forward import synthetic_field
    from .flows.artifact import load_model

    df = synthetic_field(n, catalogue=_read_user_table(catalogue), bad_fraction=bad_fraction, seed=seed, model=load_model(model))
    _write_table(df, out_file)
    out.print(f"wrote {len(df)} synthetic stars ({int((df['bad_kind'] != '').sum())} bad on purpose) -> {escape(str(out_file))}")


@app.command("forward")
def forward_command(
    age: float = typer.Option(..., "--age", help="Age \\[Myr]."),
    n: int = typer.Option(..., "--n", help="Number of stars."),
    out_file: Path = typer.Option(..., "--out", callback=_check_output, help="Output table (.csv or .parquet) in the catalogue schema."),
    plot: Optional[Path] = typer.Option(None, "--plot", callback=_check_output, help="Save a period-colour figure of the population."),
    f_field: float = typer.Option(0.0, help="Fraction of field stars."),
    f_outlier: float = typer.Option(0.0, help="Fraction of members that are outliers (fast rotators/binaries)."),
    age_spread: float = typer.Option(0.0, help="Spread of member log ages \\[dex]."),
    seed: int = typer.Option(0, help="Seed."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (default: the shipped model)."),
) -> None:
    """Forward-model a population at AGE: periods drawn from the flow, in the catalogue schema."""
    from .analysis.forward import synthetic_cluster
    from .flows.artifact import load_model

    if n < 1:
        raise ChronoflowError(f"--n must be >= 1, got {n}")
    flow = load_model(model)
    df = synthetic_cluster(age, n, f_field=f_field, f_outlier=f_outlier, age_spread_dex=age_spread, seed=seed, model=flow)
    _write_table(df, out_file)
    if plot is not None:
        from .plotting import plot_density_panels

        fig = plot_density_panels(flow, [age])
        fig.axes[0].scatter(df["BPRP_0"], df["Prot"], s=6, color="tab:blue", edgecolor="none", label=f"{n} drawn stars")
        fig.axes[0].legend(frameon=False, fontsize=8)
        fig.savefig(plot, dpi=130)
    out.print(f"drew {len(df)} stars at {age:g} Myr -> {escape(str(out_file))}")


@app.command("tracks")
def tracks_command(
    colour: list[float] = typer.Option(..., "--colour", help="(BP-RP)0 \\[mag] of a track (repeatable)."),
    out_file: Optional[Path] = typer.Option(None, "--out", callback=_check_output, help="Write the tracks table (.csv/.parquet)."),
    plot: Optional[Path] = typer.Option(None, "--plot", callback=_check_output, help="Save the tracks figure."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (default: the shipped model)."),
) -> None:
    """Spin-down tracks: 2.5/16/50/84/97.5 % rotation periods against age at fixed colours."""
    from .analysis.forward import spin_down_tracks
    from .flows.artifact import load_model

    tracks = spin_down_tracks(colour, model=load_model(model))
    if out_file is not None:
        _write_table(tracks, out_file)
    if plot is not None:
        from .plotting import plot_tracks

        plot_tracks(tracks, path=plot)
    table = Table(title="median rotation period [d]")
    table.add_column("age [Myr]", justify="right")
    for c in colour:
        table.add_column(f"(BP-RP)0={c:g}", justify="right")
    ages = sorted(tracks["age_myr"].unique())
    for age in ages[:: max(1, len(ages) // 10)]:
        row = tracks[tracks["age_myr"] == age]
        table.add_row(f"{age:.0f}", *[f"{v:.2f}" for v in row["prot_p50"]])
    out.print(table)


def _write_table(df, path: Path) -> None:
    from .data.catalogue import CSV_NULL

    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False, na_rep=CSV_NULL)
    elif suffix == ".parquet":
        df.to_parquet(path, index=False, row_group_size=100_000)  # row groups: chunks for streaming and Dask
    else:
        raise ChronoflowError(f"unknown output format {suffix!r}; allowed: .csv, .parquet")


@app.command("sweep")
def sweep_command(
    file: Optional[Path] = typer.Argument(None, help="CSV/Parquet/FITS in the catalogue schema. Default: the published catalogue."),
    cluster: Optional[str] = typer.Option(None, "--cluster", "-c", help="Cluster to age."),
    by: str = typer.Option("cluster", help="Select on 'cluster' or 'subgroup'."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout."),
    plot: Optional[Path] = typer.Option(None, "--plot", callback=_check_output, help="Save the budget bar chart here."),
    reddening_sigma: float = typer.Option(0.03, help="Standard deviation of the cluster's E(BP-RP), mag (0: skip)."),
    age_scale: float = typer.Option(0.1, help="Correlated error of the calibration age scale, dex (0: skip)."),
    refits: bool = typer.Option(True, help="Include the per-cluster calibration-age refits (from scratch, cached)."),
    calibration_scale: float = typer.Option(0.05, help="Per-cluster calibration-age error, dex."),
    n_calibration: int = typer.Option(4, help="Perturbed calibration refits (plus an unperturbed and a null one)."),
    method: str = typer.Option("fast", help="'fast' (grid ages) or 'full' (extinction and membership from four hierarchical runs)."),
    draws: int = typer.Option(1000, help="NUTS draws per chain (--method full)."),
    tune: int = typer.Option(1000, help="NUTS tuning steps per chain (--method full)."),
    chains: int = typer.Option(4, help="NUTS chains (--method full)."),
    seed: int = typer.Option(0, help="Seed of the perturbations and the sampler."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model file (default: the shipped model)."),
) -> None:
    """Systematics sweep: extinction, membership, age scale, calibration ages, model; error budget."""
    import json

    from .analysis.systematics import systematics_sweep
    from .data.catalogue import load_catalogue
    from .flows.artifact import load_model

    df = _read_user_table(file)
    calibration = load_catalogue() if refits else None
    res = systematics_sweep(df, cluster, by=by, model=load_model(model), reddening_sigma=reddening_sigma, age_scale_dex=age_scale,
                            calibration_catalogue=calibration, calibration_scale_dex=calibration_scale,
                            n_calibration=n_calibration, seed=seed, progress=not as_json, method=method,
                            full_kwargs={"draws": draws, "tune": tune, "chains": chains, "seed": seed})  # fmt: skip
    if plot is not None:
        from .plotting import plot_budget

        plot_budget(res, path=plot)
    if as_json:
        print(json.dumps(res.to_dict()))
        return
    out.print(res.to_markdown(), markup=False, highlight=False, soft_wrap=True)


@validate_app.command("budgets")
def validate_budgets(
    out_file: Path = typer.Option(Path("budgets.md"), "--out", callback=_check_output, help="Markdown table to write (a .csv and a .png beside it)."),
    catalogue: Optional[Path] = typer.Option(None, "--catalogue", help="Default: $CHRONOFLOW_CATALOGUE or the published catalogue."),
    cluster: Optional[list[str]] = typer.Option(None, "--cluster", help="Only these clusters (repeatable)."),
    loo: Optional[Path] = typer.Option(None, "--loo", help="A calibrated loo.csv: compare every total with the cluster's leave-one-out residual."),
    n_calibration: int = typer.Option(2, help="Perturbed calibration refits per cluster (plus an unperturbed and a null one)."),
    jobs: int = typer.Option(2, help="Clusters swept in parallel."),
    seed: int = typer.Option(0, help="Seed of the perturbations."),
    table_file: Optional[Path] = typer.Option(None, "--table", help="Rewrite the report from this earlier budgets CSV instead of sweeping."),
) -> None:
    """Error budget of every catalogue cluster (each without itself in its calibration refits)."""
    import time

    import pandas as pd

    from .analysis.budgets import budget_table, with_total_relative
    from .analysis.reports import budgets_report, describe_sweep
    from .data.catalogue import load_catalogue

    if loo is not None and not loo.is_file():
        raise ChronoflowError(f"--loo {loo}: file not found")
    t0 = time.perf_counter()
    if table_file is not None:
        if not table_file.is_file():
            raise ChronoflowError(f"--table {table_file}: file not found")
        table = with_total_relative(pd.read_csv(table_file))
    else:
        table = budget_table(load_catalogue(catalogue), cluster, jobs=jobs, n_calibration=n_calibration, seed=seed)
    table.to_csv(out_file.with_suffix(".csv"), index=False)
    from .plotting import plot_budgets

    plot_budgets(table, path=out_file.with_suffix(".png"))
    settings = describe_sweep(n_calibration=n_calibration, seed=seed, jobs=jobs, run_time_s=time.perf_counter() - t0,
                              rewritten_from=table_file.name if table_file is not None else None)
    text = budgets_report(table, loo=pd.read_csv(loo) if loo is not None else None, settings=settings,
                          figure=out_file.with_suffix(".png").name)  # fmt: skip
    out_file.write_text(text)
    out.print(text.splitlines()[-1], markup=False)


@validate_app.command("loo")
def validate_loo(
    out_file: Path = typer.Option(Path("loo.md"), "--out", callback=_check_output, help="Markdown table to write (a .csv and a .png beside it)."),
    catalogue: Optional[Path] = typer.Option(None, "--catalogue", help="Default: $CHRONOFLOW_CATALOGUE or the published catalogue."),
    cluster: Optional[list[str]] = typer.Option(None, "--cluster", help="Only these clusters (repeatable)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model whose recipe is validated (default: the shipped model)."),
    members: Optional[int] = typer.Option(None, help="Members per fold (default: the model's; fewer allowed, stated in the output)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of every member (default: each member's early-stopped count in the card)."),
    jobs: int = typer.Option(2, help="Folds trained in parallel."),
    calibrate: Optional[Path] = typer.Option(None, help="Write the calibrated model-error term into this model file's card."),
    before: Optional[Path] = typer.Option(None, help="An earlier loo.csv to compare with, side by side."),
    subsets: Optional[list[int]] = typer.Option(None, "--subset", help="Also age with the first k members (repeatable), to choose K."),
    table_file: Optional[Path] = typer.Option(None, "--table", help="Recalibrate from this earlier loo CSV (all member counts) instead of retraining."),
) -> None:
    """Leave-one-cluster-out: retrain the whole recipe without each cluster, age it, calibrate the model error."""
    import pandas as pd

    from .analysis.reports import loo_report
    from .analysis.validation import (
        calibrate_loo,
        describe_recipe,
        leave_one_out,
        loo_metrics,
    )
    from .data.catalogue import load_catalogue
    from .flows.artifact import load_model, save_model
    from .flows.ensemble import card_members
    from .flows.flow import FlowConfig
    from .flows.training import TrainConfig

    flow = load_model(model)
    card = flow.card
    n_total, bootstrap, member_epochs = card_members(card)
    k = members or n_total
    if not 1 <= k <= n_total:
        raise ChronoflowError(f"--members {k}: the model has {n_total} members; allowed: 1 to {n_total}")
    budgets = [epochs] * k if epochs else member_epochs[:k]
    config = TrainConfig.from_dict(card["training"])
    if table_file is not None:
        if not table_file.is_file():
            raise ChronoflowError(f"--table {table_file}: file not found")
        table = pd.read_csv(table_file)
        if k not in set(table["n_members"]):
            raise ChronoflowError(f"--table {table_file} has no rows with {k} members (has {sorted(set(table['n_members']))})")
    else:
        table = leave_one_out(load_catalogue(catalogue), cluster, flow_config=FlowConfig(**card["architecture"]), config=config,
                              n_members=k, bootstrap=bootstrap, epochs=budgets, seed=config.seed, jobs=jobs,
                              subsets=subsets)  # fmt: skip
    per_k = {int(n): calibrate_loo(table[table["n_members"] == n])[0] for n in sorted(table["n_members"].unique())}
    table, curve = calibrate_loo(table[table["n_members"] == k])
    metrics = loo_metrics(table)
    table.to_csv(out_file.with_suffix(".csv"), index=False)
    from .plotting import plot_loo

    plot_loo(table, path=out_file.with_suffix(".png"))
    previous = pd.read_csv(before) if before is not None else None
    recipe = describe_recipe(FlowConfig(**card["architecture"]), config, n_members=k, n_total=n_total,
                             bootstrap=bootstrap, epochs=budgets)
    text = loo_report(table, metrics, recipe=recipe, figure=out_file.with_suffix(".png").name, before=previous,
                      by_members={n: loo_metrics(t) for n, t in per_k.items()} if len(per_k) > 1 else None)
    if len(per_k) > 1:
        pd.concat(per_k.values()).to_csv(out_file.with_name(out_file.stem + "_members.csv"), index=False)
    out_file.write_text(text)
    out.print(text, markup=False)
    if calibrate is not None:
        target = load_model(calibrate)
        target.card["model_error"] = {
            "curve": curve.to_dict(),
            "source": f"chronoflow validate loo: {recipe}",
            "loo_metrics": metrics,
        }
        save_model(target, calibrate, card=target.card)
        out.print(f"[green]wrote[/green] the model-error term into {escape(str(calibrate))}")


@validate_app.command("ppc")
def validate_ppc(
    out_file: Path = typer.Option(Path("ppc.md"), "--out", callback=_check_output, help="Markdown table to write (a .csv beside it too)."),
    catalogue: Optional[Path] = typer.Option(None, "--catalogue", help="Default: $CHRONOFLOW_CATALOGUE or the published catalogue."),
    plot: Optional[Path] = typer.Option(None, "--plot", callback=_check_output, help="Save a heat map of the KS distances."),
) -> None:
    """Posterior predictive check: KS distance of observed vs model log Prot per cluster and colour bin."""
    from .analysis.calibration import predictive_check
    from .analysis.reports import ppc_report
    from .data.catalogue import load_catalogue
    from .flows.artifact import load_model

    table = predictive_check(load_catalogue(catalogue), load_model())
    table.to_csv(out_file.with_suffix(".csv"), index=False)
    report = ppc_report(table)
    out_file.write_text(report)
    out.print(report.strip().splitlines()[-1], markup=False)
    if plot is not None:
        from .plotting import plot_ppc

        plot_ppc(table, path=plot)


@validate_app.command("coverage")
def validate_coverage(
    out_file: Path = typer.Option(Path("coverage.md"), "--out", callback=_check_output, help="Markdown table to write."),
    n_clusters: int = typer.Option(100, help="Synthetic clusters."),
    n_stars: int = typer.Option(100, help="Rows per synthetic cluster."),
    f_field: float = typer.Option(0.1, help="Field contamination per cluster."),
    f_outlier: float = typer.Option(0.05, help="Outlier fraction of members."),
    n_single: int = typer.Option(2000, help="Synthetic single stars."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Coverage of the fast 68 % / 95 % age intervals on synthetic clusters and single stars."""
    import time

    from .analysis.calibration import age_coverage
    from .analysis.reports import coverage_report
    from .flows.artifact import load_model

    t0 = time.perf_counter()
    cov = age_coverage(load_model(), n_clusters=n_clusters, n_stars=n_stars, f_field=f_field, f_outlier=f_outlier,
                       n_single=n_single, seed=seed)
    report = coverage_report(cov, sample=f"{n_stars} rows, field {f_field:g}, outliers {f_outlier:g}",
                             note=f"Seed {seed}; run time {time.perf_counter() - t0:.0f} s.")
    out_file.write_text(report)
    out.print(report.strip(), markup=False)


def main() -> None:
    """Entry point of the ``chronoflow`` console script."""
    try:
        app(standalone_mode=False)
    except ChronoflowError as exc:
        err.print(f"[red]error:[/red] {escape(in_cli_words(str(exc), sys.argv[1:]))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except OSError as exc:  # a full disk, a folder removed meanwhile, a permission: one line naming the path
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        err.print(f"[red]error:[/red] {escape(where + (exc.strerror or first_line(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        if _is_click_exception(exc):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def _cli_options(argv: list[str] | None = None) -> dict[str, str]:
    """Python argument name -> the CLI option that sets it (its first long form): of the command
    that ``argv`` runs (``["forward", "--n", "0"]``: the options of ``forward`` only), or, without
    one, of every command (the first command that has the name wins)."""
    import typer.main

    names: dict[str, str] = {}
    command = typer.main.get_command(app)
    for token in argv or []:  # follow the command path: forward, validate loo, ...
        subs = getattr(command, "commands", None)
        if not subs or token not in subs:
            break
        command = subs[token]

    def walk(cmd):
        for param in getattr(cmd, "params", []):
            longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
            if longs and param.name:
                names.setdefault(param.name, longs[0])
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(command)
    return names


def in_cli_words(message: str, argv: list[str] | None = None) -> str:
    """An error message of the Python API in the words of the command line: ``membership=None``
    becomes ``--membership none``, ``cluster=NAME`` ``--cluster NAME``, and an argument name with
    an underscore (``f_out``) its option (``--f-out``), wherever the command that ``argv`` runs has
    that option (without ``argv``: any command)."""
    options = _cli_options(argv)

    def assignment(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if name not in options:
            return m.group(0)
        return f"{options[name]} {'none' if value == 'None' else value}"

    message = re.sub(r"(?<![\w-])([a-z_][a-z0-9_]*)=([^\s,;)]+)", assignment, message)
    return re.sub(r"(?<![\w-])([a-z]+(?:_[a-z0-9]+)+)\b", lambda m: options.get(m.group(1), m.group(1)), message)


def _is_click_exception(exc: BaseException) -> bool:
    """A usage error of click, or of the click that typer >= 0.29 vendors (``typer._click``),
    whose exceptions derive from the public ``typer.TyperException`` instead."""
    import click

    kinds = (click.ClickException,) + ((typer.TyperException,) if hasattr(typer, "TyperException") else ())
    return isinstance(exc, kinds) and hasattr(exc, "show") and hasattr(exc, "exit_code")


if __name__ == "__main__":
    main()
