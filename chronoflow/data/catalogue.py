"""The rotator catalogue: load, validate, select the training sample, extend and save.

The catalogue is a table with one row per star: a rotation period ``Prot`` [d], the de-reddened
Gaia colour ``BPRP_0`` [mag] and its error ``e_BPRP_0`` [mag], a membership probability and the
fiducial (literature) age of the star's cluster ``fiducial_age_Myr`` [Myr]. The published
catalogue (Van-Lane et al., ChronoFlow) is registered in ``catalogs/registry.toml`` and is
downloaded once into the user cache with a pinned checksum.
"""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._cache import fetch_verified, file_sha256
from ..errors import CatalogueError, first_line
from .tables import UNITS, like_input, to_frame

__all__ = [
    "check_table_file",
    "CATALOGUE_ENV",
    "COLUMNS",
    "MINIMAL_COLUMNS",
    "REVISED_CLUSTERS",
    "add_cluster",
    "catalogue_registry",
    "load_catalogue",
    "read_table",
    "save_catalogue",
    "summarize",
    "training_sample",
    "validate_catalogue",
]

#: Clusters whose fiducial ages the ChronoFlow paper revised: their model ages differ from the
#: catalogue's labels by 0.2-0.35 dex, as expected.
REVISED_CLUSTERS = ("M34", "NGC2516", "NGC1750", "NGC1647")

#: Environment variable naming a local catalogue file (offline use).
CATALOGUE_ENV = "CHRONOFLOW_CATALOGUE"


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str  # "int", "float", "str", "flag"
    nullable: bool = False
    low: float | None = None  # inclusive unless low_open
    high: float | None = None
    low_open: bool = False
    allowed: str = ""  # how the rule reads in an error message


#: The catalogue schema (version 1), in the published column order.
COLUMNS: tuple[_Column, ...] = (
    _Column("GaiaDR3_ID", "int", allowed="a unique integer Gaia DR3 source id"),
    _Column("cluster", "str", allowed="a non-empty cluster name"),
    _Column("subgroup", "str", allowed="a non-empty subgroup name"),
    _Column("data_catalog", "str", allowed="a source name"),
    _Column("Prot_source", "str", allowed="a source name"),
    _Column("Prot", "float", low=0, low_open=True, allowed="a finite period > 0 d"),
    _Column("mem_prob_hdbscan", "float", nullable=True, low=0, high=1, allowed="a probability in [0, 1] or NULL"),
    _Column("mem_prob_source", "float", low=0, high=1, allowed="a probability in [0, 1]"),
    _Column("dr3_parallax_zpt_corrected", "float", nullable=True, allowed="a parallax in mas or NULL"),
    _Column("dr3_ruwe", "float", nullable=True, low=0, low_open=True, allowed="a RUWE > 0 or NULL"),
    _Column("G_0", "float", nullable=True, allowed="a magnitude or NULL"),
    _Column("BPRP_0", "float", nullable=True, allowed="a colour in mag or NULL"),
    _Column("e_BPRP_0", "float", nullable=True, low=0, low_open=True, allowed="an error > 0 mag or NULL"),
    _Column("dustmap", "str", allowed="a dust map name"),
    _Column("fiducial_age_Myr", "float", low=0, low_open=True, allowed="a finite age > 0 Myr"),
    _Column("cmd_exclude", "flag", allowed="0 or 1"),
    _Column("dered_exclude", "flag", allowed="0 or 1"),
    _Column("phot_exclude", "flag", allowed="0 or 1"),
)
_BY_NAME = {c.name: c for c in COLUMNS}

#: The minimal schema accepted by :func:`add_cluster`, with the aliases it understands.
MINIMAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "Prot": ("Prot", "prot", "period", "prot_d"),
    "BPRP_0": ("BPRP_0", "bprp0", "bp_rp0", "colour", "color"),
    "e_BPRP_0": ("e_BPRP_0", "e_bprp0", "colour_err", "color_err"),
    "mem_prob_source": ("mem_prob_source", "membership", "p_member"),
    "fiducial_age_Myr": ("fiducial_age_Myr", "age_myr", "age"),
}


# --------------------------------------------------------------------------------------------
# Registry and loading
# --------------------------------------------------------------------------------------------
def catalogue_registry() -> dict[str, Any]:
    """Return the registry of known catalogues (``catalogs/registry.toml``) as a dict.

    Each entry has ``url``, ``sha256``, ``filename``, ``citation``, ``doi`` and
    ``schema_version``; ``registry["default"]`` names the default entry.
    """
    text = resources.files("chronoflow.catalogs").joinpath("registry.toml").read_text()
    return tomllib.loads(text)


#: The catalogue's missing value in CSV files (written for every missing value, read as missing).
CSV_NULL = "NULL"

#: How CSV files are read: ``NULL`` (the catalogue's missing value) or an empty field is missing;
#: keep_default_na=False keeps names like "NA" intact. pandas 2's default number parser is off by
#: an ulp for some values; "round_trip" parses to the nearest float, as pandas 3 does by default
#: (it deprecates the option), so both read the same table (and the same content checksum).
#: index_col=False: a data row with more fields than the header (a trailing comma) is read into
#: the header's columns; by default pandas would make the first fields the index and shift every
#: column one place left (Prot read from the BPRP_0 field).
CSV_READ_OPTIONS: dict[str, Any] = {"na_values": [CSV_NULL, ""], "keep_default_na": False, "index_col": False,
                                    **({"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {})}


def check_table_file(path: str | os.PathLike) -> None:
    """Refuse, in one line, a file that cannot be a table of stars: a folder, a missing or empty
    file, and for CSV a header with a duplicated column (pandas would silently rename the second
    ``Prot`` to ``Prot.1`` and age the first) or a semicolon-separated header.

    Raises
    ------
    CatalogueError
    """
    path = Path(path)
    if path.is_dir():
        raise CatalogueError(f"{path} is a folder, not a table file; allowed: a CSV, Parquet or FITS file")
    if not path.is_file():
        raise CatalogueError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise CatalogueError(f"{path} is empty; allowed: a CSV, Parquet or FITS table with a header row")
    if path.suffix.lower() in {".parquet", ".pq", ".fits", ".fit"}:
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip().lstrip("\ufeff")
    if ";" in header and "," not in header:
        raise CatalogueError(f"{path.name} looks semicolon-separated (its header: {header[:60]!r}); chronoflow reads "
                             "comma-separated CSV: convert it, e.g. pandas.read_csv(FILE, sep=';').to_csv(NEW, index=False)")
    names = [n.strip().strip('"') for n in header.split(",")]
    seen = {n for n in names if names.count(n) > 1 and n}
    if seen:
        raise CatalogueError(f"{path.name}: column{'s' * (len(seen) > 1)} {', '.join(map(repr, sorted(seen)))} "
                             f"appear{'s' * (len(seen) == 1)} more than once in the header; allowed: each column once")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV (``NULL`` or empty = missing), Parquet or FITS table as it is (no schema check;
    :func:`load_catalogue` validates). The file is first checked by :func:`check_table_file`."""
    path = Path(path)
    check_table_file(path)
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    if suffix in {".fits", ".fit"}:
        from astropy.table import Table

        return to_frame(Table.read(path), what=path.name)[0]  # columns with units converted to the package's
    return pd.read_csv(path, **CSV_READ_OPTIONS)


def load_catalogue(
    path: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    validate: bool = True,
) -> pd.DataFrame:
    """Load a rotator catalogue.

    The file is found in this order: ``path``; else the ``CHRONOFLOW_CATALOGUE`` environment
    variable; else the registered catalogue ``name`` (default: the published ChronoFlow
    catalogue), downloaded once into the user cache and verified against its pinned sha256.

    Parameters
    ----------
    path
        A CSV (``NULL`` = missing), Parquet or FITS file in the catalogue schema.
    name
        Registry entry to download when no path is given (see :func:`catalogue_registry`).
    validate
        Check the schema (:func:`validate_catalogue`); on by default.

    Returns
    -------
    pandas.DataFrame
        One row per star; ``Prot`` [d], ``BPRP_0`` and ``e_BPRP_0`` [mag],
        ``fiducial_age_Myr`` [Myr], ``dr3_parallax_zpt_corrected`` [mas].

    Raises
    ------
    CatalogueError
        Missing file, failed download or checksum, or a schema violation.

    Examples
    --------
    >>> df = load_catalogue(os.environ["CHRONOFLOW_CATALOGUE"])  # doctest: +SKIP
    >>> df.groupby("cluster").size()["Pleiades"]  # doctest: +SKIP
    864
    """
    if path is None and os.environ.get(CATALOGUE_ENV):
        path = os.environ[CATALOGUE_ENV]
    if path is None:
        registry = catalogue_registry()
        key = name or registry["default"]
        try:
            entry = registry["catalogues"][key]
        except KeyError:
            known = ", ".join(sorted(registry["catalogues"]))
            raise CatalogueError(f"unknown catalogue {key!r}; known: {known}") from None
        path = fetch_verified(entry["url"], entry["sha256"], entry["filename"])
    path = Path(path).expanduser()
    if not path.is_file():
        raise CatalogueError(
            f"catalogue file not found: {path} (pass an existing CSV/Parquet/FITS path, "
            f"or set {CATALOGUE_ENV})"
        )
    try:
        df = read_table(path)
    except Exception as exc:
        raise CatalogueError(f"could not read catalogue {path}: {type(exc).__name__}: {first_line(exc)}") from None
    if validate:
        validate_catalogue(df)
    # Provenance travels with the table: training records it in the model card.
    df.attrs["source"] = path.name
    df.attrs["sha256"] = file_sha256(path)
    df.attrs["n_rows"] = len(df)
    return df


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _describe_rows(df: pd.DataFrame, mask: np.ndarray, limit: int = 3) -> str:
    idx = np.flatnonzero(mask)
    parts = []
    for i in idx[:limit]:
        if "GaiaDR3_ID" in df.columns and pd.notna(df["GaiaDR3_ID"].iloc[i]):
            parts.append(f"GaiaDR3_ID {int(df['GaiaDR3_ID'].iloc[i])} (row {i})")
        else:
            parts.append(f"row {i}")
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return ", ".join(parts) + more


def _fail(df: pd.DataFrame, col: _Column, mask: np.ndarray, problem: str) -> None:
    n = int(mask.sum())
    first = df[col.name].to_numpy()[np.flatnonzero(mask)[0]]
    first = first.item() if isinstance(first, np.generic) else first
    raise CatalogueError(
        f"column {col.name!r}: {n} bad row{'s' * (n != 1)} ({problem}): first value {first!r} at "
        f"{_describe_rows(df, mask)}; allowed: {col.allowed}"
    )


def _numbers(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _column_checks(col: _Column) -> list:
    """The pandera checks of one schema column, in the order their violations are reported.

    Each check sees the whole column (nulls included, ``ignore_na=False``) and returns a boolean
    Series; its ``error`` is the problem named in the message of :func:`validate_catalogue`.
    """
    import pandera.pandas as pa

    def check(problem: str, ok) -> pa.Check:
        return pa.Check(lambda s: pd.Series(np.asarray(ok(s), dtype=bool), index=s.index), error=problem,
                        ignore_na=False, name=problem)  # fmt: skip

    if col.kind == "str":
        return [check("empty or missing", lambda s: s.astype("string").str.strip().fillna("").ne("").to_numpy())]
    checks = [check("not a number", lambda s: ~(np.isnan(_numbers(s)) & s.notna().to_numpy()))]
    if col.nullable:
        checks.append(check("infinite", lambda s: ~np.isinf(_numbers(s))))
    else:
        checks.append(check("missing, NaN or infinite", lambda s: np.isfinite(_numbers(s))))
    absent = lambda v: ~np.isfinite(v)  # noqa: E731 (missing values pass the value rules)
    if col.kind == "flag":
        checks.append(check("not 0 or 1", lambda s: absent(v := _numbers(s)) | np.isin(v, (0.0, 1.0))))
    if col.kind == "int":
        checks.append(check("not an integer", lambda s: absent(v := _numbers(s)) | (v == np.round(v))))
    if col.low is not None:
        low = col.low
        if col.low_open:
            checks.append(check(f"<= {low:g}", lambda s: absent(v := _numbers(s)) | (v > low)))
        else:
            checks.append(check(f"< {low:g}", lambda s: absent(v := _numbers(s)) | (v >= low)))
    if col.high is not None:
        high = col.high
        checks.append(check(f"> {high:g}", lambda s: absent(v := _numbers(s)) | (v <= high)))
    if col.name == "GaiaDR3_ID":
        checks.append(check("repeated id", lambda s: ~s.duplicated(keep=False).to_numpy()))
    return checks


@functools.cache
def _schema():
    """The catalogue schema as a pandera ``DataFrameSchema`` (built once, on first use: pandera
    takes about half a second to import)."""
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {c.name: pa.Column(None, checks=_column_checks(c), nullable=True, required=False) for c in COLUMNS},
        strict=False,
    )


def validate_catalogue(df: pd.DataFrame, columns: tuple[str, ...] | None = None) -> None:
    """Check a catalogue table against the schema; raise one clear error on the first violation.

    Checks, per column: presence, dtype, missing values where not allowed, ranges
    (``Prot`` > 0 d, membership in [0, 1], ages > 0 Myr, errors > 0 mag), flags in {0, 1}
    and unique ``GaiaDR3_ID``. The rules are a pandera schema; the first violation (columns in
    schema order, then the rules of a column in the order above) is reported.

    Parameters
    ----------
    df
        The table.
    columns
        Columns to require and check (default: the full schema, :data:`COLUMNS`). Columns of
        the schema that are present but not required are checked too.

    Raises
    ------
    CatalogueError
        Naming the column, the first offending rows (by ``GaiaDR3_ID`` or row number) and what
        is allowed.
    """
    import pandera.errors

    df = to_frame(df, what="the catalogue")[0]
    required = tuple(c.name for c in COLUMNS) if columns is None else tuple(columns)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CatalogueError(
            f"missing column{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}; "
            f"the catalogue schema requires: {', '.join(required)}"
        )
    try:  # on positional row labels, so that a failure case's index is its row number
        _schema().validate(df.reset_index(drop=True), lazy=False)
    except pandera.errors.SchemaError as err:
        col = _BY_NAME[err.schema.name]
        mask = np.zeros(len(df), dtype=bool)
        mask[err.failure_cases["index"].to_numpy(dtype=int)] = True
        _fail(df, col, mask, err.check.error)
        raise  # _fail always raises; an error with no failing row is not expected


# --------------------------------------------------------------------------------------------
# Training sample
# --------------------------------------------------------------------------------------------
def training_sample(
    df: pd.DataFrame,
    *,
    ruwe_max: float = 1.4,
    exclude_cmd: bool = True,
    require_dereddened: bool = True,
    require_photometry: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the published training cuts and report what each one removed.

    The cuts, applied in this order: ``cmd_exclude == 0`` (post-main-sequence stars),
    ``dered_exclude == 0`` (no extinction), ``phot_exclude == 0`` (incomplete photometry),
    ``dr3_ruwe < ruwe_max`` (likely binaries; a missing RUWE fails the cut).

    Parameters
    ----------
    df
        A validated catalogue.
    ruwe_max
        Upper RUWE limit (exclusive); ``None`` disables the cut.
    exclude_cmd, require_dereddened, require_photometry
        Switch the flag cuts on or off.

    Returns
    -------
    kept : pandas.DataFrame
        The rows that pass every cut (a copy; index preserved).
    report : pandas.DataFrame
        One row per cut: ``cut``, ``removed`` (rows removed by this cut after the previous
        ones) and ``remaining``.

    Examples
    --------
    >>> kept, report = training_sample(load_catalogue())  # doctest: +SKIP
    """
    cuts: list[tuple[str, pd.Series]] = []
    if exclude_cmd:
        cuts.append(("cmd_exclude == 0", df["cmd_exclude"] == 0))
    if require_dereddened:
        cuts.append(("dered_exclude == 0", df["dered_exclude"] == 0))
    if require_photometry:
        cuts.append(("phot_exclude == 0", df["phot_exclude"] == 0))
    if ruwe_max is not None:
        # NaN < x is False, so a missing RUWE fails the cut, as in the paper.
        cuts.append((f"dr3_ruwe < {ruwe_max:g}", df["dr3_ruwe"] < ruwe_max))
    keep = pd.Series(True, index=df.index)
    rows = []
    for label, passed in cuts:
        before = int(keep.sum())
        keep &= passed.fillna(False).astype(bool)
        rows.append({"cut": label, "removed": before - int(keep.sum()), "remaining": int(keep.sum())})
    # Cuts may leave a row without a colour (e.g. when dered_exclude is disabled); say so.
    report = pd.DataFrame(rows, columns=["cut", "removed", "remaining"])
    return df.loc[keep].copy(), report


# --------------------------------------------------------------------------------------------
# Extending and saving
# --------------------------------------------------------------------------------------------
def _from_minimal(rows: pd.DataFrame, cluster: str | None, age_myr: float | None) -> pd.DataFrame:
    out = pd.DataFrame(index=rows.index)
    lower = {c.lower(): c for c in rows.columns}
    used: set[str] = set()
    for target, aliases in MINIMAL_COLUMNS.items():
        source = next((lower[a.lower()] for a in aliases if a.lower() in lower), None)
        if source is not None:
            out[target] = rows[source]
            used.add(source)
        elif target == "fiducial_age_Myr" and age_myr is not None:
            out[target] = float(age_myr)
        elif target == "mem_prob_source":
            out[target] = 1.0
        else:
            raise CatalogueError(
                f"missing column {target!r} (also accepted: {', '.join(aliases[1:])}); a new "
                "cluster needs Prot [d], BPRP_0 [mag], e_BPRP_0 [mag], membership and age [Myr]"
            )
    for col in rows.columns:  # keep every column the user gave
        if col not in used:
            out[col] = rows[col]
    return out


def add_cluster(
    catalogue: pd.DataFrame,
    rows: pd.DataFrame,
    *,
    cluster: str | None = None,
    age_myr: float | None = None,
    source: str = "user",
) -> pd.DataFrame:
    """Append a user's cluster to a catalogue, validated, keeping every column.

    ``rows`` may be in the full catalogue schema, or in the minimal schema: ``Prot`` [d],
    ``BPRP_0`` [mag], ``e_BPRP_0`` [mag], membership (``mem_prob_source``; default 1) and age
    (``fiducial_age_Myr`` [Myr], or the ``age_myr`` argument). Missing schema columns are filled:
    flags with 0, ``subgroup`` with the cluster name, sources with ``source``, the rest with
    NULL. Rows without ``GaiaDR3_ID`` get negative placeholder ids (below any existing id), so
    they never collide with a Gaia source id. Note that a missing RUWE fails the RUWE cut of
    :func:`training_sample`; pass ``ruwe_max=None`` there to keep such rows.

    Parameters
    ----------
    catalogue
        The existing catalogue (not modified).
    rows
        The new stars.
    cluster
        Cluster name for rows that have no ``cluster`` column.
    age_myr
        Fiducial age [Myr] for rows that have no age column.
    source
        Label written to ``data_catalog``, ``Prot_source`` and ``dustmap`` when absent.

    Returns
    -------
    pandas.DataFrame
        A new table: the catalogue followed by the validated new rows.

    Raises
    ------
    CatalogueError
        On a schema violation, a missing cluster name, or a ``GaiaDR3_ID`` already present.
    """
    catalogue, origin = to_frame(catalogue, what="the catalogue")
    alias_units = {alias: UNITS[name] for name, aliases in MINIMAL_COLUMNS.items() if name in UNITS for alias in aliases}
    rows = to_frame(rows, what="the new rows", units=alias_units)[0]
    if len(rows) == 0:
        raise CatalogueError("no rows to add: the new cluster table is empty")
    full = set(c.name for c in COLUMNS) <= set(rows.columns)
    new = rows.copy() if full else _from_minimal(rows, cluster, age_myr)
    if "cluster" not in new.columns:
        if cluster is None:
            raise CatalogueError("missing column 'cluster': pass cluster='NAME' for the new rows")
        new["cluster"] = cluster
    new["subgroup"] = new["subgroup"] if "subgroup" in new.columns else new["cluster"]
    for col in ("data_catalog", "Prot_source", "dustmap"):
        if col not in new.columns:
            new[col] = source
    for col in ("cmd_exclude", "dered_exclude", "phot_exclude"):
        if col not in new.columns:
            new[col] = 0
    if "GaiaDR3_ID" not in new.columns:
        start = min(int(catalogue["GaiaDR3_ID"].min()) if len(catalogue) else 0, 0) - 1
        new["GaiaDR3_ID"] = np.arange(start, start - len(new), -1, dtype=np.int64)
    for col in COLUMNS:
        if col.name not in new.columns:
            new[col.name] = np.nan
    validate_catalogue(new)
    clash = new["GaiaDR3_ID"].isin(catalogue["GaiaDR3_ID"]).to_numpy()
    if clash.any():
        _fail(new, _BY_NAME["GaiaDR3_ID"], clash, "id already in the catalogue")
    order = [c.name for c in COLUMNS]
    extra = [c for c in list(catalogue.columns) + list(new.columns) if c not in order]
    merged = pd.concat([catalogue, new], ignore_index=True)
    return like_input(merged[order + list(dict.fromkeys(extra))], origin)


def save_catalogue(df: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save a catalogue as CSV (``NULL`` for missing), Parquet or FITS, chosen by the suffix.

    FITS files are written through an astropy Table carrying units: ``Prot`` [d], colours and
    magnitudes [mag], parallax [mas], ages [Myr].

    Parameters
    ----------
    df
        The table.
    path
        Destination ending in ``.csv``, ``.parquet`` or ``.fits``.
    overwrite
        Replace an existing file.

    Returns
    -------
    Path
        The written file.
    """
    df = to_frame(df, what="the catalogue")[0]
    path = Path(path)
    if path.exists() and not overwrite:
        raise CatalogueError(f"{path} exists; pass overwrite=True to replace it")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False, na_rep=CSV_NULL)
    elif suffix in {".parquet", ".pq"}:
        df.to_parquet(path, index=False)
    elif suffix in {".fits", ".fit"}:
        from astropy.table import Table

        units = {name: unit for name, unit in UNITS.items() if name in df.columns}
        Table.from_pandas(df.reset_index(drop=True), units=units).write(path, overwrite=overwrite)
    else:
        raise CatalogueError(f"unknown catalogue format {suffix!r}; allowed: .csv, .parquet, .fits")
    return path


def summarize(df: pd.DataFrame, by: str = "cluster") -> pd.DataFrame:
    """One row per cluster (or subgroup): star count, fiducial age [Myr] and colour range [mag].

    Parameters
    ----------
    df
        A catalogue table.
    by
        The text column to group on: ``cluster`` (default), ``subgroup``, or another text
        column of ``df`` (e.g. ``data_catalog``).

    Returns
    -------
    pandas.DataFrame
        Indexed by the groups, sorted by age: ``n_stars``, ``age_myr`` (median fiducial age
        [Myr]), ``bprp0_min`` and ``bprp0_max`` [mag], ``prot_median_d`` [d].

    Raises
    ------
    CatalogueError
        ``by`` is not a text column of ``df``; the message lists the ones that are.
    """
    allowed = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if by not in allowed:
        what = "a numeric column" if by in df.columns else "not a column of the catalogue"
        choices = ", ".join(map(repr, allowed)) or "none (the table has no text column)"
        raise CatalogueError(f"cannot summarize by {by!r}: {what}; group by one of: {choices}")
    grouped = df.groupby(by, sort=False)
    out = pd.DataFrame(
        {
            "n_stars": grouped.size(),
            "age_myr": grouped["fiducial_age_Myr"].median(),
            "bprp0_min": grouped["BPRP_0"].min(),
            "bprp0_max": grouped["BPRP_0"].max(),
            "prot_median_d": grouped["Prot"].median(),
        }
    )
    return out.sort_values("age_myr")
