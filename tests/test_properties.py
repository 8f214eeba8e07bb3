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


def _number(v) -> float:
    try:
        return float(v) if not isinstance(v, str) else float(v.strip())
    except ValueError:
        return math.nan


def expected_flags(df: pd.DataFrame) -> list[str]:
    """The domain rule, row by row, as the docs state it (docs/reliability.md)."""
    d = MODEL.domain
    out = []
    for prot, col, err in zip(*(df[c].map(_number) for c in ("Prot", "BPRP_0", "e_BPRP_0"))):
        f = []
        if not all(math.isfinite(v) for v in (prot, col, err)):
            out.append("missing_value")
            continue
        positive = prot > 0 and err > 0
        if not positive:
            f.append("nonpositive")
        if positive and not d.log10_prot[0] <= math.log10(prot) <= d.log10_prot[1]:
            f.append("period_outside_domain")
        if not d.bprp0[0] <= col <= d.bprp0[1]:
            f.append("colour_outside_domain")
        if not -1.0 <= col <= 6.0:
            f.append("colour_impossible")
        if positive and math.log10(err) > d.log10_e_bprp0[1]:
            f.append("error_above_domain")
        if positive and math.log10(err) < d.log10_e_bprp0[0]:
            f.append("error_below_domain")
        out.append(";".join(f))
    return out


@settings(max_examples=N_AGES, **COMMON)
@given(values=rows, kind=index, include=st.booleans())
def test_star_ages_keep_every_row_and_flag_by_the_rule(values, kind, include):
    df = _frame(values, kind)
    out = star_ages(df, model=MODEL, include_out_of_domain=include)
    assert len(out) == len(df) and out.index.equals(df.index) and out["name"].tolist() == df["name"].tolist()
    want = expected_flags(df)
    never = ("missing_value", "nonpositive", "colour_impossible") + (() if include else ("period_outside_domain", "colour_outside_domain", "error_above_domain"))
    for got, exp, median, p16, p84 in zip(out["flag"], want, out["log10_age_median"], out["log10_age_p16"], out["log10_age_p84"]):
        tokens = got.split(";")
        # the input-domain flags (the rotation flags have their own tests: tests/test_rotation_flags.py)
        domain_part = [t for t in tokens if t and not t.startswith("age_") and t != "zero_likelihood" and t not in ROTATION_FLAGS]
        assert ";".join(domain_part) == exp
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
    assert res.stars["flag"].tolist() == expected_flags(df)
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


@pytest.mark.parametrize("content", [b"", b"\n", b"Prot,BPRP_0,e_BPRP_0\n", b"\xff\xfe\x00garbage", b"a,b\n1,2,3,4\n"])
def test_odd_files_are_refused_in_one_line_or_read(tmp_path, content):
    path = tmp_path / "odd.csv"
    path.write_bytes(content)
    try:
        load_catalogue(path)
    except ChronoflowError as exc:
        _one_line(exc)
    try:
        for chunk in table_chunks(path):
            age_chunk(chunk, model=MODEL)
    except ChronoflowError as exc:
        _one_line(exc)
