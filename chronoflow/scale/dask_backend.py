"""Ageing catalogues on Dask: one partition at a time, on a local or remote cluster.

:func:`age_stars_dask` maps :func:`chronoflow.scale.streaming.age_chunk` over the partitions of a
dask DataFrame (lazy; returns a dask DataFrame). :func:`age_stars_file_dask` reads a CSV or
Parquet input, ages it on a Dask cluster (a local one by default, or the scheduler at
``address``) and writes one Parquet file per partition into a directory, which
:func:`pandas.read_parquet` reads back as one table in input order.

Each worker process loads the model once (the loader is cached per process) and reuses it for
every partition it receives: only the model's file path travels with the tasks. Every row is
kept; rows that cannot be aged are flagged as in :func:`chronoflow.inference.ages.star_flags`.

Needs the ``dask`` extra: ``pip install "chronoflow-gyro[dask]"``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.catalogue import CSV_READ_OPTIONS, check_table_file
from ..errors import ChronoflowError
from ..inference.ages import STAR_AGE_COLUMNS
from ..inference.likelihood import REQUIRED, require_columns
from ..inference.posterior import Prior
from .streaming import (
    INPUT_SUFFIXES,
    StreamReport,
    age_chunk,
    arrow_schema,
    file_suffix,
    flag_counts,
    partial_path,
    progress_bar,
)

__all__ = ["PARTS_PER_THREAD", "age_stars_dask", "age_stars_file_dask", "local_cluster", "read_table_dask"]

#: Columns :func:`~chronoflow.inference.ages.star_ages` adds, with their dtypes.
AGE_COLUMNS = {c: "object" if c == "flag" else "float64" for c in STAR_AGE_COLUMNS}


def _import_dask():
    try:
        import dask.dataframe as dd
        import distributed
    except ImportError:
        raise ChronoflowError(
            "the Dask scheduler needs dask and distributed: pip install \"chronoflow-gyro[dask]\""
        ) from None
    return dd, distributed


def _model_arg(model: str | os.PathLike | None) -> str | None:
    """What travels to the workers: a path (or None for the shipped model), never the weights."""
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    raise ChronoflowError(
        "on Dask, pass the model as a file path (save it with chronoflow.flows.artifact.save_model) so that each "
        f"worker loads it once; got a {type(model).__name__}"
    )


def age_stars_dask(ddf, *, model: str | os.PathLike | None = None, prior: Prior = "log-flat", **kwargs: Any):
    """Single-star ages of a dask DataFrame, partition by partition (lazy).

    Parameters
    ----------
    ddf
        ``dask.dataframe.DataFrame`` with ``Prot`` [d], ``BPRP_0`` [mag] and ``e_BPRP_0`` [mag];
        other columns are carried through.
    model
        Path of a model file, or ``None`` for the shipped model. Each worker loads it once.
    prior
        ``"log-flat"`` (default) or ``"flat"`` (in age).
    **kwargs
        Passed to :func:`~chronoflow.inference.ages.star_ages`.

    Returns
    -------
    dask.dataframe.DataFrame
        The rows of ``ddf`` (same partitions and index) with ``Prot``, ``BPRP_0`` and
        ``e_BPRP_0`` as float64, plus the age columns (log10 Myr, Myr) and ``flag``.

    Examples
    --------
    >>> import dask.dataframe as dd                                           # doctest: +SKIP
    >>> ages = age_stars_dask(dd.read_parquet("stars.parquet"))              # doctest: +SKIP
    >>> ages.to_parquet("ages/")                                             # doctest: +SKIP
    """
    _import_dask()
    require_columns(ddf, REQUIRED)
    meta = ddf._meta.astype({c: "float64" for c in REQUIRED}).assign(
        **{c: pd.Series(dtype=t) for c, t in AGE_COLUMNS.items()}
    )
    # Only the path travels; load_model is cached per process, so a worker loads the file once.
    return ddf.map_partitions(age_chunk, model=_model_arg(model), prior=prior, **kwargs, meta=meta)


def read_table_dask(path: str | os.PathLike, *, blocksize: str | int = "4MB"):
    """A CSV (``NULL`` = missing) or Parquet file as a dask DataFrame.

    ``Prot``, ``BPRP_0`` and ``e_BPRP_0`` are read as text in CSVs and converted per partition,
    so a non-numeric value is flagged rather than failing the whole job.
    """
    dd, _ = _import_dask()
    path = Path(path)
    if not path.exists():
        raise ChronoflowError(f"file not found: {path}")
    if path.is_dir() or file_suffix(path, INPUT_SUFFIXES, "input") != ".csv":
        return dd.read_parquet(path, split_row_groups=True)  # one partition per row group
    check_table_file(path)  # an empty file, a duplicated or semicolon-separated header: one line
    return dd.read_csv(path, blocksize=blocksize, dtype={c: "object" for c in REQUIRED}, **CSV_READ_OPTIONS)


def _write_part(part: pd.DataFrame, path: str, schema) -> tuple[int, int, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False), path)
    return flag_counts(part)


def _check_replaceable(dst: Path) -> None:
    """Refuse an output path that exists and is not a directory of ``part.*.parquet`` files."""
    if not dst.exists():
        return
    if not dst.is_dir():
        raise ChronoflowError(f"the output {dst} exists and is a file; the Dask scheduler writes a directory "
                              "of Parquet parts: remove it or choose another --out")  # fmt: skip
    other = next((p.name for p in sorted(dst.iterdir()) if not p.match("part.*.parquet")), None)
    if other is not None:
        raise ChronoflowError(f"the output directory {dst} holds {other!r}, which is not a part.*.parquet file "
                              "of an earlier run; remove it or choose another --out")  # fmt: skip


def _swap_into_place(new: Path, dst: Path) -> None:
    """Rename the finished directory ``new`` onto ``dst``; an existing ``dst`` goes only after that."""
    old = partial_path(dst, "old") if dst.exists() else None
    if old is not None:
        os.replace(dst, old)
    try:
        os.replace(new, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


#: Partitions per worker thread that :func:`age_stars_file_dask` makes at least (by splitting).
PARTS_PER_THREAD = 4


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any):
    """A ``distributed.LocalCluster`` of worker processes set up for ageing stars.

    Dask starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which makes glibc hand every
    freed block above 64 KiB back to the system; the grid's large temporaries are then mapped and
    faulted in again at every batch: one process on one thread aged 1,456 stars/s with it against
    2,290 without (10,000 synthetic stars, 2-core machine). This cluster's workers start without
    it (the other Dask defaults, ``OMP_NUM_THREADS=1`` among them, are kept). For a cluster you
    start yourself, ``dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_":
    None})`` before creating it does the same.

    Parameters
    ----------
    n_workers, threads_per_worker
        Worker processes and threads in each.
    **kwargs
        Passed to ``distributed.LocalCluster`` (default ``dashboard_address=":0"``: any free port).
    """
    _, distributed = _import_dask()
    import dask

    kwargs.setdefault("dashboard_address", ":0")
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return distributed.LocalCluster(n_workers=int(n_workers), threads_per_worker=int(threads_per_worker), processes=True,
                                        **kwargs)  # fmt: skip


def age_stars_file_dask(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    address: str | None = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    blocksize: str | int = "4MB",
    model: str | os.PathLike | None = None,
    prior: Prior = "log-flat",
    progress: bool = True,
    client=None,
    **kwargs: Any,
) -> StreamReport:
    """Age every star of a CSV or Parquet file on a Dask cluster; write a directory of Parquet parts.

    Parameters
    ----------
    src
        Input ``.csv`` or ``.parquet`` (file or directory of parts).
    dst
        Output directory. Read it back with ``pandas.read_parquet(dst)``: the rows come in input
        order. The parts are written into a hidden sibling directory
        (``.NAME.partial-PID-XXXXXXXX``) that is renamed onto ``dst`` only when every partition
        has been written; a failed or interrupted run removes it and leaves an existing ``dst``
        as it was. An existing ``dst`` must be a directory holding only ``part.*.parquet``
        files (an earlier run's output), which is replaced as a whole.
    address
        Address of a running Dask scheduler (``tcp://host:8786``); default: start a local
        cluster of ``n_workers`` processes with ``threads_per_worker`` threads each
        (:func:`local_cluster`).
    n_workers, threads_per_worker
        Size of the local cluster (ignored with ``address`` or ``client``). Dask starts its
        workers with ``OMP_NUM_THREADS=1``, so each task's torch runs on one thread.
    blocksize
        Bytes of CSV per partition (about 50,000 stars per 4 MB); a Parquet input gives one
        partition per row group. An input with fewer than :data:`PARTS_PER_THREAD` (4)
        partitions per worker thread is split evenly into that many (row order kept), so that no
        worker idles while the last partitions run.
    model
        Path of a model file, or ``None`` for the shipped model (loaded once per worker).
    prior
        ``"log-flat"`` (default) or ``"flat"`` (in age).
    progress
        Show a progress bar over partitions.
    client
        An existing ``distributed.Client`` to use instead.
    **kwargs
        Passed to :func:`~chronoflow.inference.ages.star_ages`.

    Returns
    -------
    StreamReport
        Rows, aged rows, flagged rows, partitions (``n_chunks``) and wall time.
    """
    dd, distributed = _import_dask()
    import dask

    dst = Path(dst)
    if dst.suffix.lower() == ".csv":
        raise ChronoflowError(f"the Dask scheduler writes a directory of Parquet files; got {dst.name} (use e.g. ages.parquet)")
    _check_replaceable(dst)
    t0 = time.perf_counter()
    own = None
    if client is None:
        if address is not None:
            own = client = distributed.Client(address)
        else:
            own = client = distributed.Client(local_cluster(n_workers, threads_per_worker))
    try:
        ddf = read_table_dask(src, blocksize=blocksize)
        # At least PARTS_PER_THREAD partitions per worker thread: with as many partitions as
        # threads, or a few more, the last ones run while other workers idle (5 partitions on
        # 2 workers ran at 0.76x of one process with 2 threads; see docs/performance.md).
        threads = sum(client.nthreads().values()) or 1
        if ddf.npartitions < PARTS_PER_THREAD * threads:
            ddf = ddf.repartition(npartitions=PARTS_PER_THREAD * threads)
        aged = age_stars_dask(ddf, model=model, prior=prior, **kwargs)
        schema = arrow_schema(aged._meta)
        partial = partial_path(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
        n_rows = n_aged = n_flagged = 0
        try:
            parts = aged.to_delayed()
            width = max(5, len(str(len(parts))))
            writes = [dask.delayed(_write_part)(p, str(partial / f"part.{i:0{width}d}.parquet"), schema)
                      for i, p in enumerate(parts)]  # fmt: skip
            futures = []
            try:
                futures = client.compute(writes)
                with progress_bar(disable=not progress) as bar:
                    task = bar.add_task("age", total=len(futures))
                    for fut in distributed.as_completed(futures):
                        try:
                            rows, with_age, flagged = fut.result()
                        except ChronoflowError:
                            raise
                        except Exception as exc:  # a worker's error (e.g. a column whose type changes mid-file)
                            raise ChronoflowError(f"a partition failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
                        n_rows, n_aged, n_flagged = n_rows + rows, n_aged + with_age, n_flagged + flagged
                        bar.update(task, advance=1)
            except BaseException:
                client.cancel(futures)  # so that no worker writes into the directory removed below
                raise
            _swap_into_place(partial, dst)
        except BaseException:  # also Ctrl-C: never leave a directory that looks complete
            shutil.rmtree(partial, ignore_errors=True)
            raise
    finally:
        if own is not None:
            cluster = getattr(own, "cluster", None)
            own.close()
            if cluster is not None:
                cluster.close()
    return StreamReport(n_rows, n_aged, n_flagged, len(writes), time.perf_counter() - t0, str(dst))

