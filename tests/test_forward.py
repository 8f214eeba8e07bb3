"""Forward modelling: sampled periods, synthetic clusters, tracks, density maps, bad arguments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chronoflow.flows.artifact import load_model
from chronoflow.errors import DomainError
from chronoflow.flows.flow import make_context
from chronoflow.analysis.forward import density_map, sample_periods, spin_down_tracks, synthetic_cluster


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_sampled_periods_reproduce_the_flow_quantiles(model):
    draws = sample_periods(600.0, 1.0, 0.02, n=6000, seed=3, model=model)
    assert len(draws) == 6000 and set(draws.columns) >= {"age_myr", "bprp0", "prot_d", "log10_prot", "draw"}
    for q in (0.16, 0.5, 0.84):
        expected = float(model.quantile(q, make_context(600.0, 1.0, 0.02)))
        assert np.quantile(draws["log10_prot"], q) == pytest.approx(expected, abs=0.03)


def test_sampling_broadcasts_and_is_seeded(model):
    a = sample_periods([50.0, 500.0], [[0.8], [1.5]], n=3, seed=1, model=model)
    assert len(a) == 12 and sorted(a["age_myr"].unique()) == [50.0, 500.0]
    b = sample_periods([50.0, 500.0], [[0.8], [1.5]], n=3, seed=1, model=model)
    np.testing.assert_array_equal(a["prot_d"], b["prot_d"])


def test_astropy_quantities(model):
    from astropy import units as u

    a = sample_periods(0.6 * u.Gyr, 1.0 * u.mag, n=2, seed=0, model=model)
    assert a["age_myr"][0].to_value(u.Myr) == pytest.approx(600.0)  # a QTable, in the package's units
    with pytest.raises(DomainError, match="expected something convertible to Myr"):
        sample_periods(3 * u.m, 1.0, model=model)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"ages": -5.0}, "ages must be finite and > 0 Myr"),
        ({"ages": 13000.0}, "outside the model's calibrated range .* allow_extrapolation=True"),
        ({"n": 0}, "n must be >= 1"),
        ({"colours": [1.0, np.nan, 1.2, np.nan]}, r"colours\[1\] = nan \(2 such value\(s\)\); allowed: finite"),
        ({"colour_err": [0.02, 0.0]}, r"colour_err\[1\] = 0.0 \(1 such value\(s\)\); allowed: finite and > 0 mag"),
    ],
)
def test_bad_arguments(model, kwargs, pattern):
    # A bad value is named by its position and value, with what is allowed (one line).
    args = {"ages": 100.0, "colours": 1.0, "colour_err": 0.02, "n": 1} | kwargs
    with pytest.raises(DomainError, match=pattern):
        sample_periods(args.pop("ages"), args.pop("colours"), args.pop("colour_err"), n=args.pop("n"), model=model)


def test_extrapolation_on_request(model):
    """Beyond the calibrators (3.9 Gyr) the draws come from the flow at the age asked for, not at
    the edge of the domain: a KS test against the flow's own CDF at 6 Gyr, seeded draws."""
    import warnings

    from scipy import stats

    from chronoflow.flows.flow import DomainWarning

    with pytest.raises(DomainError, match="allow_extrapolation=True"):
        sample_periods(6000.0, 1.0, n=5, seed=0, model=model)
    out = sample_periods(6000.0, 1.0, n=1500, seed=0, model=model, allow_extrapolation=True)
    assert len(out) == 1500 and (out["age_myr"] == 6000.0).all() and np.isfinite(out["log10_prot"]).all()
    np.testing.assert_allclose(out["prot_d"], 10 ** out["log10_prot"], rtol=1e-12)
    ctx = make_context(6000.0, 1.0, 0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)
        flow_cdf = lambda v: model.cdf(np.asarray(v), ctx)  # noqa: E731
        assert stats.kstest(out["log10_prot"], flow_cdf).pvalue > 1e-3
        median = float(model.quantile(0.5, ctx, check_domain=False))
    # Sun-like colour: the slow sequence keeps spinning down. The flow's medians at 3 and 6 Gyr are
    # 1.35 and 1.44 (log10 d); the sample medians are within 0.01 dex of them (MC sd ~ 0.003 dex).
    young = sample_periods(3000.0, 1.0, n=1500, seed=0, model=model)
    assert np.median(out["log10_prot"]) == pytest.approx(median, abs=0.01)
    assert np.median(out["log10_prot"]) > np.median(young["log10_prot"]) + 0.05
    first, again, other = (sample_periods(6000.0, 1.0, n=200, seed=s, model=model, allow_extrapolation=True) for s in (0, 0, 1))
    np.testing.assert_array_equal(first["log10_prot"], again["log10_prot"])
    assert not np.allclose(first["log10_prot"], other["log10_prot"])


def test_synthetic_cluster_contents(model):
    df = synthetic_cluster(300.0, 400, f_field=0.2, f_outlier=0.1, reddening_offset=0.05, seed=4, model=model)
    assert len(df) == 400
    assert df["is_member"].mean() == pytest.approx(0.8, abs=0.06)
    members = df[df["is_member"]]
    assert members["is_outlier"].mean() == pytest.approx(0.1, abs=0.05)
    assert not df.loc[~df["is_member"], "is_outlier"].any()
    np.testing.assert_allclose(df["BPRP_0"] - df["true_bprp0"], 0.05)
    assert (members["mem_prob_source"] >= 0.7).all() and (df.loc[~df["is_member"], "mem_prob_source"] <= 0.5).all()
    from chronoflow.data.catalogue import validate_catalogue

    validate_catalogue(df)  # the catalogue schema holds
    again = synthetic_cluster(300.0, 400, f_field=0.2, f_outlier=0.1, reddening_offset=0.05, seed=4, model=model)
    np.testing.assert_array_equal(df["Prot"], again["Prot"])


def test_synthetic_cluster_age_spread_and_colours(model):
    pool = np.array([0.8, 1.0, 1.2])
    df = synthetic_cluster(100.0, 300, colours=pool, age_spread_dex=0.1, seed=1, model=model)
    assert set(np.round(df["true_bprp0"], 6)) <= set(pool)
    assert df["true_log10_age"].std() == pytest.approx(0.1, abs=0.02)
    with pytest.raises(DomainError, match="n_stars must be >= 1"):
        synthetic_cluster(100.0, 0, model=model)
    with pytest.raises(DomainError, match="f_field must be in"):
        synthetic_cluster(100.0, 10, f_field=1.5, model=model)


def test_tracks_spin_down_for_fgk_stars(model):
    tracks = spin_down_tracks([0.8, 1.0, 1.2], np.geomspace(150, 3500, 25), model=model)
    assert len(tracks) == 75
    for _, t in tracks.groupby("bprp0"):
        assert np.all(np.diff(t["prot_p50"]) > 0)  # slow rotators of FGK colours spin down with age
        assert np.all(t["prot_p2.5"] < t["prot_p16"]) and np.all(t["prot_p84"] < t["prot_p97.5"])


def test_density_map_normalized(model):
    log_p = np.linspace(-3, 3.5, 1500)
    dens = density_map(model, 500.0, np.array([0.7, 1.3, 2.5]), log_p)
    assert dens.shape == (1500, 3)
    np.testing.assert_allclose(np.trapezoid(dens, log_p, axis=0), 1.0, atol=2e-3)


def test_cli_forward_and_tracks(tmp_path):
    import subprocess
    import sys

    import pandas as pd

    res = subprocess.run([sys.executable, "-m", "chronoflow.cli", "forward", "--age", "650", "--n", "50", "--out",
                          str(tmp_path / "pop.csv"), "--plot", str(tmp_path / "pop.png")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(pd.read_csv(tmp_path / "pop.csv", na_values=["NULL"])) == 50 and (tmp_path / "pop.png").exists()
    res = subprocess.run([sys.executable, "-m", "chronoflow.cli", "tracks", "--colour", "0.8", "--colour", "1.5", "--out",
                          str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(pd.read_csv(tmp_path / "t.csv")["bprp0"].unique()) == [0.8, 1.5] and (tmp_path / "t.png").exists()
    res = subprocess.run([sys.executable, "-m", "chronoflow.cli", "forward", "--age", "-3", "--n", "5", "--out",
                          str(tmp_path / "x.csv")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: ages must be finite and > 0 Myr")


def test_colours_get_the_same_gate_as_ages():
    """tracks --colour 9 used to exit 0 with periods that fall with age: a colour outside the
    training colours needs allow_extrapolation, and one no star has is refused always."""
    from chronoflow.analysis.forward import sample_periods, spin_down_tracks
    from chronoflow.errors import DomainError

    with pytest.raises(DomainError, match=r"\(BP-RP\)0 = 9 mag is not a star's colour"):
        spin_down_tracks([9.0], allow_extrapolation=True)
    with pytest.raises(DomainError, match="outside the model's training colours"):
        spin_down_tracks([4.5])
    assert len(spin_down_tracks([4.5], ages=[100.0], allow_extrapolation=True)) == 1
    with pytest.raises(DomainError, match="outside the model's training colours"):
        sample_periods(100.0, 4.5)
    with pytest.raises(DomainError, match="is not a star's colour"):
        sample_periods(100.0, -3.0, allow_extrapolation=True)


def test_an_impossible_colour_is_never_aged():
    from chronoflow.inference.ages import star_ages

    df = pd.DataFrame({"Prot": [8.0, 8.0], "BPRP_0": [1e6, 1.2], "e_BPRP_0": [0.02, 0.02]})
    out = star_ages(df, include_out_of_domain=True, device="cpu")
    assert np.isnan(out.loc[0, "log10_age_median"]) and "colour_impossible" in out.loc[0, "flag"]
    assert np.isfinite(out.loc[1, "log10_age_median"])
