"""astropy Tables in, the same kind out: units converted at the boundary, wrong units refused."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.table import MaskedColumn, QTable, Table

import chronoflow as cf
from chronoflow.data.catalogue import read_table
from chronoflow.data.tables import UNITS, like_input, to_frame
from chronoflow.errors import ChronoflowError


@pytest.fixture(scope="module")
def model():
    return cf.load_model()


@pytest.fixture(scope="module")
def pleiades(catalogue):
    return catalogue[catalogue["cluster"] == "Pleiades"].reset_index(drop=True)


def _as_table(df: pd.DataFrame, cls=Table, prot_unit=u.d) -> Table:
    """The frame as an astropy table with units, the period in ``prot_unit``."""
    table = cls.from_pandas(df, units={n: UNITS[n] for n in UNITS if n in df.columns})
    table["Prot"] = table["Prot"].to(prot_unit) if cls is QTable else table["Prot"].quantity.to(prot_unit)
    return table


def test_to_frame_converts_known_units_keeps_the_others_and_masks_become_nan():
    table = Table({"Prot": MaskedColumn([24.0, 36.0, 1.0], mask=[False, False, True], unit="h"),
                   "fiducial_age_Myr": [0.1, 0.2, 0.3] * u.Gyr, "flux": [1.0, 2.0, 3.0] * u.Jy, "name": ["a", "b", "c"]})  # fmt: skip
    frame, origin = to_frame(table)
    np.testing.assert_allclose(frame["Prot"].to_numpy(), [1.0, 1.5, np.nan])
    np.testing.assert_allclose(frame["fiducial_age_Myr"].to_numpy(), [100.0, 200.0, 300.0])
    np.testing.assert_allclose(frame["flux"].to_numpy(), [1.0, 2.0, 3.0])  # unknown column: values as given
    assert table["Prot"].unit == u.h, "the user's table is not modified"
    back = like_input(frame, origin)
    assert type(back) is Table
    assert back["Prot"].unit == u.d and back["fiducial_age_Myr"].unit == u.Myr and back["flux"].unit == u.Jy
    assert bool(back["Prot"].mask[2]) and list(back["name"]) == ["a", "b", "c"]


@pytest.mark.parametrize(("column", "unit", "allowed"), [("Prot", u.mag, "d"), ("BPRP_0", u.s, "mag"),
                                                          ("fiducial_age_Myr", u.pc, "Myr")])  # fmt: skip
def test_a_wrong_kind_of_unit_is_refused_in_one_line(column, unit, allowed):
    with pytest.raises(ChronoflowError, match=rf"column '{column}' of df has unit {unit}; allowed: a unit convertible to {allowed}$"):
        cf.star_ages(QTable({column: [1.0] * unit}))


def test_other_types_and_multidimensional_columns_are_refused():
    with pytest.raises(ChronoflowError, match="expected a pandas DataFrame or an astropy Table/QTable, got dict"):
        to_frame({"Prot": [1.0]})
    with pytest.raises(ChronoflowError, match=r"column 'Prot' of the table has shape \(2,\) per row"):
        to_frame(Table({"Prot": np.ones((3, 2))}))


@pytest.mark.parametrize("cls", [Table, QTable])
def test_star_ages_table_in_table_out_equals_the_dataframe_path(model, pleiades, cls):
    rows = pleiades.head(40)
    expected = cf.star_ages(rows, model=model)
    got = cf.star_ages(_as_table(rows, cls, prot_unit=u.h), model=model)
    assert type(got) is cls and len(got) == len(rows)
    assert got["age_myr_median"].unit == u.Myr and got["Prot"].unit == u.d
    for col in ("log10_age_p16", "log10_age_median", "log10_age_p84"):
        # hours -> days changes the period's last bits: the ages agree to far below their width
        np.testing.assert_allclose(np.asarray(got[col], dtype=float), expected[col].to_numpy(), rtol=0, atol=1e-9)
    assert list(got["flag"]) == list(expected["flag"])


def test_cluster_age_of_a_table_matches_and_keeps_its_stars_as_a_table(model, pleiades):
    expected = cf.cluster_age(pleiades, model=model)
    got = cf.cluster_age(_as_table(pleiades, QTable, prot_unit=u.h), model=model)
    assert isinstance(got.stars, QTable) and got.stars["Prot"].unit == u.d
    for key in ("p16", "median", "p84"):
        assert got.summary[key] == pytest.approx(expected.summary[key], abs=1e-9)
    assert got.n_used == expected.n_used and got.error_dex["total"] == pytest.approx(expected.error_dex["total"], abs=1e-9)
    np.testing.assert_array_equal(np.asarray(got.stars["used"]), expected.stars["used"].to_numpy())
    from chronoflow.plotting import plot_cluster_age

    plot_cluster_age(got, model)  # the plot reads a Table's stars as it reads a DataFrame's


def test_cluster_ages_of_a_table(model, catalogue):
    rows = catalogue[catalogue["cluster"].isin(["Hyades", "NGC6811"])]
    summary, results = cf.cluster_ages(Table.from_pandas(rows), model=model)
    assert type(summary) is Table and set(summary["cluster"]) == {"Hyades", "NGC6811"}
    assert all(type(r.stars) is Table for r in results.values())
    assert summary["age_myr_median"].unit == u.Myr


def test_sample_periods_with_quantities_gives_a_qtable_in_the_packages_units(model):
    plain = cf.sample_periods([120.0, 600.0], [0.9, 1.3], n=3, seed=4, model=model)
    table = cf.sample_periods([0.12, 0.6] * u.Gyr, [0.9, 1.3] * u.mag, n=3, seed=4, model=model)
    assert isinstance(table, QTable) and isinstance(plain, pd.DataFrame)
    assert table["age_myr"].unit == u.Myr and table["prot_d"].unit == u.d
    np.testing.assert_allclose(table["age_myr"].value, plain["age_myr"].to_numpy())
    np.testing.assert_allclose(table["prot_d"].value, plain["prot_d"].to_numpy(), rtol=1e-12)


def test_catalogue_readers_and_writers_take_tables(catalogue, tmp_path):
    rows = catalogue.head(50).reset_index(drop=True)
    table = _as_table(rows, Table, prot_unit=u.h)
    cf.validate_catalogue(table)  # hours are converted before the schema's rules
    path = cf.save_catalogue(table, tmp_path / "part.fits")
    back = read_table(path)
    np.testing.assert_allclose(back["Prot"].to_numpy(), rows["Prot"].to_numpy(), rtol=1e-12)
    assert Table.read(path)["Prot"].unit == u.d
    # a FITS file written by someone else, with the period in hours: read in days
    table.write(tmp_path / "hours.fits")
    np.testing.assert_allclose(read_table(tmp_path / "hours.fits")["Prot"].to_numpy(), rows["Prot"].to_numpy(), rtol=1e-12)


def test_add_cluster_returns_the_catalogues_kind_and_converts_alias_units(catalogue):
    base = Table.from_pandas(catalogue.head(20).reset_index(drop=True))
    new = QTable({"period": [120.0, 192.0] * u.h, "bprp0": [1.0, 1.2] * u.mag, "e_bprp0": [0.02, 0.02] * u.mag,
                  "age_myr": [0.5, 0.5] * u.Gyr})  # fmt: skip
    merged = cf.add_cluster(base, new, cluster="Mine")
    assert type(merged) is Table and len(merged) == 22
    mine = merged[merged["cluster"] == "Mine"]
    np.testing.assert_allclose(np.asarray(mine["fiducial_age_Myr"]), [500.0, 500.0])
    np.testing.assert_allclose(np.asarray(mine["Prot"]), [5.0, 8.0])


@pytest.mark.slow
def test_full_cluster_age_of_a_table_keeps_its_stars_as_a_table(model, catalogue):
    rows = catalogue[catalogue["cluster"] == "Hyades"].reset_index(drop=True)
    full = cf.full_cluster_age(_as_table(rows, Table, prot_unit=u.h), "Hyades", model=model, draws=50, tune=50,
                               chains=1, cores=1, seed=0, progressbar=False, log_likelihood=False)  # fmt: skip
    assert type(full.stars) is Table and full.stars["Prot"].unit == u.d
    assert len(full.stars) == len(rows) and "p_member" in full.stars.colnames
    fast = cf.cluster_age(rows, model=model)  # the fast age inside is that of the same stars in days
    assert full.fast.summary["median"] == pytest.approx(fast.summary["median"], abs=1e-9)
    assert int(np.sum(full.stars["used"])) == fast.n_used
