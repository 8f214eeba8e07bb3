"""MkDocs hooks (``hooks:`` in mkdocs.yml): parts of pages generated at build time.

* CLI reference: ``docs/cli.md`` holds the marker ``<!-- cli-reference -->``. It is replaced by
  the Markdown that Typer's own documentation generator writes for the app
  (``python -m typer chronoflow.cli utils docs``), with its headings moved one level down. The
  reference therefore always matches ``chronoflow/cli.py``, and the package needs nothing extra
  for the docs.
* Examples: ``docs/examples.md`` holds the marker ``<!-- examples -->``, replaced by one
  section per ``examples/*.py`` (its docstring, then its source, folded), so every example in
  the repository appears without editing the page.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLI_MARKER = "<!-- cli-reference -->"
EXAMPLES_MARKER = "<!-- examples -->"
# Sphinx roles in the scripts' docstrings (``:func:`~chronoflow.analysis.forward.sample_periods```) are
# shown as code here: a link would break the strict build whenever a script names an object
# that has no API page.
ROLE = re.compile(r":(?:py:)?[a-z]+:`~?(?P<target>[^`]+)`")


def on_page_markdown(markdown, page, config, files, **kwargs):
    if page.file.src_uri == "cli.md" and CLI_MARKER in markdown:
        return markdown.replace(CLI_MARKER, _cli_markdown())
    if page.file.src_uri == "examples.md" and EXAMPLES_MARKER in markdown:
        return markdown.replace(EXAMPLES_MARKER, _examples_markdown())
    return markdown


def _cli_markdown() -> str:
    command = [sys.executable, "-m", "typer", "chronoflow.cli", "utils", "docs", "--name", "chronoflow"]
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr}")
    lines, in_code = [], False
    for line in done.stdout.splitlines():
        in_code ^= line.startswith("```")
        lines.append("#" + line if line.startswith("#") and not in_code else line)
    return "\n".join(lines) + "\n"


def _examples_markdown() -> str:
    scripts = sorted(EXAMPLES.glob("*.py"))
    if not scripts:
        return "*No example scripts yet.*\n"
    sections = []
    for path in scripts:
        source = path.read_text(encoding="utf-8")
        try:
            doc = ast.get_docstring(ast.parse(source)) or ""
        except SyntaxError:
            doc = ""
        doc = ROLE.sub(lambda m: f"`{m.group('target')}`", doc)
        sections.append(
            f"## examples/{path.name}\n\n{doc}\n\n"
            f'??? example "Source of examples/{path.name}"\n\n'
            + "\n".join(f"    {line}" if line else "" for line in ["```python", *source.rstrip().splitlines(), "```"])
            + "\n"
        )
    return "\n".join(sections)
