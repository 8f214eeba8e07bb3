"""Property-based tests (hypothesis): whatever a user's table holds, the readers and the ageing
entry points keep every row, keep the index, set the flags exactly where the rule says, and
raise nothing but chronoflow's own one-line errors.

The examples are derandomized (the same ones on every run and machine); their counts are in
docs/reliability.md.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronoflow.inference.ages import cluster_age, star_ages
from chronoflow.inference.rotation_flags import ROTATION_FLAGS
from chronoflow.flows.artifact import load_model
from chronoflow.data.catalogue import load_catalogue
from chronoflow.errors import ChronoflowError
from chronoflow.data.extinction import DeredFlag, deredden_bprp
from chronoflow.analysis.forward import sample_periods
from chronoflow.inference.posterior import age_grid
from chronoflow.scale.streaming import age_chunk, table_chunks

MODEL = load_model()
GRID = age_grid()
COMMON = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
#: Examples per property (kept small: each star_ages/cluster_age example runs the 5-member flow).
N_AGES, N_CLUSTER, N_READERS, N_DERED, N_SAMPLE = 60, 30, 40, 80, 25


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, ChronoflowError), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc).strip(), repr(str(exc))


# --- values a user's table may hold in an ageing column ---------------------------------------
special = st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, 1e-300, 1e300, 500.0, 0.001, 9.0, -0.5])
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), special)
plausible_prot = st.floats(0.05, 150.0)
plausible_colour = st.floats(0.3, 3.5)
plausible_error = st.floats(0.015, 0.3)
text = st.sampled_from(["", "NULL", "abc", "1,5", "nan", "–", "ünïcode", " 8 "])


def column(plausible):
    """Mostly plausible values (so that some rows are aged), with edge values and text mixed in."""
    return st.one_of(plausible, plausible, numbers, text)


rows = st.lists(st.tuples(column(plausible_prot), column(plausible_colour), column(plausible_error)), min_size=0, max_size=8)
index = st.sampled_from(["range", "duplicates", "strings", "negative"])


def _frame(values, kind) -> pd.DataFrame:
    df = pd.DataFrame(values, columns=["Prot", "BPRP_0", "e_BPRP_0"], dtype=object)
    n = len(df)
    df.index = {
        "range": pd.RangeIndex(n),
        "duplicates": pd.Index([i // 2 for i in range(n)]),
        "strings": pd.Index([f"star-{i}" for i in range(n)]),
        "negative": pd.Index([-7 * i for i in range(n)]),
    }[kind]
    df["name"] = [f"s{i}" for i in range(n)]
    return df


#: The input-domain flags of chronoflow.inference.likelihood.StarInputs.
DOMAIN_FLAGS = ("missing_value", "nonpositive", "period_outside_domain", "colour_outside_domain", "colour_impossible",
                "error_above_domain", "error_below_domain")  # fmt: skip


def flags_alone(df: pd.DataFrame) -> list[str]:
    """Each row's flags when it is flagged alone, in a one-row table with a fresh index: a row's
    flags depend on its own values only, never on its neighbours, its position or its index."""
    from chronoflow.inference.likelihood import star_flags

    cols = ["Prot", "BPRP_0", "e_BPRP_0"]
    return [star_flags(df[cols].iloc[[i]].reset_index(drop=True), MODEL).iloc[0] for i in range(len(df))]


def _domain_part(flag: str) -> list[str]:
    return [t for t in flag.split(";") if t in DOMAIN_FLAGS]


def _hand_rows():
    """Rows built by hand, each with the flags it must get (and so none of the others), around
    every edge of the shipped model's training domain (2-5 % inside or outside it)."""
    d = MODEL.domain
    p_lo, p_hi = 10 ** d.log10_prot[0], 10 ** d.log10_prot[1]  # 0.031 and 172 d
    c_lo, c_hi = d.bprp0  # -0.001 and 4.28 mag
    e_lo, e_hi = 10 ** d.log10_e_bprp0[0], 10 ** d.log10_e_bprp0[1]  # 0.014 and 0.45 mag
    return [
        ("fine", 8.0, 1.0, 0.02, ""),
        ("numbers as text", "8.0", "1.0", "0.02", ""),
        ("no period", math.nan, 1.0, 0.02, "missing_value"),
        ("text colour", 8.0, "abc", 0.02, "missing_value"),
        ("infinite error", 8.0, 1.0, math.inf, "missing_value"),
        ("missing wins", None, 9.0, -1.0, "missing_value"),
        ("zero period", 0.0, 1.0, 0.02, "nonpositive"),
        ("negative period", -3.0, 1.0, 0.02, "nonpositive"),
        ("zero error", 8.0, 1.0, 0.0, "nonpositive"),
        ("negative error", 8.0, 1.0, -0.02, "nonpositive"),
        ("negative period, impossible colour", -3.0, 9.0, 0.02, "nonpositive;colour_outside_domain;colour_impossible"),
        ("period above", p_hi * 1.05, 1.0, 0.02, "period_outside_domain"),
        ("period just inside top", p_hi * 0.95, 1.0, 0.02, ""),
        ("period below", p_lo * 0.95, 1.0, 0.02, "period_outside_domain"),
        ("period just inside bottom", p_lo * 1.05, 1.0, 0.02, ""),
        ("colour above", 8.0, c_hi + 0.02, 0.02, "colour_outside_domain"),
        ("colour just inside top", 8.0, c_hi - 0.02, 0.02, ""),
        ("colour below", 8.0, c_lo - 0.02, 0.02, "colour_outside_domain"),
        ("red but possible", 8.0, 5.9, 0.02, "colour_outside_domain"),
        ("too red for a star", 8.0, 6.1, 0.02, "colour_outside_domain;colour_impossible"),
        ("too blue for a star", 8.0, -1.1, 0.02, "colour_outside_domain;colour_impossible"),
        ("error above", 8.0, 1.0, e_hi * 1.05, "error_above_domain"),
        ("error just inside top", 8.0, 1.0, e_hi * 0.95, ""),
        ("error below", 8.0, 1.0, e_lo * 0.9, "error_below_domain"),
        ("error at the floor", 8.0, 1.0, e_lo * 1.0001, ""),
        ("everything outside", p_hi * 2, 5.0, e_hi * 2, "period_outside_domain;colour_outside_domain;error_above_domain"),
    ]


def test_flags_of_rows_built_by_hand():
    """The flag rule (docs/reliability.md) on constructed rows: each row gets exactly its flags, in
    order; a row is aged unless a flag forbids it (the out-of-domain ones only by default), and a
    colour error below the training floor is aged as if it were at the floor."""
    from chronoflow.inference.likelihood import star_flags

    cases = _hand_rows()
    df = pd.DataFrame([c[1:4] for c in cases], columns=["Prot", "BPRP_0", "e_BPRP_0"], dtype=object,
                      index=pd.Index([c[0] for c in cases], name="case"))  # fmt: skip
    want = pd.Series([c[4] for c in cases], index=df.index)
    got = star_flags(df, MODEL)
    mismatched = {k: (got[k], want[k]) for k in df.index if got[k] != want[k]}
    assert not mismatched, mismatched
    never = {"missing_value", "nonpositive", "colour_impossible"}
    outside = {"period_outside_domain", "colour_outside_domain", "error_above_domain"}
    for include in (False, True):
        out = star_ages(df, model=MODEL, include_out_of_domain=include)
        for case, flag, median in zip(df.index, out["flag"], out["log10_age_median"]):
            assert ";".join(_domain_part(flag)) == want[case], case  # star_ages reports the same flags
            tokens = set(want[case].split(";"))
            aged = not (tokens & never) and (include or not tokens & outside)
            if include and tokens & outside and "zero_likelihood" in flag:  # far outside: the flow gives no density
                aged = False
            assert math.isfinite(median) == aged, (case, include, flag, median)
        assert not out.loc[[c for c in df.index if not want[c]], "flag"].str.contains("zero_likelihood").any()
    # below the floor: the same age as at the floor (the error is raised to it), unlike a larger error
    floor = df.loc[["error below", "error below"]].assign(e_BPRP_0=[10 ** MODEL.domain.log10_e_bprp0[0], 0.1])
    at_floor, larger = star_ages(floor, model=MODEL)["log10_age_p84"]
    # the same inputs in another batch: the float32 flow differs at the 1e-7 level
    assert out.loc["error below", "log10_age_p84"] == pytest.approx(at_floor, abs=1e-5)
    assert abs(larger - at_floor) > 1e-3


@settings(max_examples=N_AGES, **COMMON)
@given(values=rows, kind=index, include=st.booleans())
def test_star_ages_keep_every_row_and_flag_by_the_rule(values, kind, include):
    df = _frame(values, kind)
    out = star_ages(df, model=MODEL, include_out_of_domain=include)
    assert len(out) == len(df) and out.index.equals(df.index) and out["name"].tolist() == df["name"].tolist()
    # the rule itself is tested on constructed rows (test_flags_of_rows_built_by_hand); here: whatever
    # the table, each row's flags are the ones it gets alone, and the flags decide which rows are aged
    want = flags_alone(df)
    never = ("missing_value", "nonpositive", "colour_impossible") + (() if include else ("period_outside_domain", "colour_outside_domain", "error_above_domain"))
    known = set(DOMAIN_FLAGS) | set(ROTATION_FLAGS) | {"zero_likelihood", "age_below_calibration", "age_above_calibration"}
    for got, exp, median, p16, p84 in zip(out["flag"], want, out["log10_age_median"], out["log10_age_p16"], out["log10_age_p84"]):
        tokens = got.split(";")
        assert set(tokens) - {""} <= known, got
        # the input-domain flags (the rotation flags have their own tests: tests/test_rotation_flags.py)
        assert ";".join(_domain_part(got)) == exp
        if "missing_value" in exp:
            assert exp == "missing_value"  # nothing else can be said of a row without its numbers
        aged = not any(t in exp.split(";") for t in never)
        if "zero_likelihood" in tokens:  # only where the flow is pushed far outside its domain
            assert include and ("outside_domain" in exp or "above_domain" in exp)
            aged = False
        assert math.isfinite(median) == aged
        if aged:
            assert GRID[0] <= p16 <= median <= p84 <= GRID[-1]
            assert ("age_above_calibration" in got) == (p84 == GRID[-1])


@settings(max_examples=N_CLUSTER, **COMMON)
@given(values=rows, kind=index, membership=st.sampled_from([None, 0.0, 0.5, 1.0, math.nan]))
def test_cluster_age_uses_exactly_the_aged_rows(values, kind, membership):
    df = _frame(values, kind)
    if membership is not None:
        df["mem_prob_source"] = membership
    try:
        res = cluster_age(df, model=MODEL, membership=None if membership is None else "mem_prob_source")
    except ChronoflowError as exc:
        _one_line(exc)
        aged = star_ages(df, model=MODEL)["log10_age_median"].notna()
        # refused only when no row can be used, or the used rows' membership is not a probability
        assert not aged.any() or (membership is not None and math.isnan(membership))
        return
    assert res.n_rows == len(df) and res.stars.index.equals(df.index)
    aged = star_ages(df, model=MODEL)["log10_age_median"].notna().to_numpy()
    assert res.stars["used"].to_numpy().tolist() == aged.tolist()
    assert res.stars["flag"].tolist() == flags_alone(df)
    assert np.isfinite(res.summary["median"]) and res.error_dex["total"] >= res.error_dex["statistical"]


@settings(max_examples=N_DERED, **COMMON)
@given(
    bprp=st.lists(st.one_of(st.floats(-1.0, 6.0), numbers), min_size=1, max_size=12),
    a0=st.one_of(st.floats(0.0, 8.0), numbers),
)
def test_deredden_keeps_every_star_and_flags_what_it_cannot_solve(bprp, a0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = deredden_bprp(np.array(bprp), a0=a0)
        except ChronoflowError as exc:
            _one_line(exc)
            return
    x0, flags = np.atleast_1d(res.bprp0), np.atleast_1d(res.flags)
    assert x0.shape == (len(bprp),) and flags.shape == (len(bprp),)
    unusable = (flags & (DeredFlag.BAD_INPUT | DeredFlag.NEGATIVE_A0 | DeredFlag.NOT_CONVERGED)) != 0
    assert np.isnan(x0[unusable]).all() and np.isfinite(x0[~unusable]).all()
    bad_input = ~np.isfinite(np.array(bprp)) | (not math.isfinite(a0))
    assert ((flags & DeredFlag.BAD_INPUT) != 0)[bad_input].all()


@settings(max_examples=N_SAMPLE, **COMMON)
@given(
    ages=st.lists(st.one_of(st.floats(2.0, 3800.0), special), min_size=1, max_size=5),
    colour=st.one_of(st.floats(0.3, 3.5), special),
    n=st.integers(1, 3),
)
def test_sample_periods_gives_one_row_per_draw_or_one_line(ages, colour, n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = sample_periods(np.array(ages), colour, 0.02, n=n, model=MODEL, seed=1)
        except ChronoflowError as exc:
            _one_line(exc)
            return
    assert len(out) == n * len(ages) and np.isfinite(out["log10_prot"]).all()


# --- the readers ---------------------------------------------------------------------------
names = st.sampled_from(["Prot", "BPRP_0", "e_BPRP_0", "cluster", "GaiaDR3_ID", "名前", "naïve col", "x y", "a,b"])
kinds = st.sampled_from(["float", "int", "text", "bool"])


def _values(kind, n, draw):
    if kind == "float":
        return draw(st.lists(st.one_of(st.floats(-1e3, 1e3), st.sampled_from([math.nan, math.inf, -math.inf])), min_size=n, max_size=n))
    if kind == "int":
        return draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n))
    if kind == "bool":
        return draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return draw(st.lists(st.sampled_from(["", "NULL", "Pleiades", "abc", "ünï", "8.0", "NA"]), min_size=n, max_size=n))


@st.composite
def tables(draw):
    n = draw(st.integers(0, 6))
    cols = draw(st.lists(names, min_size=1, max_size=5, unique=True))  # a table without columns holds no rows
    return pd.DataFrame({c: _values(draw(kinds), n, draw) for c in cols}, index=pd.RangeIndex(n))


def _write(df: pd.DataFrame, path) -> bool:
    """Write the table as a user's tool would; False when that format cannot hold it."""
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        from astropy.table import Table

        if any(not str(c).isascii() for c in df.columns) or any(
            df[c].map(lambda v: isinstance(v, str) and not v.isascii()).any() for c in df.columns
        ):
            return False
        try:
            Table.from_pandas(df).write(path, overwrite=True)
        except Exception:  # noqa: BLE001 - a table FITS itself cannot hold is not our reader's case
            return False
    return True


@settings(max_examples=N_READERS, **COMMON)
@given(df=tables(), suffix=st.sampled_from([".csv", ".parquet", ".fits"]))
def test_readers_keep_every_row_or_refuse_in_one_line(tmp_path_factory, df, suffix):
    path = tmp_path_factory.mktemp("t") / f"table{suffix}"
    if not _write(df, path):
        return
    try:
        got = load_catalogue(path)
        assert len(got) == len(df)
    except ChronoflowError as exc:
        _one_line(exc)
    if suffix == ".fits":
        return
    try:
        chunks = list(table_chunks(path, chunk_rows=4))
    except ChronoflowError as exc:
        _one_line(exc)
        return
    assert sum(len(c) for c in chunks) == len(df)
    for chunk in chunks:
        try:
            aged = age_chunk(chunk, model=MODEL)
        except ChronoflowError as exc:
            _one_line(exc)
            assert not {"Prot", "BPRP_0", "e_BPRP_0"} <= set(chunk.columns)
            continue
        assert aged.index.equals(chunk.index) and len(aged) == len(chunk)


#: Odd CSV files and what each reader must do with them: ``load_catalogue`` (the catalogue schema)
#: refuses them all; the streaming reader refuses (a one-line error matching the text) or reads the
#: rows given (as {column: values}), which ``age_chunk`` then ages (the flags given) or refuses.
ODD_FILES = {
    "empty": (b"", "is empty; allowed: a CSV", "is empty; allowed: a CSV", None),
    "blank line": (b"\n", "No columns to parse", "No columns to parse", None),
    "undecodable": (b"\xff\xfe\x00garbage", "UnicodeDecodeError", "UnicodeDecodeError", None),
    "semicolons": (b"Prot;BPRP_0;e_BPRP_0\n8;1.0;0.02\n", "looks semicolon-separated", "looks semicolon-separated", None),
    "duplicate column": (b"Prot,BPRP_0,Prot,e_BPRP_0\n8,1.0,9,0.02\n", "'Prot' appears more than once",
                         "'Prot' appears more than once", None),  # fmt: skip
    "header only": (b"Prot,BPRP_0,e_BPRP_0\n", "missing columns 'GaiaDR3_ID'", {"Prot": [], "BPRP_0": [], "e_BPRP_0": []}, []),
    # rows longer than the header: the columns stay where the header puts them (pandas would
    # otherwise take the first fields as an index and shift every column left)
    "extra fields": (b"a,b\n1,2,3,4\n", "missing columns 'GaiaDR3_ID'", {"a": [1], "b": [2]}, "missing columns 'Prot', 'BPRP_0', 'e_BPRP_0'"),
    "trailing commas": (b"Prot,BPRP_0,e_BPRP_0,G_0\n8.0,1.0,0.02,14.0,\n12.0,NULL,0.03,15.0,\n", "missing columns 'GaiaDR3_ID'",
                        {"Prot": [8.0, 12.0], "BPRP_0": [1.0, None], "e_BPRP_0": [0.02, 0.03], "G_0": [14.0, 15.0]},
                        ["", "missing_value"]),  # fmt: skip
}


@pytest.mark.parametrize("name", list(ODD_FILES))
def test_odd_files_are_refused_in_one_line_or_read(tmp_path, name):
    content, catalogue_error, chunks, ageing = ODD_FILES[name]
    path = tmp_path / "odd.csv"
    path.write_bytes(content)
    with pytest.raises(ChronoflowError, match=catalogue_error) as exc:
        load_catalogue(path)
    _one_line(exc.value)
    if isinstance(chunks, str):
        with pytest.raises(ChronoflowError, match=chunks) as exc:
            list(table_chunks(path))
        _one_line(exc.value)
        return
    (chunk,) = list(table_chunks(path))  # a small file: one chunk
    assert list(chunk.columns) == list(chunks) and chunk.index.equals(pd.RangeIndex(len(chunk)))
    for column, values in chunks.items():
        np.testing.assert_array_equal(pd.to_numeric(chunk[column]).to_numpy(float), np.array(values, dtype=float), err_msg=column)
    if isinstance(ageing, str):
        with pytest.raises(ChronoflowError, match=ageing) as exc:
            age_chunk(chunk, model=MODEL)
        _one_line(exc.value)
        return
    aged = age_chunk(chunk, model=MODEL)
    assert aged.index.equals(chunk.index) and aged["flag"].tolist() == ageing
    assert aged["log10_age_median"].notna().tolist() == [f == "" for f in ageing]
    if ageing:  # the row read is the row written: the same age as that star given directly
        direct = star_ages(pd.DataFrame({"Prot": [8.0], "BPRP_0": [1.0], "e_BPRP_0": [0.02]}), model=MODEL)
        assert aged["log10_age_median"].iloc[0] == pytest.approx(direct["log10_age_median"].iloc[0], abs=1e-9)
