"""One star: star_age is star_ages on a one-row table; its JSON, text, figure and command line."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

import chronoflow as cf
from chronoflow.errors import ChronoflowError, DomainError
from chronoflow.inference import single_star

LEVELS = ["p2.5", "p16", "median", "p84", "p97.5"]
STAR = ["--prot", "12.3", "--bprp0", "1.05", "--device", "cpu"]


@pytest.fixture(scope="module")
def star():
    return cf.star_age(12.3, 1.05, device="cpu")


def test_one_star_is_star_ages_on_the_one_row_table():
    res = cf.star_age(12.3, 1.05, 0.03, e_prot=0.5, device="cpu")
    row = pd.DataFrame({"Prot": [12.3], "BPRP_0": [1.05], "e_BPRP_0": [0.03], "e_Prot": [0.5]})
    table, post = cf.star_ages(row, return_posteriors=True, device="cpu")
    _, stat = cf.star_ages(row, return_posteriors=True, model_error=False, device="cpu")
    for k in LEVELS:
        assert res.summary[k] == table[f"log10_age_{k}"].iloc[0]
        assert res.summary[f"stat_{k}"] == table[f"log10_age_stat_{k}"].iloc[0]
        assert res.age_myr[k] == pytest.approx(table[f"age_myr_{k}"].iloc[0], rel=1e-12)
    assert res.summary["map"] == table["log10_age_map"].iloc[0]
    assert res.flag == table["flag"].iloc[0]
    np.testing.assert_array_equal(res.grid, cf.inference.posterior.age_grid())
    np.testing.assert_array_equal(res.posterior, post[0])
    np.testing.assert_array_equal(res.stat_posterior, stat[0])
    assert (res.prot_d, res.bprp0, res.e_bprp0, res.e_prot_d, res.ruwe) == (12.3, 1.05, 0.03, 0.5, None)
    # Quantities in any unit of time / mag: the same star
    import astropy.units as u

    same = cf.star_age(12.3 * 24 * u.h, 1050 * u.mmag, 0.03 * u.mag, e_prot=12 * u.h, device="cpu")
    assert same.prot_d == pytest.approx(12.3) and same.e_prot_d == pytest.approx(0.5)
    assert same.summary["median"] == pytest.approx(res.summary["median"], abs=1e-9)


def test_default_colour_error_is_the_catalogues_median_and_the_clis(catalogue):
    assert single_star.DEFAULT_E_BPRP0 == pytest.approx(float(catalogue["e_BPRP_0"].median()), abs=5e-4)
    import inspect

    from chronoflow.cli import age_star_command

    assert inspect.signature(cf.star_age).parameters["e_bprp0"].default == single_star.DEFAULT_E_BPRP0
    assert inspect.signature(age_star_command).parameters["e_bprp0"].default.default == single_star.DEFAULT_E_BPRP0


def test_json_has_the_documented_shape(star):
    d = json.loads(star.to_json())
    assert list(d) == ["prot_d", "bprp0", "e_bprp0", "e_prot_d", "log10_age_myr", "age_myr", "log10_age_myr_stat", "flag", "model"]
    assert (d["prot_d"], d["bprp0"], d["e_bprp0"], d["e_prot_d"]) == (12.3, 1.05, single_star.DEFAULT_E_BPRP0, None)
    for key in ("log10_age_myr", "age_myr", "log10_age_myr_stat"):
        values = [d[key][k] for k in LEVELS]
        assert list(d[key]) == LEVELS and values == sorted(values), (key, values)
    for k in LEVELS:
        assert d["age_myr"][k] == pytest.approx(10 ** d["log10_age_myr"][k])
    assert d["log10_age_myr"]["p16"] < d["log10_age_myr"]["median"] < d["log10_age_myr"]["p84"]
    assert isinstance(d["flag"], str) and d["model"] == star.model and d["model"].split()[0].isalnum()
    assert star.to_dict() == d


def test_a_star_without_an_age_gives_nulls_and_says_why():
    res = cf.star_age(500.0, 1.05, device="cpu")  # beyond the training stars' periods
    d = json.loads(res.to_json())  # valid JSON: no NaN
    assert not res.has_age and "period_outside_domain" in d["flag"].split(";")
    assert all(d[key][k] is None for key in ("log10_age_myr", "age_myr", "log10_age_myr_stat") for k in LEVELS)
    text = res.to_text()
    assert "no age" in text and "flag period_outside_domain: the period lies outside the training stars' periods" in text
    with pytest.raises(ChronoflowError, match="no figure: the star has no age"):
        res.plot()


def test_text_gives_both_intervals_the_flow_alone_and_the_flags_in_words(star):
    text = star.to_text()
    lines = text.splitlines()
    assert lines[0] == f"star: Prot = 12.3 d, (BP-RP)0 = 1.050 +- {single_star.DEFAULT_E_BPRP0:.3f} mag"
    q = star.summary
    assert f"log10 age/Myr = {q['median']:.3f} (68 %: {q['p16']:.3f} - {q['p84']:.3f}, 95 %: {q['p2.5']:.3f} - {q['p97.5']:.3f})" in text
    assert f"age = {star.age_myr['median']:.0f} Myr (68 %: " in text and "95 %: " in text
    assert "flow posterior alone (without the model-error term), 68 %: " in text and f"{q['stat_p16']:.3f}" in text
    for name in filter(None, star.flag.split(";")):
        assert f"flag {name}: " in text
    if "model_error_uncalibrated" in star.flag:
        assert "no single-star model-error term" in text
    # flags in words without a model at hand: the numbers are left out, the words kept
    import dataclasses

    bare = dataclasses.replace(star, flow=None, flag="age_above_calibration;error_below_domain")
    words = bare.flag_meanings()
    assert "{" not in "".join(words.values()) and "oldest calibration cluster" in words["age_above_calibration"]
    # the rotation flags (binarity, ...) in the words of their own module
    from chronoflow.inference.rotation_flags import FLAG_HELP

    binary = dataclasses.replace(star, flag="likely_binary")
    assert binary.flag_meanings() == {"likely_binary": FLAG_HELP["likely_binary"]}
    assert f"flag likely_binary: {FLAG_HELP['likely_binary']}" in binary.to_text()


def test_a_large_period_error_widens_the_flow_interval(star):
    wide = cf.star_age(12.3, 1.05, e_prot=3.0, device="cpu")
    assert wide.e_prot_d == 3.0 and json.loads(wide.to_json())["e_prot_d"] == 3.0
    width = {r: r.summary["stat_p84"] - r.summary["stat_p16"] for r in (star, wide)}
    assert width[wide] > width[star] + 0.1
    assert "Prot = 12.3 d +- 3 d" in wide.to_text()


def test_ruwe_reaches_star_ages_as_its_column(monkeypatch):
    seen = []
    real = single_star.star_ages

    def spy(df, **kwargs):
        seen.append(df.copy())
        return real(df, **kwargs)

    monkeypatch.setattr(single_star, "star_ages", spy)
    res = cf.star_age(12.3, 1.05, ruwe=1.1, device="cpu")
    assert seen and all(d["ruwe"].tolist() == [1.1] for d in seen) and res.ruwe == 1.1
    assert "RUWE 1.1" in res.to_text()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"prot": 0.0}, "prot=0 is not allowed: a rotation period must be finite and > 0 d"),
        ({"prot": -3.0}, "prot=-3 is not allowed"),
        ({"prot": float("nan")}, "prot=nan is not allowed"),
        ({"prot": "12"}, "prot='12' is not allowed"),
        ({"prot": [12.0, 13.0]}, "prot must be one number, got shape (2,)"),
        ({"bprp0": math.inf}, "bprp0=inf is not allowed: a colour (BP-RP)0 must be finite"),
        ({"e_bprp0": 0.0}, "e_bprp0=0 is not allowed: a colour error must be finite and > 0 mag"),
        ({"e_prot": -0.1}, "e_prot=-0.1 is not allowed: a period error must be finite and >= 0 d"),
        ({"ruwe": 0.0}, "ruwe=0 is not allowed"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_bad_input_is_one_line_naming_the_argument(kwargs, expected):
    args = {"prot": 12.3, "bprp0": 1.05, **kwargs}
    with pytest.raises(DomainError) as info:
        cf.star_age(args.pop("prot"), args.pop("bprp0"), **args)
    message = str(info.value)
    assert expected in message and len(message.splitlines()) == 1


def test_a_quantity_of_the_wrong_kind_is_refused():
    import astropy.units as u

    with pytest.raises(DomainError, match=r"prot has unit mag; allowed: a finite rotation period > 0 d \(a unit convertible to d\)"):
        cf.star_age(12.3 * u.mag, 1.05)
    with pytest.raises(DomainError, match="bprp0 has unit d"):
        cf.star_age(12.3, 1.05 * u.d)


def test_plot_writes_a_png_with_both_panels(star, tmp_path):
    path = tmp_path / "star.png"
    fig = star.plot(path)
    assert path.stat().st_size > 10_000
    ax_post, ax_cmd = fig.axes
    assert ax_post.get_xscale() == "log" and ax_cmd.get_yscale() == "log"
    labels = [t.get_text() for t in ax_post.get_legend().get_texts()]
    assert any(s.startswith("95 %") for s in labels) and any(s.startswith("68 %:") for s in labels)
    assert any(s.startswith("68 %, flow alone") for s in labels)
    assert ax_cmd.collections, "the model's density is drawn"
    from chronoflow.plotting import plot_star_age

    assert plot_star_age(star).axes[0].get_title() == ax_post.get_title()


def _cli(*args):
    from typer.testing import CliRunner

    from chronoflow.cli import app

    return CliRunner().invoke(app, ["age-star", *args])


def test_cli_json_is_the_api_result(star, tmp_path):
    run = _cli(*STAR, "--json", "--plot", str(tmp_path / "s.png"))
    assert run.exit_code == 0, run.output
    printed = json.loads(run.stdout.strip())  # exactly one JSON object: the figure adds nothing to stdout
    assert printed == json.loads(star.to_json())
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_cli_text(star):
    run = _cli(*STAR, "--e-prot", "0")
    assert run.exit_code == 0, run.output
    assert run.stdout.strip() == star.to_text().strip()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--prot", "-1", "--bprp0", "1.05"], "error: --prot -1 is not allowed: a rotation period must be finite and > 0 d"),
        (["--prot", "12", "--bprp0", "1.05", "--e-bprp0", "0"], "error: --e-bprp0 0 is not allowed"),
        (["--prot", "12", "--bprp0", "1.05", "--plot", "no/such/folder/s.png"], "error: --plot no/such/folder/s.png: the folder no/such/folder does not exist"),
    ],
)
def test_cli_bad_input_is_one_line_with_exit_2(monkeypatch, capsys, args, expected):
    from chronoflow import cli

    monkeypatch.setattr("sys.argv", ["chronoflow", "age-star", *args, "--device", "cpu"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    assert captured.err.strip().startswith(expected) and len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err
