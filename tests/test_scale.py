"""Catalogue scale: chunked streaming and Dask give the in-memory answer; bad rows are flagged, never dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from chronoflow.inference.ages import OUT_OF_DOMAIN_FLAGS, star_ages
from chronoflow.cli import app
from chronoflow.errors import ChronoflowError
from chronoflow.analysis.forward import BAD_KINDS, synthetic_field
from chronoflow.scale.streaming import age_stars_file, count_rows, table_chunks

# What each injected bad row must be flagged as.
EXPECTED_FLAG = {"missing_prot": "missing_value", "negative_prot": "nonpositive", "zero_error": "nonpositive",
                 "missing_colour": "missing_value", "text_prot": "missing_value"}  # fmt: skip


@pytest.fixture(scope="module")
def survey(catalogue):
    """~200 synthetic stars with every kind of bad row, and one period that is not a number."""
    df = synthetic_field(203, catalogue=catalogue, bad_fraction=0.1, seed=3)
    df["Prot"] = df["Prot"].astype(object)
    df.loc[7, ["Prot", "bad_kind"]] = ["fast?", "text_prot"]
    df["note"] = np.where(np.arange(len(df)) % 50 == 0, "NA", "ok")  # "NA" is a name, not a missing value
    return df


@pytest.fixture(scope="module")
def survey_csv(survey, tmp_path_factory):
    path = tmp_path_factory.mktemp("survey") / "survey.csv"
    survey.to_csv(path, index=False, na_rep="NULL")
    return path


@pytest.fixture(scope="module")
def in_memory(survey_csv):
    """The in-memory answer for the same file: read whole, aged in one call."""
    return star_ages(pd.read_csv(survey_csv, na_values=["NULL", ""], keep_default_na=False))


def _same_answer(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    ages = [c for c in want.columns if c.startswith(("log10_age_", "age_myr_"))]
    # Chunks of other sizes change the blocking of the flow's float32 matrix products (and the
    # thread count changes their summation order): ages then differ by up to ~3e-7 relative
    # (measured); 1e-5 relative is 0.000004 dex. NaN == NaN here.
    np.testing.assert_allclose(got[ages].to_numpy(float), want[ages].to_numpy(float), rtol=1e-5, atol=0)
    assert got["flag"].fillna("").tolist() == want["flag"].tolist()
    np.testing.assert_array_equal(got["GaiaDR3_ID"].to_numpy(), want["GaiaDR3_ID"].to_numpy())
    assert got["note"].tolist() == want["note"].tolist()


def test_synthetic_field_is_seeded_and_realistic(catalogue):
    a = synthetic_field(500, catalogue=catalogue, bad_fraction=0.05, seed=1)
    b = synthetic_field(500, catalogue=catalogue, bad_fraction=0.05, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(synthetic_field(500, catalogue=catalogue, seed=2))
    good = a[a["bad_kind"] == ""]
    cat = catalogue["BPRP_0"].dropna()
    assert cat.min() <= good["BPRP_0"].min() and good["BPRP_0"].max() <= cat.max()
    assert (good["Prot"] > 0).all() and (good["e_BPRP_0"] > 0).all()
    assert set(a["bad_kind"]) - {""} == set(BAD_KINDS)
    with pytest.raises(ChronoflowError, match="bad_fraction"):
        synthetic_field(10, catalogue=catalogue, bad_fraction=2)


def test_count_rows_and_chunks(survey, survey_csv):
    assert count_rows(survey_csv) == len(survey)
    chunks = list(table_chunks(survey_csv, chunk_rows=50))
    assert [len(c) for c in chunks] == [50, 50, 50, 50, 3]
    assert pd.concat(chunks).index.tolist() == list(range(len(survey)))


@pytest.mark.parametrize("out_name", ["ages.parquet", "ages.csv"])
def test_streaming_equals_in_memory(survey_csv, in_memory, tmp_path, out_name):
    out = tmp_path / out_name
    report = age_stars_file(survey_csv, out, chunk_rows=37, progress=False)
    assert report.n_chunks == 6 and report.n_rows == len(in_memory)
    got = pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out, na_values=["NULL", ""], keep_default_na=False)
    _same_answer(got, in_memory)
    assert report.n_flagged == int((in_memory["flag"] != "").sum())


def test_streaming_from_parquet(survey, survey_csv, in_memory, tmp_path):
    src = tmp_path / "survey.parquet"
    pd.read_csv(survey_csv, na_values=["NULL", ""], keep_default_na=False).to_parquet(src, index=False)
    age_stars_file(src, tmp_path / "ages.parquet", chunk_rows=64, progress=False)
    _same_answer(pd.read_parquet(tmp_path / "ages.parquet"), in_memory)


def test_bad_rows_are_kept_and_flagged(survey, survey_csv, tmp_path):
    age_stars_file(survey_csv, tmp_path / "ages.parquet", chunk_rows=50, progress=False)
    got = pd.read_parquet(tmp_path / "ages.parquet")
    assert len(got) == len(survey)
    bad = survey["bad_kind"] != ""
    assert bad.sum() >= 10
    for i in np.flatnonzero(bad):
        kind = survey["bad_kind"].iloc[i]
        assert EXPECTED_FLAG[kind] in got["flag"].iloc[i], (i, kind, got["flag"].iloc[i])
        assert np.isnan(got["log10_age_median"].iloc[i])
    # The other rows are aged, except those outside the training domain (NaN, flagged as such).
    outside = got["flag"].str.contains("|".join(OUT_OF_DOMAIN_FLAGS)).to_numpy()
    good = ~bad.to_numpy()
    assert np.isfinite(got.loc[good & ~outside, "log10_age_median"]).all()
    assert got.loc[good & outside, "log10_age_median"].isna().all()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_an_empty_table_gives_an_empty_output_with_every_column(tmp_path, suffix):
    empty = pd.DataFrame({"Prot": [], "BPRP_0": [], "e_BPRP_0": [], "name": pd.Series([], dtype=str)})
    src = tmp_path / f"empty{suffix}"
    empty.to_parquet(src) if suffix == ".parquet" else empty.to_csv(src, index=False)
    report = age_stars_file(src, tmp_path / "ages.parquet", progress=False)
    got = pd.read_parquet(tmp_path / "ages.parquet")
    assert (report.n_rows, report.n_chunks, len(got)) == (0, 1, 0)
    assert {"name", "log10_age_median", "flag"} <= set(got.columns)


def test_streaming_errors_are_one_line(survey_csv, tmp_path):
    with pytest.raises(ChronoflowError, match="unknown output format"):
        age_stars_file(survey_csv, tmp_path / "ages.txt", progress=False)
    with pytest.raises(ChronoflowError, match="would overwrite the input"):
        age_stars_file(survey_csv, survey_csv.with_suffix(".csv"), progress=False)
    pd.DataFrame({"Prot": [1.0], "BPRP_0": [1.0]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ChronoflowError, match="missing column 'e_BPRP_0'"):
        age_stars_file(tmp_path / "short.csv", tmp_path / "o.parquet", progress=False)
    # A column that is numeric in the first chunk and text later cannot share one Parquet schema.
    rows = pd.DataFrame({"Prot": [5.0] * 4, "BPRP_0": [1.0] * 4, "e_BPRP_0": [0.02] * 4, "id": ["1", "2", "x", "y"]})
    rows.to_csv(tmp_path / "drift.csv", index=False)
    with pytest.raises(ChronoflowError, match="rows 2-3: a column's values do not fit"):
        age_stars_file(tmp_path / "drift.csv", tmp_path / "o.parquet", chunk_rows=2, progress=False)


def test_cli_streaming_and_memory_agree(survey_csv, tmp_path):
    runner = CliRunner()
    for scheduler in ("streaming", "memory"):
        res = runner.invoke(app, ["age-stars", str(survey_csv), "--out", str(tmp_path / f"{scheduler}.parquet"),
                                  "--scheduler", scheduler, "--chunk-rows", "40", "--no-progress"])  # fmt: skip
        assert res.exit_code == 0, res.output
        n_aged = int(pd.read_parquet(tmp_path / f"{scheduler}.parquet")["log10_age_median"].notna().sum())
        assert f"aged {n_aged} of 203 rows ({203 - n_aged} without an age" in " ".join(res.output.split())
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "streaming.parquet"), pd.read_parquet(tmp_path / "memory.parquet"),
                                  check_exact=False, rtol=1e-5)  # chunking changes float32 GEMM blocking (~3e-7)


# --- Dask -------------------------------------------------------------------------------------
# Only these tests need the optional dask extra: each asks for it through a fixture, so without
# dask they alone are skipped (a module-level importorskip would skip every streaming test above).


@pytest.fixture(scope="module")
def dask_dataframe():
    return pytest.importorskip("dask.dataframe", reason="the dask extra is part of the test extra")


@pytest.fixture(scope="module")
def distributed():
    return pytest.importorskip("distributed", reason="the dask extra is part of the test extra")


@pytest.fixture(scope="module")
def dask_client(distributed):
    """A local cluster of two worker processes (one thread each), as in the benchmark."""
    from chronoflow.scale.dask_backend import local_cluster

    cluster = local_cluster(2, 1)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_file_equals_in_memory_and_loads_the_model_once_per_worker(survey_csv, in_memory, dask_client, tmp_path):
    from chronoflow.scale.dask_backend import age_stars_file_dask

    report = age_stars_file_dask(survey_csv, tmp_path / "ages.parquet", blocksize=2_000, client=dask_client, progress=False)
    assert report.n_chunks >= 4, "the test needs more partitions than workers"
    assert dask_client.cluster is not None and len(dask_client.scheduler_info()["workers"]) == 2
    _same_answer(pd.read_parquet(tmp_path / "ages.parquet"), in_memory)

    def model_loads():
        from chronoflow.flows.artifact import _load_cached

        return _load_cached.cache_info().misses

    loads = dask_client.run(model_loads)
    assert sorted(loads.values()) == [1, 1], loads  # every worker loaded the model exactly once


def test_dask_splits_a_file_of_few_partitions_among_the_workers(survey_csv, in_memory, dask_client, tmp_path):
    # One CSV block is one partition: without the split, one of the two workers would do all
    # the work. It is cut into PARTS_PER_THREAD partitions per worker thread, in row order.
    from chronoflow.scale.dask_backend import PARTS_PER_THREAD, age_stars_file_dask

    report = age_stars_file_dask(survey_csv, tmp_path / "ages.parquet", blocksize="64MB", client=dask_client, progress=False)
    assert report.n_chunks == PARTS_PER_THREAD * 2
    assert len(list((tmp_path / "ages.parquet").glob("part.*.parquet"))) == PARTS_PER_THREAD * 2
    _same_answer(pd.read_parquet(tmp_path / "ages.parquet"), in_memory)


def test_dask_dataframe_in_and_out(survey_csv, in_memory, dask_client, dask_dataframe):
    from chronoflow.scale.dask_backend import age_stars_dask

    whole = pd.read_csv(survey_csv, na_values=["NULL", ""], keep_default_na=False)
    lazy = age_stars_dask(dask_dataframe.from_pandas(whole, npartitions=5))
    assert isinstance(lazy, dask_dataframe.DataFrame) and lazy.npartitions == 5
    got = lazy.compute()
    assert got.index.tolist() == whole.index.tolist()
    _same_answer(got, in_memory)


def test_dask_refuses_a_model_object(survey_csv, dask_dataframe):
    from chronoflow.flows.artifact import load_model
    from chronoflow.scale.dask_backend import age_stars_dask

    ddf = dask_dataframe.from_pandas(pd.read_csv(survey_csv, na_values=["NULL", ""], keep_default_na=False), npartitions=2)
    with pytest.raises(ChronoflowError, match="pass the model as a file path"):
        age_stars_dask(ddf, model=load_model())


def test_cli_dask_local_cluster(survey_csv, in_memory, tmp_path, dask_dataframe, distributed):
    res = CliRunner().invoke(app, ["age-stars", str(survey_csv), "--out", str(tmp_path / "ages.parquet"), "--scheduler", "dask",
                                   "--workers", "1", "--blocksize", "3000", "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    n_aged = int(pd.read_parquet(tmp_path / "ages.parquet")["log10_age_median"].notna().sum())
    assert f"aged {n_aged} of 203 rows" in " ".join(res.output.split())
    _same_answer(pd.read_parquet(tmp_path / "ages.parquet"), in_memory)


def test_read_table_dask_known_answers(tmp_path, dask_dataframe, distributed):
    """read_table_dask on files written here: the ageing columns come as the text written (NULL and
    empty fields missing, "NA" a name), other columns parsed, rows in order across partitions; a
    Parquet file gives one partition per row group; bad paths are refused in one line."""
    from chronoflow.scale.dask_backend import read_table_dask

    rows = [("8.5", "1.0", "0.02", "a", "14.0"), ("NULL", "1.2", "0.03", "NA", "15.5"), ("abc", "0.9", "", "c", "NULL"),
            ("12", "1.5", "0.05", "d", "16.0")] * 10  # 40 rows of 17-22 bytes: several 200-byte blocks  # fmt: skip
    csv = tmp_path / "stars.csv"
    csv.write_text("Prot,BPRP_0,e_BPRP_0,name,G_0\n" + "".join(",".join(r) + "\n" for r in rows))
    ddf = read_table_dask(csv, blocksize=200)
    assert ddf.npartitions >= 3
    got = ddf.compute(scheduler="sync").reset_index(drop=True)
    assert list(got.columns) == ["Prot", "BPRP_0", "e_BPRP_0", "name", "G_0"] and len(got) == 40
    # text (converted per partition by age_chunk, so "abc" becomes a flag, not a failed job)
    assert got["Prot"].fillna("<missing>").tolist() == ["8.5", "<missing>", "abc", "12"] * 10
    assert got["BPRP_0"].tolist() == ["1.0", "1.2", "0.9", "1.5"] * 10
    assert got["e_BPRP_0"].fillna("<missing>").tolist() == ["0.02", "0.03", "<missing>", "0.05"] * 10
    assert got["name"].fillna("<missing>").tolist() == ["a", "NA", "c", "d"] * 10  # "NA" is a name, not a missing value
    np.testing.assert_array_equal(got["G_0"].to_numpy(float), [14.0, 15.5, np.nan, 16.0] * 10)
    # a trailing comma on every data row: the fields stay under their header
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("Prot,BPRP_0,e_BPRP_0\n8.5,1.0,0.02,\n12,1.5,0.05,\n")
    t = read_table_dask(trailing).compute(scheduler="sync")
    assert t["Prot"].tolist() == ["8.5", "12"] and t["e_BPRP_0"].tolist() == ["0.02", "0.05"]
    # Parquet: 5 rows in row groups of 2 -> 3 partitions, values as written; a directory of parts too
    frame = pd.DataFrame({"Prot": [8.5, 3.0, np.nan, 12.0, 1.1], "BPRP_0": [1.0, 0.8, 1.2, 1.5, 2.0], "e_BPRP_0": 0.02})
    frame.to_parquet(tmp_path / "stars.parquet", row_group_size=2, index=False)
    pq = read_table_dask(tmp_path / "stars.parquet")
    assert pq.npartitions == 3
    pd.testing.assert_frame_equal(pq.compute(scheduler="sync").reset_index(drop=True), frame)
    (tmp_path / "parts").mkdir()
    frame.iloc[:3].to_parquet(tmp_path / "parts" / "part.0.parquet", index=False)
    frame.iloc[3:].to_parquet(tmp_path / "parts" / "part.1.parquet", index=False)
    pd.testing.assert_frame_equal(read_table_dask(tmp_path / "parts").compute(scheduler="sync").reset_index(drop=True), frame)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "stars.txt").write_text("Prot\n1\n")
    for path, pattern in ((tmp_path / "missing.csv", "file not found"), (tmp_path / "empty.csv", "is empty"),
                          (tmp_path / "stars.txt", "unknown input format '.txt'")):  # fmt: skip
        with pytest.raises(ChronoflowError, match=pattern):
            read_table_dask(path)
