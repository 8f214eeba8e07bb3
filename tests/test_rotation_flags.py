"""Flags of what rotation cannot tell (chronoflow.inference.rotation_flags): each flag fires on a
star built for it and not on a Sun-like star, possible combinations, NaN inputs, the binarity
columns, and the off-sequence rate on the old clusters of the catalogue."""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chronoflow.data.catalogue import training_sample
from chronoflow.errors import ChronoflowError
from chronoflow.flows.artifact import load_model
from chronoflow.inference.likelihood import OUT_OF_DOMAIN_FLAGS, UNUSABLE_FLAGS
from chronoflow.inference.rotation_flags import (
    FLAG_HELP,
    FULLY_CONVECTIVE_BPRP0,
    HOT_STAR_BPRP0,
    OFF_SEQUENCE_AGE_MYR,
    ROTATION_FLAGS,
    RUWE_BINARY,
    binarity_columns,
    rotation_flags,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def model():
    return load_model()


def _fired(model, prot_d, colour, err=0.02, **binarity) -> set[str]:
    """The flags of one star: Prot [d], (BP-RP)0 [mag], e_BPRP_0 [mag]; ruwe=, non_single_star=."""
    extra = {k: np.array([v], dtype=float) for k, v in binarity.items()}
    flags = rotation_flags(np.log10([prot_d]), np.array([colour]), np.log10([err]), model, **extra)
    assert list(flags) == list(ROTATION_FLAGS)
    assert all(m.dtype == bool and m.shape == (1,) for m in flags.values())
    return {name for name, mask in flags.items() if mask[0]}


def test_a_sun_like_star_of_about_a_gyr_is_not_flagged(model):
    # (The model's own median age for 11.5 d at this colour is about 2 Gyr.)
    # (BP-RP)0 = 0.82 (G2V, ~5780 K) lies between the Kraft break (0.677 mag) and M3V (2.50 mag);
    # at 11.5 d its Rossby number is 0.45 of the Sun's, well below the onset of weakened braking
    # (0.91); 11.5 d is above the model's median at 650 Myr (the CDF there is ~0.97, far from the
    # 5 % that marks off_sequence); RUWE 1.0 < 1.4 and non_single_star = 0.
    for prot in (11.0, 11.5, 12.0):
        assert _fired(model, prot, 0.82, 0.02, ruwe=1.0, non_single_star=0) == set()


@pytest.mark.parametrize(
    ("prot_d", "colour", "binarity", "expected"),
    [
        # 0.5 d at G2V colour: below the model's 5 % point at 650 Myr (0.85 d).
        (0.5, 0.82, {}, {"off_sequence"}),
        # An F6V star (~6340 K) at 3 d: hot, but its Ro is still below the onset (threshold ~6 d).
        (3.0, 0.65, {}, {"hot_star"}),
        # An M4.5V star at 1 d and at 20 d (Teff < 3300 K: tau_c is not used there).
        (1.0, 3.0, {}, {"fully_convective"}),
        (20.0, 3.0, {}, {"fully_convective"}),
        # The Sun itself: Ro = Ro_sun > 0.91 Ro_sun (Saunders et al. 2024 place the Sun past the onset).
        (25.4, 0.82, {}, {"weakened_braking"}),
        # A K3V star (~4850 K) at 60 d; the threshold there is ~46 d.
        (60.0, 1.2, {}, {"weakened_braking"}),
        (11.5, 0.82, {"ruwe": 1.4}, {"likely_binary"}),
        (11.5, 0.82, {"ruwe": 3.0}, {"likely_binary"}),
        (11.5, 0.82, {"non_single_star": 1}, {"likely_binary"}),
    ],
)
def test_each_flag_fires_on_a_star_built_for_it(model, prot_d, colour, binarity, expected):
    assert _fired(model, prot_d, colour, **binarity) == expected


def test_thresholds_sit_where_the_docstrings_say(model):
    assert HOT_STAR_BPRP0 == pytest.approx(0.677, abs=5e-4)  # 6250 K between F7V and F8V
    assert _fired(model, 3.0, HOT_STAR_BPRP0 - 0.005) == {"hot_star"}
    assert _fired(model, 3.0, HOT_STAR_BPRP0 + 0.005) == set()
    assert _fired(model, 20.0, FULLY_CONVECTIVE_BPRP0 + 0.005) == {"fully_convective"}
    assert _fired(model, 20.0, FULLY_CONVECTIVE_BPRP0 - 0.005) == set()
    assert _fired(model, 40.0, 1.2) == set()  # a K3V star below its weakened-braking period (~46 d)
    assert _fired(model, 11.5, 0.82, ruwe=1.39, non_single_star=0) == set()
    # The binary cut is the catalogue's training cut.
    assert RUWE_BINARY == inspect.signature(training_sample).parameters["ruwe_max"].default


@pytest.mark.parametrize(
    ("prot_d", "colour", "binarity", "expected"),
    [
        # The most flags one star can carry: a ~6970 K star (tau_c ~ 0.009 d) at 0.05 d is hot, past
        # the weakened-braking Rossby number, below the 650 Myr sequence's 5 % point, and a binary.
        (0.05, 0.45, {"ruwe": 2.0}, {"off_sequence", "hot_star", "weakened_braking", "likely_binary"}),
        (3.0, 0.5, {"non_single_star": 2}, {"hot_star", "weakened_braking", "likely_binary"}),
        (0.1, 3.0, {"ruwe": 2.0}, {"off_sequence", "fully_convective", "likely_binary"}),
        # An M3.3V star (~3380 K, inside the tau_c fit's range) at 120 d; the threshold is ~100 d.
        (120.0, 2.6, {}, {"fully_convective", "weakened_braking"}),
        (0.3, 0.82, {"ruwe": 1.8, "non_single_star": 3}, {"off_sequence", "likely_binary"}),
    ],
)
def test_possible_combinations(model, prot_d, colour, binarity, expected):
    assert _fired(model, prot_d, colour, **binarity) == expected


def test_hot_and_fully_convective_exclude_each_other_so_no_star_has_every_flag(model):
    colours = np.linspace(-0.5, 5.0, 400)
    for prot in (0.05, 1.0, 30.0):
        flags = rotation_flags(np.full(400, np.log10(prot)), colours, np.full(400, np.log10(0.02)), model,
                               ruwe=np.full(400, 2.0))  # fmt: skip
        assert not (flags["hot_star"] & flags["fully_convective"]).any()
        assert not np.logical_and.reduce(list(flags.values())).any()


def test_nan_inputs_give_false_for_the_flags_that_need_them(model):
    nan = np.nan
    # rows: NaN period, NaN colour, NaN colour error, infinite period, NaN binarity, all NaN
    log_prot = np.log10([nan, 0.5, 0.5, 1.0, 0.5, nan]).copy()
    log_prot[3] = np.inf
    colour = np.array([0.5, nan, 0.82, 0.82, 0.82, nan])
    log_err = np.log10([0.02, 0.02, nan, 0.02, 0.02, nan])
    ruwe = np.array([2.0, 2.0, 2.0, 2.0, nan, nan])
    nss = np.array([nan, nan, nan, nan, nan, nan])
    before = [a.copy() for a in (log_prot, colour, log_err, ruwe, nss)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from NaN, no DomainWarning
        flags = rotation_flags(log_prot, colour, log_err, model, ruwe=ruwe, non_single_star=nss)
    for a, b in zip((log_prot, colour, log_err, ruwe, nss), before, strict=True):
        np.testing.assert_array_equal(a, b)  # inputs untouched
    assert flags["off_sequence"].tolist() == [False, False, False, False, True, False]
    assert flags["weakened_braking"].tolist() == [False] * 6
    # The colour flags need only the colour: row 0 (NaN period, (BP-RP)0 = 0.5) is still hot.
    assert flags["hot_star"].tolist() == [True, False, False, False, False, False]
    assert flags["fully_convective"].tolist() == [False] * 6
    assert flags["likely_binary"].tolist() == [True, True, True, True, False, False]


def test_off_sequence_is_one_batched_call_and_skips_colours_outside_the_domain(model, monkeypatch):
    calls = []
    cdf = model.cdf

    def spy(log_prot, context):
        calls.append(len(log_prot))
        return cdf(log_prot, context)

    monkeypatch.setattr(model, "cdf", spy)
    rng = np.random.default_rng(1)
    n = 500
    colour = np.r_[rng.uniform(0.5, 3.0, n - 2), 5.0, -0.5]  # the last two lie outside the domain
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flags = rotation_flags(np.full(n, np.log10(0.05)), colour, np.full(n, np.log10(0.02)), model)
    assert calls == [n - 2]
    assert not flags["off_sequence"][-2:].any()
    assert flags["off_sequence"][:-2].mean() > 0.9  # 0.05 d is below the sequence at nearly every colour


def test_a_colour_error_below_the_floor_is_raised_to_it(model):
    floor = 10 ** model.domain.log10_e_bprp0[0]
    a = rotation_flags(np.log10([0.84, 0.86]), np.array([0.82, 0.82]), np.log10([floor / 10, floor / 10]), model)
    b = rotation_flags(np.log10([0.84, 0.86]), np.array([0.82, 0.82]), np.log10([floor, floor]), model)
    np.testing.assert_array_equal(a["off_sequence"], b["off_sequence"])


def test_empty_and_mismatched_inputs(model):
    flags = rotation_flags(np.array([]), np.array([]), np.array([]), model)
    assert list(flags) == list(ROTATION_FLAGS) and all(m.shape == (0,) for m in flags.values())
    with pytest.raises(ChronoflowError, match="colour must be a 1-D array of 2 values"):
        rotation_flags(np.zeros(2), np.zeros(3), np.zeros(2), model)
    with pytest.raises(ChronoflowError, match="ruwe must be"):
        rotation_flags(np.zeros(2), np.zeros(2), np.zeros(2), model, ruwe=np.zeros(1))
    with pytest.raises(ChronoflowError, match="RotationModel"):
        rotation_flags(np.zeros(2), np.zeros(2), np.zeros(2), "default.pt")


def test_binarity_columns_reads_ruwe_dr3_ruwe_and_non_single_star():
    df = pd.DataFrame({"ruwe": [1.0, "bad", 2.5], "dr3_ruwe": [9.0, 9.0, 9.0], "non_single_star": [0, 1, 3]})
    ruwe, nss = binarity_columns(df)
    np.testing.assert_array_equal(ruwe, [1.0, np.nan, 2.5])  # `ruwe` wins over `dr3_ruwe`
    np.testing.assert_array_equal(nss, [0.0, 1.0, 3.0])
    assert ruwe.dtype == float and nss.dtype == float

    ruwe, nss = binarity_columns(pd.DataFrame({"dr3_ruwe": [1.1, None], "non_single_star": pd.array([0, None], dtype="Int64")}))
    np.testing.assert_array_equal(ruwe, [1.1, np.nan])
    np.testing.assert_array_equal(nss, [0.0, np.nan])

    assert binarity_columns(pd.DataFrame({"Prot": [1.0]})) == (None, None)
    ruwe, nss = binarity_columns(pd.DataFrame({"non_single_star": ["x"]}))
    assert ruwe is None and np.isnan(nss).all()


def test_binarity_columns_feed_rotation_flags(model, catalogue):
    rows = catalogue.iloc[:200]
    ruwe, nss = binarity_columns(rows)
    assert nss is None and ruwe is not None
    flags = rotation_flags(np.log10(rows["Prot"].to_numpy()), rows["BPRP_0"].to_numpy(), np.log10(rows["e_BPRP_0"].to_numpy()),
                           model, ruwe=ruwe, non_single_star=nss)  # fmt: skip
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(flags["likely_binary"], rows["dr3_ruwe"].to_numpy() >= 1.4)


def test_off_sequence_is_rare_among_fgk_stars_of_old_clusters_and_common_among_young(model, catalogue):
    # Measured with the shipped model: 13 of 659 (2.0 %) FGK stars of clusters older than 500 Myr
    # (Praesepe, NGC 6866, the Hyades, NGC 6811, NGC 752, NGC 6819, Ruprecht 147, M67), against
    # 292 of 1,171 (25 %) of those of clusters younger than 300 Myr (13-90 % per cluster).
    kept, _ = training_sample(catalogue)
    fgk = kept[(kept["BPRP_0"] >= 0.6) & (kept["BPRP_0"] <= 1.5)]
    flags = rotation_flags(np.log10(fgk["Prot"].to_numpy()), fgk["BPRP_0"].to_numpy(), np.log10(fgk["e_BPRP_0"].to_numpy()),
                           model)  # fmt: skip
    off = pd.Series(flags["off_sequence"], index=fgk.index)
    old = fgk["fiducial_age_Myr"] > 500
    young = fgk["fiducial_age_Myr"] < 300
    assert old.sum() > 500
    assert off[old].mean() < 0.05, off[old].mean()
    assert off[young].mean() > 0.15, off[young].mean()
    assert OFF_SEQUENCE_AGE_MYR < fgk.loc[fgk["cluster"] == "Praesepe", "fiducial_age_Myr"].iloc[0]


def test_help_and_docs_cover_every_flag():
    assert set(FLAG_HELP) == set(ROTATION_FLAGS)
    for name, text in FLAG_HELP.items():
        assert re.search(r"\d", text), f"{name}: give the threshold"
        assert name == "off_sequence" or re.search(r"(?:19|20)\d\d", text), f"{name}: cite the source"
    existing = {*UNUSABLE_FLAGS, *OUT_OF_DOMAIN_FLAGS, "error_below_domain", "age_below_calibration", "age_above_calibration",
                "model_error_uncalibrated"}
    assert not existing & set(ROTATION_FLAGS), "a rotation flag must not reuse the name of an input flag"
    page = (DOCS / "flags.md").read_text(encoding="utf-8")
    rows = {m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", page, re.MULTILINE)}
    assert rows == existing | set(ROTATION_FLAGS)
