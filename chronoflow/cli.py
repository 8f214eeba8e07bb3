"""Command-line interface: ``chronoflow --help``.

Every command reports user errors (:class:`~chronoflow.errors.ChronoflowError`) as one red line
on stderr and exits with status 2; no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ._version import __version__
from .errors import ChronoflowError

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

out = Console()
err = Console(stderr=True)


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
    from .catalogue import load_catalogue, summarize, training_sample

    df = load_catalogue(file)
    table = Table(title=f"{len(df)} stars in {df[by].nunique()} {by}s")
    for name in (by, "N", "age [Myr]", "(BP-RP)0 range [mag]", "median Prot [d]"):
        table.add_column(name, justify="left" if name == by else "right")
    for name, row in summarize(df, by=by).iterrows():
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
    from .catalogue import load_catalogue

    df = load_catalogue(file)
    out.print(f"[green]ok[/green]: {file} has {len(df)} valid rows")


@app.command("train")
def train_command(
    out_file: Path = typer.Option(..., "--out", help="Where to write the model file (*.pt)."),
    catalogue: Optional[Path] = typer.Option(
        None, "--catalogue", help="Training catalogue. Default: $CHRONOFLOW_CATALOGUE or the published catalogue."
    ),
    seed: int = typer.Option(0, help="Seed for initialisation, batch order and the validation split."),
    max_epochs: Optional[int] = typer.Option(None, help="Epoch budget (default: the TrainConfig default)."),
    membership_weighted: bool = typer.Option(False, help="Weight each star by its membership probability."),
    refit_all: bool = typer.Option(True, help="Refit on all clusters after early stopping on held-out clusters."),
    val_cluster: Optional[list[str]] = typer.Option(None, help="Validation cluster (repeatable); default: chosen by seed."),
    threads: int = typer.Option(1, help="torch threads."),
    overwrite: bool = typer.Option(False, help="Replace an existing model file."),
) -> None:
    """Train the flow (and the Gaussian baseline) with the published cuts; write model + card."""
    import dataclasses

    from .artifact import save_model
    from .catalogue import load_catalogue
    from .training import TrainConfig, train

    if out_file.exists() and not overwrite:
        raise ChronoflowError(f"{out_file} exists; pass --overwrite to replace it")
    config = TrainConfig(seed=seed, membership_weighted=membership_weighted, refit_all=refit_all, threads=threads)
    if max_epochs is not None:
        config = dataclasses.replace(config, max_epochs=max_epochs)
    if val_cluster:
        config = dataclasses.replace(config, val_clusters=tuple(val_cluster))
    result = train(load_catalogue(catalogue), config=config, progress=True)
    save_model(result.model, out_file)
    _print_card(result.card)
    out.print(f"[green]wrote[/green] {out_file}")


def _print_card(card: dict) -> None:
    arch = card["architecture"]
    table = Table(title="chronoflow model card", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("created", card.get("created", "?")),
        ("chronoflow / torch / nflows", f"{card.get('chronoflow_version')} / {card.get('torch_version')} / {card.get('nflows_version')}"),
        ("architecture", f"{arch['kind']}: {arch['n_transforms']} transforms x {arch['n_bins']} bins, MLP {arch['n_hidden_layers']}x{arch['hidden']}, tails +-{arch['tail_bound']:g}"),
        ("parameters", str(card.get("n_parameters"))),
        ("training catalogue sha256", card.get("catalogue_sha256", "?")),
        ("training stars / clusters", f"{card.get('n_training_stars')} / {len(card.get('clusters', []))}"),
        ("seed", str(card.get("training", {}).get("seed"))),
        ("validation clusters", ", ".join(card.get("split", {}).get("val_clusters", [])) or "-"),
        ("epochs (split best / final)", f"{card.get('epochs', {}).get('flow_split_best')} / {card.get('epochs', {}).get('final')}"),
    ]
    dom = card["training_domain"]
    rows.append(("domain: log10 age [Myr]", "{:.3f} - {:.3f}".format(*dom["log10_age_myr"])))
    rows.append(("domain: (BP-RP)0 [mag]", "{:.3f} - {:.3f}".format(*dom["bprp0"])))
    rows.append(("domain: log10 e_(BP-RP)0", "{:.3f} - {:.3f}".format(*dom["log10_e_bprp0"])))
    for name in ("flow", "baseline"):
        v = card.get("validation", {}).get(name)
        if v:
            rows.append(
                (f"held-out NLL ({name})", f"{v['nll']:.4f} nats/star; PIT KS {v['pit_ks']:.3f}, coverage 68% {v['coverage_68']:.3f}, 95% {v['coverage_95']:.3f}")
            )
    rows.append(("training wall time", f"{card.get('wall_time_s')} s"))
    for k, v in rows:
        table.add_row(k, str(v))
    out.print(table)


@model_app.command("info")
def model_info(
    model: Optional[Path] = typer.Option(None, "--model", help="Model file. Default: $CHRONOFLOW_MODEL or the shipped model."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole card as JSON."),
) -> None:
    """Print the model card of the model in use (the shipped pretrained model by default)."""
    import json

    from .artifact import load_model

    card = load_model(model).card
    if as_json:
        print(json.dumps(card, indent=2, sort_keys=True))
    else:
        _print_card(card)


def main() -> None:
    """Entry point of the ``chronoflow`` console script."""
    try:
        app(standalone_mode=False)
    except ChronoflowError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
