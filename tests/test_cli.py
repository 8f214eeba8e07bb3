"""CLI: version, help, one-line errors.

The commands run in this process through the console script's entry point (the ``run_cli``
fixture of conftest.py); one test runs the installed ``chronoflow`` script in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from chronoflow import __version__


def _console_script() -> str:
    """The installed ``chronoflow`` script: beside this interpreter (the virtual environment), else on PATH."""
    beside = Path(sys.executable).with_name("chronoflow")
    found = str(beside) if beside.is_file() else shutil.which("chronoflow")
    if found is None:
        pytest.fail("the chronoflow console script is not installed (pip install -e .)")
    return found


def test_installed_console_script_end_to_end(tmp_path):
    """The one test that runs the real script in a new process: its version, and a user error as
    one line on stderr with exit status 2 and no traceback."""
    script = _console_script()
    res = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"chronoflow {__version__}", res.stderr
    res = subprocess.run([script, "catalogue", "check", str(tmp_path / "missing.csv")], capture_output=True, text=True)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.strip().startswith("error: catalogue file not found")


def test_version_and_help(run_cli):
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"chronoflow {__version__}"
    res = run_cli("--help")
    assert res.returncode == 0 and "catalogue" in res.stdout


def test_error_is_one_line_without_traceback(run_cli, tmp_path):
    res = run_cli("catalogue", "check", str(tmp_path / "missing.csv"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("error: catalogue file not found")


@pytest.mark.parametrize("args", [("sweep", "--bogus"), ("nosuchcmd",), ("age-cluster", "--cluster")])
def test_usage_errors_show_the_usage_line_and_exit_2(run_cli, args):
    # with the installed typer, whose vendored click raises its own exception types
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "Usage:" in res.stderr or "Error:" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 4


def test_error_messages_keep_text_in_square_brackets(run_cli, tmp_path):
    path = tmp_path / "stars.csv"
    pd.DataFrame({"Prot": [5.0], "colour": [1.0]}).to_csv(path, index=False)
    res = run_cli("age-stars", str(path), "--out", str(tmp_path / "out.csv"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "Prot [d], BPRP_0 [mag] and e_BPRP_0 [mag]" in " ".join(res.stderr.split())


def test_catalogue_summary(run_cli, catalogue_path):
    res = run_cli("catalogue", "summary", str(catalogue_path))
    assert res.returncode == 0, res.stderr
    assert "Pleiades" in res.stdout and "7271" in res.stdout


def test_age_cluster_prints_the_total_interval_beside_the_statistical_one(run_cli, catalogue_path):
    res = run_cli("age-cluster", str(catalogue_path), "--cluster", "Praesepe")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "16-84 %:" in out and "total interval:" in out
    assert "error [dex]: statistical" in out and "model" in out and "total" in out
    # M67 is the oldest calibrator: its interval reaches beyond, and the output says so
    res = run_cli("age-cluster", str(catalogue_path), "--cluster", "M67")
    assert res.returncode == 0 and "flag:" in res.stdout and "age_above_calibration" in res.stdout


def test_model_info_shows_the_ensemble_and_its_model_error(run_cli):
    res = run_cli("model", "info")
    assert res.returncode == 0, res.stderr
    assert "ensemble" in res.stdout and "members" in res.stdout
    assert "model error" in res.stdout and "leave-one-out" in res.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--membership", "mem"), "pass --membership none to treat every star as a member"),
        (("--f-out", "1.5"), "--f-out must be in [0, 1), got 1.5"),
    ],
)
def test_errors_speak_the_words_of_the_command_line(run_cli, tmp_path, args, expected):
    """An error raised by the Python API names the CLI option, not the Python argument."""
    src = tmp_path / "one.csv"
    pd.DataFrame({"Prot": [8.0], "BPRP_0": [1.2], "e_BPRP_0": [0.02], "cluster": ["a"]}).to_csv(src, index=False)
    res = run_cli("age-cluster", str(src), *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and expected in res.stderr
    assert "membership=None" not in res.stderr and "f_out" not in res.stderr


def test_in_cli_words_leaves_other_text_alone():
    from chronoflow.cli import in_cli_words

    msg = "missing column 'e_BPRP_0' in mem_prob_source; x=None stays"
    assert in_cli_words(msg) == msg
    assert in_cli_words("choose one with cluster=NAME") == "choose one with --cluster NAME"


def test_age_stars_keeps_out_of_domain_rows_without_an_age_unless_asked(run_cli, tmp_path):
    src, dst = tmp_path / "stars.csv", tmp_path / "ages.csv"
    pd.DataFrame({"Prot": [8.0, 500.0, 8.0], "BPRP_0": [1.2, 1.2, 4.5], "e_BPRP_0": [0.02, 0.02, 0.02]}).to_csv(src, index=False)
    assert run_cli("age-stars", str(src), "--out", str(dst), "--no-progress").returncode == 0
    out = pd.read_csv(dst, na_values="NULL")
    assert out["flag"].fillna("").tolist() == ["", "period_outside_domain", "colour_outside_domain"]
    assert out["log10_age_median"].notna().tolist() == [True, False, False]
    assert run_cli("age-stars", str(src), "--out", str(dst), "--no-progress", "--include-out-of-domain").returncode == 0
    assert pd.read_csv(dst, na_values="NULL")["log10_age_median"].notna().all()


def test_validate_budgets_rewrites_the_report_from_an_earlier_table(tmp_path):
    """`validate budgets --table`: no sweep; the report names the table it came from and has one row
    per cluster of the table (the committed docs/validation/budgets.csv, our own earlier output)."""
    from pathlib import Path

    from typer.testing import CliRunner

    from chronoflow.cli import app

    source = Path(__file__).resolve().parents[1] / "docs" / "validation" / "budgets.csv"
    table = pd.read_csv(source)
    out = tmp_path / "b.md"
    run = CliRunner().invoke(app, ["validate", "budgets", "--table", str(source), "--out", str(out)])
    assert run.exit_code == 0, run.output
    text = out.read_text()
    assert "Report rewritten from `budgets.csv` (`--table`)." in text and "Run time" not in text
    assert "seed 0." in text
    for name in table["cluster"]:
        assert f"| {name} |" in text
    assert (tmp_path / "b.png").stat().st_size > 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b.csv"), table, check_exact=False, rtol=1e-12)


def test_train_defaults_to_the_package_ensemble_size(tmp_path, catalogue_path, monkeypatch):
    # The CLI's default number of members is the library's (one constant), not a copy of it.
    from typer.testing import CliRunner

    import chronoflow.flows.ensemble as ensemble
    from chronoflow.cli import app
    from chronoflow.errors import ChronoflowError

    seen = []

    def fake_train(catalogue, n, **kwargs):
        seen.append(n)
        raise ChronoflowError("stopped before training")

    monkeypatch.setattr(ensemble, "train_ensemble", fake_train)
    runner = CliRunner()
    args = ["train", "--out", str(tmp_path / "m.pt"), "--catalogue", str(catalogue_path)]
    runner.invoke(app, args)
    runner.invoke(app, [*args, "--members", "2"])
    assert seen == [ensemble.DEFAULT_MEMBERS, 2]


def test_validate_coverage_writes_both_single_star_priors(run_cli, tmp_path):
    out = tmp_path / "coverage.md"
    res = run_cli("validate", "coverage", "--n-clusters", "3", "--n-stars", "20", "--n-single", "50", "--out", str(out))
    assert res.returncode == 0, res.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "sample" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| clusters (20 rows, field 0.1, outliers 0.05)",
                                                 "| single stars, prior log-flat on the truth range",
                                                 "| single stars, default prior (log-flat on the whole grid)"]  # fmt: skip
    assert [int(r.split(" | ")[1]) for r in rows] == [3, 50, 50]


def _commands():
    """(path, click command) of every command of the CLI, subcommands included."""
    import typer.main

    from chronoflow.cli import app

    found = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, path + [name])
        else:
            found.append((path, cmd))

    walk(typer.main.get_command(app), [])
    return found


def test_every_commands_help_shows_its_units():
    """rich reads ``[d]`` as markup and drops it: every bracketed unit or tag in a help string must
    reach the rendered ``--help`` (help strings escape it as ``\\[d]``)."""
    import re

    from typer.testing import CliRunner

    from chronoflow.cli import app

    runner, checked = CliRunner(), 0
    for path, cmd in _commands():
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (path, res.output)
        shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.output).split())
        for param in cmd.params:
            for token in re.findall(r"\\?\[([^\]\[]+)\]", getattr(param, "help", None) or ""):
                checked += 1
                assert f"[{token}]" in shown, (path, param.name, token)
    assert checked >= 15  # 17 bracketed units and tags when this test was written


def _main(monkeypatch, capsys, *args):
    """Run the console script's entry point in this process: (exit status, stdout, stderr)."""
    from chronoflow.cli import main

    monkeypatch.setattr(sys, "argv", ["chronoflow", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


@pytest.mark.parametrize("args, expected", [
    (["age-stars", "{src}", "--out", "{tmp}/missing/o.csv"], "--out {tmp}/missing/o.csv: the folder {tmp}/missing does not exist"),
    (["age-cluster", "{src}", "--plot", "{tmp}/missing/x.png"], "--plot {tmp}/missing/x.png: the folder {tmp}/missing does not exist"),
    (["tracks", "--colour", "1.0", "--plot", "{tmp}"], "--plot {tmp}: is a folder"),
    (["forward", "--age", "650", "--n", "0", "--out", "{tmp}/p.csv"], "--n must be >= 1, got 0"),
])  # fmt: skip
def test_bad_output_paths_and_values_are_one_line_before_any_work(monkeypatch, capsys, tmp_path, args, expected):
    """Output paths are checked while the options are read, before the model or the table is
    loaded (before: a 52-line traceback with exit status 1 after the work); errors name the
    command's own options (before: forward --n 0 named validate coverage's --n-stars)."""
    import chronoflow.flows.artifact as artifact

    src = tmp_path / "s.csv"
    pd.DataFrame({"Prot": [8.0], "BPRP_0": [1.2], "e_BPRP_0": [0.02], "cluster": ["X"]}).to_csv(src, index=False)
    if args[0] != "forward":  # nothing is loaded before the refusal
        monkeypatch.setattr(artifact, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    fill = {"src": str(src), "tmp": str(tmp_path)}
    code, _, err = _main(monkeypatch, capsys, *[a.format(**fill) for a in args])
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert expected.format(**fill) in " ".join(err.split())


def test_an_os_error_while_writing_is_one_line_naming_the_path(monkeypatch, capsys, tmp_path):
    """A disk that fills (or a folder removed) during the work: one line, exit status 2."""
    import chronoflow.cli as cli

    src = tmp_path / "s.csv"
    pd.DataFrame({"Prot": [8.0], "BPRP_0": [1.2], "e_BPRP_0": [0.02]}).to_csv(src, index=False)

    def full_disk(df, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(cli, "_write_table", full_disk)
    code, _, err = _main(monkeypatch, capsys, "age-stars", str(src), "--out", str(tmp_path / "o.csv"), "--scheduler", "memory")
    assert code == 2 and "Traceback" not in err
    assert " ".join(err.split()) == f"error: {tmp_path / 'o.csv'}: No space left on device"


def test_age_cluster_prints_the_age_before_the_figure(monkeypatch, capsys, catalogue_path, tmp_path):
    """A figure that fails never loses the age: the JSON is on stdout before the plotting error."""
    import chronoflow.plotting as plotting

    def broken(*a, **k):
        raise OSError(30, "Read-only file system", str(tmp_path / "x.png"))

    monkeypatch.setattr(plotting, "plot_cluster_age", broken)
    code, out, err = _main(monkeypatch, capsys, "age-cluster", str(catalogue_path), "--cluster", "Pleiades", "--json",
                           "--plot", str(tmp_path / "x.png"), "--device", "cpu")  # fmt: skip
    assert code == 2 and '"cluster": "Pleiades"' in out and "Read-only file system" in err


def test_errors_are_worded_with_the_running_commands_options():
    from chronoflow.cli import in_cli_words

    assert in_cli_words("n_stars must be >= 1", ["validate", "coverage"]) == "--n-stars must be >= 1"
    assert in_cli_words("n_stars must be >= 1", ["forward"]) == "n_stars must be >= 1"  # forward has no --n-stars
    assert in_cli_words("f_out must be in [0, 1)", ["age-cluster", "x.csv"]) == "--f-out must be in [0, 1)"


def test_age_stars_counts_aged_stars_not_rows(run_cli, tmp_path):
    src, dst = tmp_path / "s.csv", tmp_path / "o.csv"
    pd.DataFrame({"Prot": [8.0, 500.0, 8.0], "BPRP_0": [1.2, 1.2, 1.0], "e_BPRP_0": [0.02] * 3}).to_csv(src, index=False)
    res = run_cli("age-stars", str(src), "--out", str(dst), "--no-progress")
    assert res.returncode == 0 and "aged 2 of 3 rows (1 without an age" in " ".join(res.stdout.split())


@pytest.mark.parametrize("content, expected", [
    ("Prot,Prot,BPRP_0,e_BPRP_0\n8,9,1.2,0.02\n", "s.csv: column 'Prot' appears more than once in the header"),
    ("Prot;BPRP_0;e_BPRP_0\n8;1.2;0.02\n", "s.csv looks semicolon-separated"),
    ("", "is empty; allowed: a CSV, Parquet or FITS table with a header row"),
    (None, "is a folder, not a table file"),
])  # fmt: skip
@pytest.mark.parametrize("scheduler", ["streaming", "memory"])
def test_tables_that_cannot_be_read_as_meant_are_refused_in_one_line(monkeypatch, capsys, tmp_path, content, expected, scheduler):
    """A duplicated header used to be aged with the first column (pandas renamed the second
    Prot.1); a folder said "file not found"; a semicolon-separated file reported three missing
    columns; an empty file leaked pandas' exception name."""
    src = tmp_path / "s.csv"
    if content is None:
        src.mkdir()
    else:
        src.write_text(content)
    code, _, err = _main(monkeypatch, capsys, "age-stars", str(src), "--out", str(tmp_path / "o.csv"), "--scheduler", scheduler)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Error:" not in err
    assert expected in " ".join(err.split())
