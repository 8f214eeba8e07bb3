"""Tests of chronoflow.data.extinction: the Gaia EDR3 extinction law, de-reddening and dust maps."""

from __future__ import annotations

import subprocess
import sys
import warnings

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord

from chronoflow.errors import DomainError
from chronoflow.data.extinction import (
    BPRP0_RANGE,
    DeredFlag,
    DustMapMissingError,
    ExtinctionConvergenceWarning,
    ExtinctionRangeWarning,
    deredden_bprp,
    deredden_table,
    extinction_coefficients,
    extinction_from_dustmap,
)

# An independent oracle from the ESA file Fitz19_EDR3_MainSequence.csv
# (https://www.cosmos.esa.int/web/gaia/edr3-extinction-law): the Xname = TeffNorm rows
# (X = Teff / 5040 K), a separate fit of the same model grid in another variable, which the module
# does not use. Order a1..a10 as in the module.
TEFF_ROWS = {
    "BP": (0.888088914696666, 0.11318390480077, 0.0846337732558566, -0.0371265818793239,
           -0.00296140793334905, 0.000538660562947277, -1.31018008013512e-05,
           -0.0164152179931537, 0.00323902299833464, 0.000169011297620409),
    "RP": (0.382719668454633, 0.505895415656219, -0.314981478333036, 0.0665302085130136,
           -0.00383780468169498, 6.50490784002505e-05, 1.57894227640801e-06,
           -0.00348740736346628, 0.00110877159426768, -1.8313141658225e-05),
    "G": (0.259021858973784, 0.93676111876298, -0.437446499585492, 0.0783508476444952,
          -0.00136127433235224, 0.000797222688660053, -2.52364537395233e-05,
          -0.029981504413869, 0.00555506017434798, 0.000402778419603886),
}  # fmt: skip


def _k10(c, x, a):
    """The ESA formula, written term by term from the file's column names (Intercept, X, X2, X3,
    A, A2, A3, XA, AX2, XA2)."""
    xa, ax2, xa2 = x * a, a * x**2, x * a**2
    return (c[0] + c[1] * x + c[2] * x**2 + c[3] * x**3 + c[4] * a + c[5] * a**2 + c[6] * a**3
            + c[7] * xa + c[8] * ax2 + c[9] * xa2)  # fmt: skip


def _redden(bprp0, a0):
    k_bp, k_rp, _ = extinction_coefficients(bprp0, a0)
    return bprp0 + a0 * (k_bp - k_rp)


# --- extinction coefficients -------------------------------------------------------------------


# Casagrande & VandenBerg (2018, MNRAS 479, L102): R_BP = 3.374 and R_RP = 2.035 per unit E(B-V)
# in the low-reddening limit (R_V = 3.1), i.e. E(BP-RP) = 1.339 E(B-V) for solar-type stars.
CV18_EBPRP_PER_EBV = 3.374 - 2.035
# Their coefficients are for the Gaia DR2 passbands and another extinction curve; this law is for
# the EDR3 passbands and the Fitzpatrick (2019) curve, with fit errors up to 1.5 % (BP) and 1 % (RP)
# on the ESA page. 5 % allows for those differences; the usual slips lie far outside it (k_G in
# place of k_BP: -47 %; A0 taken as E(B-V), i.e. R_V dropped: -68 %; BP and RP swapped: < 0).
CV18_REL_TOL = 0.05
SUN_BPRP0 = 0.82  # Casagrande & VandenBerg (2018)


@pytest.mark.parametrize("ebv", [0.005, 0.02, 0.05, 0.1])  # low reddening, where CV18's constants apply
def test_a_solar_star_of_known_reddening_is_dereddened_to_the_solar_colour(ebv):
    # The observed colour built from the literature relation, not from this module's law.
    observed = SUN_BPRP0 + CV18_EBPRP_PER_EBV * ebv
    res = deredden_bprp(observed, ebv=ebv, e_bprp_obs=0.01, e_ebv=0.0)
    assert res.flags == DeredFlag.OK
    assert res.excess / ebv == pytest.approx(CV18_EBPRP_PER_EBV, rel=CV18_REL_TOL)
    assert abs(res.bprp0 - SUN_BPRP0) <= CV18_REL_TOL * CV18_EBPRP_PER_EBV * ebv
    assert res.a0 == pytest.approx(3.1 * ebv, rel=1e-12)  # A0 = R_V E(B-V), R_V = 3.1


def test_reddening_grows_with_ebv_and_zero_reddening_changes_nothing():
    ebv = np.linspace(0.0, 0.4, 41)  # every intrinsic colour stays inside the law's range
    for observed in (0.8, 1.2, 2.0):
        res = deredden_bprp(np.full_like(ebv, observed), ebv=ebv)
        assert res.bprp0[0] == observed and res.excess[0] == 0.0
        assert np.all(np.diff(res.bprp0) < 0) and np.all(np.diff(res.excess) > 0)
        assert np.allclose(res.bprp0 + res.excess, observed, rtol=0, atol=1e-12)  # excess = obs - intrinsic
        assert np.all(res.flags == DeredFlag.OK)


def test_bands_lose_less_per_unit_a0_for_redder_light():
    # A redder spectrum in a band moves its effective wavelength to where the extinction curve is
    # lower: k falls as A0 grows (the dust reddens the in-band light) in every band and, for the
    # broad G band, as the star's own colour grows.
    x, a = np.meshgrid(np.linspace(*BPRP0_RANGE, 60), np.linspace(0.0, 20.0, 41))
    k_bp, k_rp, k_g = extinction_coefficients(x, a)
    for k in (k_bp, k_rp, k_g):
        assert np.all(np.diff(k, axis=0) < 0)  # along A0
    assert np.all(np.diff(k_g, axis=1) < 0)  # along (BP-RP)0


@pytest.mark.parametrize("a0", [0.01, 0.5, 1.0, 3.0, 10.0, 20.0])
def test_colour_law_agrees_with_the_teff_law_for_the_sun(a0):
    # Sun: Teff = 5772 K (IAU 2015 B3), (BP-RP)0 = 0.82 mag (Casagrande & VandenBerg 2018,
    # MNRAS 479, L102). The ESA page quotes fit errors <= 1% (RP), 1.5% (BP), 3.5% (G); the
    # two parameterisations agree to <= 0.65% here, so a gross slip in the law would show.
    got = dict(zip(("BP", "RP", "G"), extinction_coefficients(0.82, a0)))
    for band, row in TEFF_ROWS.items():
        assert got[band] == pytest.approx(_k10(row, 5772.0 / 5040.0, a0), rel=0.01), band


def test_bp_above_g_above_rp_over_the_whole_validity_range():
    x, a = np.meshgrid(np.linspace(*BPRP0_RANGE, 60), np.linspace(0.0, 20.0, 41))
    k_bp, k_rp, k_g = extinction_coefficients(x, a)
    assert np.all(k_bp > k_g) and np.all(k_g > k_rp) and np.all(k_rp > 0)


def test_coefficients_are_clamped_outside_the_range_and_nan_for_bad_input():
    edge = extinction_coefficients(BPRP0_RANGE[1], 20.0)
    assert np.allclose(extinction_coefficients(3.5, 25.0), edge)  # no cubic extrapolation
    k_bp, k_rp, k_g = extinction_coefficients([np.nan, 1.0, 1.0], [0.1, -0.1, np.nan])
    assert np.isnan(k_bp).all() and np.isnan(k_rp).all() and np.isnan(k_g).all()
    with pytest.raises(DomainError, match="broadcast"):
        extinction_coefficients([1.0, 2.0], [0.1, 0.2, 0.3])


# --- de-reddening -------------------------------------------------------------------------------


@pytest.mark.parametrize("a0", [0.05, 0.5, 2.0, 4.0])
def test_round_trip_recovers_the_intrinsic_colour(a0):
    bprp0 = np.linspace(-0.05, 2.45, 51)
    obs = _redden(bprp0, a0)
    res = deredden_bprp(obs, a0=a0)
    assert np.max(np.abs(res.bprp0 - bprp0)) < 1e-6
    assert np.allclose(res.excess, obs - bprp0, atol=1e-9)
    assert np.all(res.flags == DeredFlag.OK)


def test_zero_extinction_is_the_identity():
    obs = np.array([0.3, 1.1, 2.2])
    res = deredden_bprp(obs, a0=0.0, e_bprp_obs=0.02, e_a0=0.0)
    assert np.array_equal(res.bprp0, obs) and np.all(res.excess == 0.0)
    assert np.allclose(res.e_bprp0, 0.02, rtol=0, atol=1e-15)


def test_scalars_in_give_scalars_out():
    res = deredden_bprp(1.0, a0=0.2)
    assert np.ndim(res.bprp0) == 0 and np.ndim(res.flags) == 0 and isinstance(res.bprp0, float)


def test_error_propagation_matches_numerical_derivatives_of_the_solver():
    obs, a0, h = 1.3, 1.5, 1e-6
    # Oracle: differentiate the solver itself by finite differences.
    d_obs = (deredden_bprp(obs + h, a0=a0).bprp0 - deredden_bprp(obs - h, a0=a0).bprp0) / (2 * h)
    d_a0 = (deredden_bprp(obs, a0=a0 + h).bprp0 - deredden_bprp(obs, a0=a0 - h).bprp0) / (2 * h)
    s_obs, s_a0 = 0.01, 0.1
    res = deredden_bprp(obs, a0=a0, e_bprp_obs=s_obs, e_a0=s_a0)
    assert res.e_bprp0 == pytest.approx(np.hypot(d_obs * s_obs, d_a0 * s_a0), rel=1e-5)


def test_zero_a0_error_keeps_the_observed_error_and_a0_error_adds():
    base = deredden_bprp(1.0, a0=0.3, e_bprp_obs=0.01, e_a0=0.0).e_bprp0
    # With sigma_A0 = 0 only the Jacobian 1 / (1 + A0 d(kBP-kRP)/dX) ~ 1.02 scales the error.
    assert base == pytest.approx(0.01, rel=0.03)
    errs = [deredden_bprp(1.0, a0=0.3, e_bprp_obs=0.01, e_a0=s).e_bprp0 for s in (0.05, 0.1, 0.3)]
    assert base < errs[0] < errs[1] < errs[2]


def test_ebv_path_equals_a0_path_with_rv_3_1():
    a = deredden_bprp([0.8, 1.6], ebv=[0.1, 0.4], e_bprp_obs=0.01, e_ebv=0.02)
    b = deredden_bprp([0.8, 1.6], a0=[0.31, 1.24], e_bprp_obs=0.01, e_a0=0.062)
    for name in ("bprp0", "e_bprp0", "excess", "a0"):
        assert np.allclose(getattr(a, name), getattr(b, name), rtol=1e-12), name


def test_quantities_are_accepted_and_wrong_units_rejected():
    plain = deredden_bprp(1.2, a0=0.5, e_bprp_obs=0.01)
    q = deredden_bprp(1.2 * u.mag, a0=500 * u.mmag, e_bprp_obs=10 * u.mmag)
    assert q.bprp0 == pytest.approx(plain.bprp0) and q.e_bprp0 == pytest.approx(plain.e_bprp0)
    with pytest.raises(DomainError, match="a0 must be in mag"):
        deredden_bprp(1.2, a0=0.5 * u.deg)


def test_bad_values_give_nan_and_flags_without_touching_good_stars():
    res = deredden_bprp([1.0, np.nan, 1.0, 1.0, 1.0], a0=[0.2, 0.2, -0.1, np.inf, 0.2],
                        e_bprp_obs=[0.01, 0.01, 0.01, 0.01, -1.0])  # fmt: skip
    assert list(res.flags) == [0, DeredFlag.BAD_INPUT, DeredFlag.NEGATIVE_A0,
                               DeredFlag.BAD_INPUT, DeredFlag.BAD_INPUT]  # fmt: skip
    assert np.isfinite(res.bprp0[0]) and np.isnan(res.bprp0[1:]).all()
    assert res.bprp0[0] == pytest.approx(deredden_bprp(1.0, a0=0.2).bprp0)


def test_out_of_range_stars_are_flagged_and_warned_about():
    with pytest.warns(ExtinctionRangeWarning, match="outside"):
        res = deredden_bprp([1.0, 3.5, 1.0], a0=[0.1, 0.1, 25.0])
    assert res.flags[0] == DeredFlag.OK
    assert res.flags[1] & DeredFlag.COLOUR_OUT_OF_RANGE
    assert res.flags[2] & DeredFlag.A0_OUT_OF_RANGE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in-range input must stay silent
        deredden_bprp([0.5, 2.0], a0=1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"bprp_obs": 1.0}, r"^deredden_bprp needs exactly one of a0= or ebv=$"),
     ({"bprp_obs": 1.0, "a0": 0.1, "ebv": 0.03}, r"^deredden_bprp needs exactly one of a0= or ebv=$"),
     ({"bprp_obs": [1.0, 2.0], "a0": [0.1] * 3}, r"^input shapes do not broadcast: .*'bprp_obs': \(2,\), 'a0': \(3,\)"),
     ({"bprp_obs": "red", "a0": 0.1}, r"^bprp_obs must be numeric \(mag\), got str$"),
     ({"bprp_obs": 1.0, "a0": 0.1, "e_ebv": 0.01}, r"^e_ebv was given without ebv; give e_a0 together with a0$")],
)  # fmt: skip
def test_call_mistakes_raise_one_line_domain_errors(kwargs, message):
    with pytest.raises(DomainError, match=message) as info:
        deredden_bprp(**kwargs)
    assert "\n" not in str(info.value)  # each names the mistake in one line


def test_a_star_that_does_not_converge_is_flagged_and_the_others_kept():
    # Observed BP-RP = 7.5 mag behind A0 = 16 mag: Newton's method cycles between the clamped
    # edges of the law (found by a grid search; the default 50 iterations never settle).
    obs, a0 = [1.0, 7.5, 1.6, np.nan], [0.3, 16.0, 2.0, 0.1]
    with pytest.warns(ExtinctionConvergenceWarning, match=r"^1 star\(s\) did not converge in max_iter=50 iterations") as rec:
        res = deredden_bprp(obs, a0=a0, e_bprp_obs=0.01, e_a0=0.05)
    assert len([w for w in rec if w.category is ExtinctionConvergenceWarning]) == 1
    assert res.flags[1] == DeredFlag.NOT_CONVERGED and res.flags[3] == DeredFlag.BAD_INPUT
    assert res.flags[0] == DeredFlag.OK and res.flags[2] == DeredFlag.OK
    for name in ("bprp0", "e_bprp0", "excess", "a0"):
        v = getattr(res, name)
        assert np.isnan(v[1]) and np.isfinite(v[[0, 2]]).all(), name
    for i in (0, 2):  # the other stars are exactly what they get on their own
        alone = deredden_bprp(obs[i], a0=a0[i], e_bprp_obs=0.01, e_a0=0.05)
        assert res.bprp0[i] == pytest.approx(alone.bprp0, abs=1e-9)
        assert res.e_bprp0[i] == pytest.approx(alone.e_bprp0, rel=1e-9)
        assert abs(_redden(res.bprp0[i], a0[i]) - obs[i]) < 1e-9  # and really solve the equation


def test_an_iteration_limit_too_small_flags_only_the_unsolved_stars():
    # A0 = 0 is solved by the first Newton step; A0 = 1 mag needs 4 (measured).
    with pytest.warns(ExtinctionConvergenceWarning, match=r"^2 star\(s\) did not converge in max_iter=1 iterations"):
        res = deredden_bprp([1.0, 1.2, 0.8], a0=[0.0, 1.0, 1.0], max_iter=1)
    assert list(res.flags) == [DeredFlag.OK, DeredFlag.NOT_CONVERGED, DeredFlag.NOT_CONVERGED]
    assert res.bprp0[0] == 1.0 and np.isnan(res.bprp0[1:]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough iterations: silent, nothing flagged
        assert deredden_bprp(1.2, a0=1.0, max_iter=4).flags == DeredFlag.OK


def test_deredden_table_adds_columns_and_leaves_the_input_intact():
    df = pd.DataFrame({"BPRP": [0.9, 1.8, np.nan], "EBV": [0.05, 0.1, 0.1], "e_BPRP": 0.01})
    before = df.copy()
    out = deredden_table(df, ebv_col="EBV", e_bprp_col="e_BPRP")
    pd.testing.assert_frame_equal(df, before)
    assert out["DERED_FLAG"].dtype == np.int16
    direct = deredden_bprp(df["BPRP"].to_numpy(), ebv=df["EBV"].to_numpy(), e_bprp_obs=0.01)
    assert np.allclose(out["BPRP_0"], direct.bprp0, equal_nan=True)
    assert np.allclose(out["e_BPRP_0"], direct.e_bprp0, equal_nan=True)
    assert np.allclose(out["E_BPRP"], direct.excess, equal_nan=True)
    assert list(out["DERED_FLAG"]) == [0, 0, DeredFlag.BAD_INPUT]
    with pytest.raises(DomainError, match="A0"):
        deredden_table(df, e_bprp_col="e_BPRP")  # default A0 column absent
    with pytest.raises(DomainError, match="not both"):
        deredden_table(df, a0_col="EBV", ebv_col="EBV", e_bprp_col="e_BPRP")


def test_deredden_table_requires_a_colour_error_and_never_writes_a_nonpositive_one():
    df = pd.DataFrame({"bp_rp": [0.9, 1.8, 1.2, 1.4, 1.1], "A0": [0.2, 0.5, 0.3, 0.0, 0.4],
                       "e_bp_rp": [0.01, 0.02, 0.0, 0.0, np.nan], "e_A0": [0.05, 0.05, 0.0, 0.05, 0.05]})  # fmt: skip
    for kwargs in ({}, {"e_a0_col": "e_A0"}):  # without a colour error: refused, whatever else is given
        with pytest.raises(DomainError) as info:
            deredden_table(df, bprp_col="bp_rp", **kwargs)
        msg = str(info.value)
        assert "\n" not in msg and "e_bprp_col=" in msg and "'bp_rp'" in msg
    out = deredden_table(df, bprp_col="bp_rp", e_bprp_col="e_bp_rp", e_a0_col="e_A0")
    err = out["e_BPRP_0"].to_numpy()
    assert np.all((err > 0) | np.isnan(err))
    # Rows 0-1: the colour and A0 errors propagated, as deredden_bprp gives them.
    direct = deredden_bprp(df["bp_rp"][:2], a0=df["A0"][:2], e_bprp_obs=df["e_bp_rp"][:2], e_a0=df["e_A0"][:2])
    assert np.allclose(err[:2], direct.e_bprp0, rtol=1e-12) and np.all(err[:2] > df["e_bp_rp"][:2])
    # Rows 2-4: a zero or missing colour error is bad input (row 3 would otherwise get a
    # positive error from e_A0 alone, row 2 exactly 0).
    assert list(out["DERED_FLAG"]) == [0, 0, DeredFlag.BAD_INPUT, DeredFlag.BAD_INPUT, DeredFlag.BAD_INPUT]
    assert out[["BPRP_0", "e_BPRP_0", "E_BPRP"]].iloc[2:].isna().all().all()
    assert out[["BPRP_0", "e_BPRP_0", "E_BPRP"]].iloc[:2].notna().all().all()


# --- dust maps ----------------------------------------------------------------------------------

# Cluster centres (ICRS, deg): Praesepe (M44) and the Hyades, both well off the plane.
PRAESEPE, HYADES = (130.10, 19.67), (66.75, 15.87)


def test_importing_the_module_does_not_import_dustmaps():
    code = "import sys, chronoflow.data.extinction; print('dustmaps' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bh_map_gives_finite_reddening_at_high_latitude():
    ra, dec = np.array([PRAESEPE[0], HYADES[0]]), np.array([PRAESEPE[1], HYADES[1]])
    b = SkyCoord(ra=ra * u.deg, dec=dec * u.deg).galactic.b.deg
    assert np.all(np.abs(b) > 10)  # BH82 covers only |b| > 10 deg
    ebv = extinction_from_dustmap(ra, dec, map_name="bh")
    assert ebv.shape == (2,) and np.all(np.isfinite(ebv)) and np.all((ebv >= 0) & (ebv < 0.5))
    assert extinction_from_dustmap(*PRAESEPE, map_name="bh", output="a0") == pytest.approx(
        3.1 * ebv[0])
    # Quantities work; the Galactic centre (b ~ 0) and an impossible dec give NaN, not a crash.
    more = extinction_from_dustmap([PRAESEPE[0], 266.4, 10.0] * u.deg, [PRAESEPE[1], -28.9, 95.0],
                                   map_name="bh")  # fmt: skip
    assert more[0] == pytest.approx(ebv[0]) and np.isnan(more[1:]).all()


@pytest.mark.parametrize("map_name", ["sfd", "bayestar", "edenhofer2023"])
def test_missing_map_files_raise_one_line_error_with_fetch_command(map_name, tmp_path):
    with pytest.raises(DustMapMissingError) as info:
        extinction_from_dustmap(*PRAESEPE, distance_pc=186.0, map_name=map_name, data_dir=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"dustmaps.{map_name}.fetch()" in msg and str(tmp_path) in msg
    assert not any(tmp_path.iterdir())  # nothing was downloaded or written


def test_sfd_reads_files_from_data_dir_and_applies_the_sf11_factor(tmp_path):
    from astropy.io import fits

    # A constant stand-in for the two SFD98 polar files (Lambert zenithal equal-area, as SFD).
    (tmp_path / "sfd").mkdir()
    for pole, lat in (("ngp", 90.0), ("sgp", -90.0)):
        hdr = fits.Header({"CTYPE1": "GLON-ZEA", "CTYPE2": "GLAT-ZEA", "CRVAL1": 0.0,
                           "CRVAL2": lat, "CRPIX1": 4.5, "CRPIX2": 4.5, "CDELT1": -30.0,
                           "CDELT2": 30.0, "LONPOLE": 180.0 if lat > 0 else 0.0})  # fmt: skip
        data = np.full((8, 8), 0.1, dtype="f4")
        fits.PrimaryHDU(data, header=hdr).writeto(tmp_path / "sfd" / f"SFD_dust_4096_{pole}.fits")
    ra, dec = [PRAESEPE[0], HYADES[0]], [PRAESEPE[1], -60.0]  # one star in each hemisphere
    raw = extinction_from_dustmap(ra, dec, map_name="sfd", data_dir=tmp_path, output="raw")
    ebv = extinction_from_dustmap(ra, dec, map_name="sfd", data_dir=tmp_path)
    assert np.allclose(raw, 0.1) and np.allclose(ebv, 0.086)  # Schlafly & Finkbeiner (2011)


def test_dustmaps_config_is_never_written(monkeypatch, tmp_path):
    from dustmaps import config as dm_config

    def refuse(*args, **kwargs):
        raise AssertionError("dustmaps config was written")

    monkeypatch.setattr(dm_config.Configuration, "save", refuse)
    extinction_from_dustmap(*HYADES, map_name="bh")
    with pytest.raises(DustMapMissingError):
        extinction_from_dustmap(*HYADES, map_name="sfd", data_dir=tmp_path)


def test_dust_map_call_mistakes_raise_domain_errors():
    with pytest.raises(DomainError, match="distance_pc"):
        extinction_from_dustmap(*PRAESEPE, map_name="bayestar")
    with pytest.raises(DomainError, match="unknown dust map"):
        extinction_from_dustmap(*PRAESEPE, map_name="planck")
    with pytest.raises(DomainError, match="output"):
        extinction_from_dustmap(*PRAESEPE, map_name="bh", output="av")
