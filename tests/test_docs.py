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


def test_getting_started_has_the_readme_commands_verbatim():
    readme = _setup_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert readme.strip() in (DOCS / "getting-started.md").read_text(encoding="utf-8")


def test_every_api_page_documents_an_existing_module_and_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"api/[\w.]+\.md", config.split("\nnav:", 1)[1]))
    for page in sorted((DOCS / "api").glob("*.md")):
        assert f"api/{page.name}" in listed, f"{page.name} is not in the mkdocs.yml nav"
        for module in re.findall(r"^:::\s+(\S+)", page.read_text(encoding="utf-8"), re.MULTILINE):
            assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{page.name}: no module {module}"
