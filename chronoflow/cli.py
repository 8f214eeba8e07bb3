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
