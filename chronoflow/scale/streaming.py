"""Ageing tables larger than memory: read in chunks, age each chunk, append to one output file.

:func:`age_stars_file` streams a CSV or Parquet table of single stars through
:func:`chronoflow.inference.ages.star_ages` a chunk of rows at a time and appends the results to a Parquet
(or CSV) file, so memory stays bounded by the chunk size whatever the size of the input. Each
star's posterior depends on that star alone, so the output equals the in-memory
``star_ages(whole_table)`` row for row, to floating-point rounding: the matrix products run in
batches of other sizes, which moved 2 of a million ages by at most 7e-10 dex in the benchmark. Rows that cannot be aged are kept and flagged, never
dropped (see :func:`chronoflow.inference.ages.star_flags`).

The same per-chunk step (:func:`age_chunk`) is what each Dask partition runs in
:mod:`chronoflow.scale.dask_backend`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.catalogue import CSV_NULL, CSV_READ_OPTIONS, check_table_file
from ..errors import ChronoflowError, first_line
from ..flows.artifact import resolve_model
from ..flows.flow import RotationModel
from ..inference.ages import star_ages
from ..inference.likelihood import REQUIRED, require_columns
from ..inference.posterior import Prior

__all__ = ["INPUT_SUFFIXES", "OUTPUT_SUFFIXES", "StreamReport", "age_chunk", "age_stars_file", "arrow_schema", "count_rows",
           "file_suffix", "flag_counts", "partial_path", "progress_bar", "table_chunks"]

#: File types the streaming reader takes, and the ones it writes.
INPUT_SUFFIXES = (".csv", ".parquet", ".pq")
OUTPUT_SUFFIXES = (".parquet", ".csv")



@dataclass
class StreamReport:
    """What :func:`age_stars_file` did.

    Attributes
    ----------
    n_rows
        Rows read and written (every input row).
    n_aged
        Rows with an age (the others carry ``missing_value`` or ``nonpositive`` flags).
    n_flagged
        Rows with any flag, including ages outside the training domain.
    n_chunks
        Chunks processed.
    seconds
        Wall time [s].
    output
        The written file.
    """

    n_rows: int
    n_aged: int
    n_flagged: int
    n_chunks: int
    seconds: float
    output: str

    @property
    def stars_per_second(self) -> float:
        """Throughput [stars/s]."""
        return self.n_rows / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        return {**asdict(self), "stars_per_second": self.stars_per_second}


def file_suffix(path: Path, allowed: tuple[str, ...], what: str) -> str:
    """The lower-case suffix of ``path``, or one line when it is not one of ``allowed``."""
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ChronoflowError(f"unknown {what} format {suffix or '(none)'!r} for {path.name}; allowed: {', '.join(allowed)}")
    return suffix


def count_rows(path: str | os.PathLike) -> int:
    """Data rows in a CSV (lines after the header) or Parquet file (from its metadata).

    Used for the progress bar; a CSV with line breaks inside quoted fields is over-counted.
    """
    path = Path(path)
    if file_suffix(path, INPUT_SUFFIXES, "input") != ".csv":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    lines += last != b"\n"  # a last line without a newline
    return max(lines - 1, 0)


def table_chunks(path: str | os.PathLike, chunk_rows: int = 100_000) -> Iterator[pd.DataFrame]:
    """Yield a CSV (``NULL`` = missing) or Parquet table ``chunk_rows`` rows at a time.

    The chunks carry a running integer index (row number in the file), so concatenating them
    gives the table that :func:`pandas.read_csv` / :func:`pandas.read_parquet` would return. An
    empty table gives one empty chunk (with its columns), never none.
    """
    path = Path(path)
    if int(chunk_rows) < 1:
        raise ChronoflowError(f"chunk_rows must be >= 1, got {chunk_rows}")
    check_table_file(path)
    suffix = file_suffix(path, INPUT_SUFFIXES, "input")
    start = 0
    if suffix == ".csv":
        try:
            chunks = pd.read_csv(path, chunksize=int(chunk_rows), **CSV_READ_OPTIONS)
        except Exception as exc:
            raise ChronoflowError(f"could not read {path.name}: {type(exc).__name__}: {first_line(exc)}") from None
    else:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        if parquet.metadata.num_rows == 0:
            chunks = iter([parquet.schema_arrow.empty_table().to_pandas()])
        else:
            chunks = (batch.to_pandas() for batch in parquet.iter_batches(batch_size=int(chunk_rows)))
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except Exception as exc:  # an empty, binary or malformed file: one line, naming it
            raise ChronoflowError(f"could not read {path.name}: {type(exc).__name__}: {first_line(exc)}") from None
        chunk.index = pd.RangeIndex(start, start + len(chunk))
        start += len(chunk)
        yield chunk


def age_chunk(
    chunk: pd.DataFrame, *, model: RotationModel | str | os.PathLike | None = None, prior: Prior = "log-flat", **kwargs: Any
) -> pd.DataFrame:
    """Age one chunk of a file: :func:`~chronoflow.inference.ages.star_ages` with ``Prot``, ``BPRP_0``
    and ``e_BPRP_0`` read as numbers (text that is not a number becomes missing and is flagged
    ``missing_value``), so that every chunk of a file has the same column types.

    Parameters
    ----------
    chunk
        Rows with ``Prot`` [d], ``BPRP_0`` [mag] and ``e_BPRP_0`` [mag]; other columns kept.
    model
        A loaded model, a model file path, or ``None`` for the shipped model.
    prior
        ``"log-flat"`` (default) or ``"flat"`` (in age).
    **kwargs
        Passed to :func:`~chronoflow.inference.ages.star_ages`.

    Returns
    -------
    pandas.DataFrame
        The rows of ``chunk`` (same index and order) plus the age columns and ``flag``.
    """
    require_columns(chunk, REQUIRED)
    chunk = chunk.assign(**{c: pd.to_numeric(chunk[c], errors="coerce").astype("float64") for c in REQUIRED})
    return star_ages(chunk, model=model, prior=prior, **kwargs)


def flag_counts(aged: pd.DataFrame) -> tuple[int, int, int]:
    """Rows, rows with an age, and flagged rows of an aged chunk."""
    return len(aged), int(np.isfinite(aged["log10_age_median"].to_numpy()).sum()), int((aged["flag"] != "").sum())


def arrow_schema(frame: pd.DataFrame):
    """The Arrow schema of the output, with all-missing columns widened so that later chunks fit:
    text-like (object) columns to string, the rest to float64."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    for i, fld in enumerate(schema):
        if pa.types.is_null(fld.type):
            kind = pa.string() if frame[fld.name].dtype == object else pa.float64()
            schema = schema.set(i, pa.field(fld.name, kind))
    return schema


class _Writer:
    """Append chunks to one Parquet file (fixed schema from the first chunk) or one CSV file.

    ``suffix`` (``.parquet`` or ``.csv``) sets the format; default: that of ``path``.
    """

    def __init__(self, path: Path, suffix: str | None = None):
        self.path, self.suffix = path, suffix or file_suffix(path, OUTPUT_SUFFIXES, "output")
        self._parquet = None
        self._schema = None

    def write(self, frame: pd.DataFrame) -> None:
        if self.suffix == ".csv":
            frame.to_csv(self.path, mode="w" if self._schema is None else "a", header=self._schema is None,
                         index=False, na_rep=CSV_NULL)  # fmt: skip
            self._schema = True
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._parquet is None:
            self._schema = arrow_schema(frame)
            self._parquet = pq.ParquetWriter(self.path, self._schema)
        try:
            table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            rows = f"{frame.index[0]}-{frame.index[-1]}" if len(frame) else "?"
            raise ChronoflowError(
                f"rows {rows}: a column's values do not fit the type set by the first chunk ({exc}); "
                "give every column one type throughout the file (or convert it to Parquet)"
            ) from None
        self._parquet.write_table(table)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


def partial_path(dst: Path, kind: str = "partial") -> Path:
    """A hidden temporary name beside ``dst`` (same file system, so the final rename is atomic)."""
    return dst.with_name(f".{dst.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def progress_bar(disable: bool):
    """The rich progress bar of the file ageing functions (``disable``: none)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("ageing stars"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=disable)  # fmt: skip


def age_stars_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    chunk_rows: int = 100_000,
    model: RotationModel | str | os.PathLike | None = None,
    prior: Prior = "log-flat",
    progress: bool = True,
    **kwargs: Any,
) -> StreamReport:
    """Age every star of a CSV or Parquet file, ``chunk_rows`` rows at a time, into one file.

    Memory is bounded by the chunk size (the default 100,000 rows keeps the process well under
    2 GB for the catalogue's columns), not by the size of the input. The output holds every
    input row in input order, with the columns of :func:`~chronoflow.inference.ages.star_ages`.

    Parameters
    ----------
    src
        Input ``.csv`` (``NULL`` or empty = missing) or ``.parquet`` with ``Prot`` [d],
        ``BPRP_0`` [mag] and ``e_BPRP_0`` [mag].
    dst
        Output ``.parquet`` (default choice) or ``.csv``; replaced only once every row is written.
        The rows go to a hidden temporary file beside it (``.NAME.partial-PID-XXXXXXXX``), renamed
        onto ``dst`` at the end; if the run fails or is interrupted, the temporary file is removed
        and an existing ``dst`` is left as it was.
    chunk_rows
        Rows per chunk.
    model
        A loaded model, a model file path, or ``None`` for the shipped model (loaded once).
    prior
        ``"log-flat"`` (default) or ``"flat"`` (in age).
    progress
        Show a progress bar (rows aged / total rows).
    **kwargs
        Passed to :func:`~chronoflow.inference.ages.star_ages` (e.g. ``method``, ``n_nodes``).

    Returns
    -------
    StreamReport
        Rows, aged rows, flagged rows, chunks and wall time.
    """
    src, dst = Path(src), Path(dst)
    file_suffix(dst, OUTPUT_SUFFIXES, "output")
    if src.resolve() == dst.resolve():
        raise ChronoflowError(f"the output {dst} would overwrite the input")
    model = resolve_model(model)
    total = count_rows(src) if Path(src).is_file() else None
    t0 = time.perf_counter()
    n_rows = n_aged = n_flagged = n_chunks = 0
    partial = partial_path(dst)
    writer = _Writer(partial, suffix=file_suffix(dst, OUTPUT_SUFFIXES, "output"))
    try:
        try:
            with progress_bar(disable=not progress) as bar:
                task = bar.add_task("age", total=total)
                for chunk in table_chunks(src, chunk_rows):
                    aged = age_chunk(chunk, model=model, prior=prior, **kwargs)
                    writer.write(aged)
                    rows, with_age, flagged = flag_counts(aged)
                    n_rows, n_aged, n_flagged, n_chunks = n_rows + rows, n_aged + with_age, n_flagged + flagged, n_chunks + 1
                    bar.update(task, advance=len(aged))
        finally:
            writer.close()
        os.replace(partial, dst)
    except BaseException:  # also Ctrl-C: never leave a file that looks complete
        partial.unlink(missing_ok=True)
        raise
    return StreamReport(n_rows, n_aged, n_flagged, n_chunks, time.perf_counter() - t0, str(dst))
