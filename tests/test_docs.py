"""The documentation stays in step with the README and the package (the site itself is built by
``mkdocs build --strict`` in CI)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _setup_block(text: str) -> str:
    """The bash block of the "Set-up: two commands" section."""
    section = text.split("## Set-up: two commands", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)


def test_getting_started_and_the_front_page_have_the_readme_commands_verbatim():
    readme = _setup_block((ROOT / "README.md").read_text(encoding="utf-8"))
    for page in ("getting-started.md", "index.md"):
        assert readme.strip() in (DOCS / page).read_text(encoding="utf-8"), page


def _same_output(printed: str, documented: str) -> None:
    """Token by token; a number may differ by one unit of its last printed digit (rounding of a
    value that a different summation order moved across a half-digit)."""
    got, want = printed.split(), documented.split()
    assert len(got) == len(want), (printed, documented)
    for a, b in zip(got, want, strict=True):
        num = re.fullmatch(r"[(+-]*(\d+(?:\.(\d+))?)[),]*", b)
        if num and a.strip("(+-),") and re.fullmatch(r"[\d.]+", a.strip("(+-),")):
            step = 10.0 ** -len(num.group(2) or "")
            assert abs(float(a.strip("(+-),")) - float(num.group(1))) <= step * 1.001, (a, b)
            assert a.replace(a.strip("(+-),"), "") == b.replace(num.group(1), ""), (a, b)
        else:
            assert a == b, (a, b)


def test_the_front_page_example_prints_what_the_page_shows(catalogue_path):
    """docs/index.md: the ten-line example, run as a user runs it (a fresh interpreter, the
    catalogue named by $CHRONOFLOW_CATALOGUE), prints the block shown after it."""
    import os
    import subprocess
    import sys

    page = (DOCS / "index.md").read_text(encoding="utf-8")
    section = page.split("<!-- front-page example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    shown = re.search(r"```text\n(.*?)```", section, re.DOTALL).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "CHRONOFLOW_CATALOGUE": str(catalogue_path)})  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    _same_output(res.stdout, shown)


def test_every_api_page_documents_an_existing_module_and_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"api/[\w.]+\.md", config.split("\nnav:", 1)[1]))
    for page in sorted((DOCS / "api").glob("*.md")):
        assert f"api/{page.name}" in listed, f"{page.name} is not in the mkdocs.yml nav"
        for module in re.findall(r"^:::\s+(\S+)", page.read_text(encoding="utf-8"), re.MULTILINE):
            assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{page.name}: no module {module}"


def test_notebooks_are_stored_without_outputs_and_are_in_the_nav():
    """The tutorial notebooks are executed when the site is built (mkdocs-jupyter, execute: true),
    so git holds them without outputs: no stale results, readable diffs."""
    import json

    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    books = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb"))
    assert len(books) >= 5
    assert (DOCS / "notebooks").resolve() == (ROOT / "examples" / "notebooks").resolve(), "docs/notebooks links to them"
    for path in books:
        book = json.loads(path.read_text(encoding="utf-8"))
        code = [c for c in book["cells"] if c["cell_type"] == "code"]
        assert code, path.name
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), f"{path.name} has outputs"
        assert f"notebooks/{path.name}" in config, f"{path.name} is not in the mkdocs.yml nav"
