"""Griffe extension for the API pages: Sphinx conventions of the docstrings, read as Markdown.

**Attribute comments.** Module constants and enum members are documented Sphinx-style, with a
``#:`` comment on the lines above the assignment or at the end of its line. Griffe only reads
docstrings, so such a comment becomes the attribute's docstring (an existing docstring wins).

**Roles.** The docstrings use reStructuredText roles (``:func:`~chronoflow.inference.ages.cluster_age```,
``:class:`FlowConfig```, ``:meth:`log_prob```), which Markdown would print verbatim. After the
package is loaded, every role is rewritten:

* to an autorefs link ``[`name`][chronoflow.module.name]`` when its target resolves to a public
  object of a module that has an API page (a ``::: chronoflow.X`` line in ``docs/api/*.md``);
* to plain code (``name``) otherwise (private helpers, modules without a page), so that
  ``mkdocs build --strict`` never meets a dangling cross-reference.

Names are resolved as Sphinx would: absolute paths first, then relative to the enclosing class,
the module and the package. A leading ``~`` shows only the last component. A paragraph ending in
``::`` (reST's literal-block marker) ends in ``:`` instead; the indented block below it is already
a Markdown code block.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|exc|obj|const):`(?P<target>[^`]+)`")
LITERAL_MARKER = re.compile(r"(?<=\S)::(?=\n)")
API_DIR = Path(__file__).resolve().parents[1] / "api"
DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)


def documented_modules() -> set[str]:
    """Modules rendered somewhere under docs/api (read from the ``:::`` directives)."""
    found: set[str] = set()
    for page in API_DIR.glob("*.md"):
        found.update(DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    return found


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the package once it is loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.modules = documented_modules()

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.is_attribute and obj.docstring is None:
                _comment_docstring(obj)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self._rewrite(obj.docstring.value, obj)

    def _rewrite(self, text: str, context: griffe.Object) -> str:
        text = ROLE.sub(lambda m: self._replace(m.group("target"), context), text)
        return LITERAL_MARKER.sub(":", text)

    def _replace(self, written: str, context: griffe.Object) -> str:
        short = written.startswith("~")
        name = written.lstrip("~").removesuffix("()")
        shown = name.rsplit(".", 1)[-1] if short else name
        target = self._resolve(name, context)
        return f"[`{shown}`][{target}]" if target else f"`{shown}`"

    def _resolve(self, name: str, context: griffe.Object) -> str | None:
        scopes = [context, *_parents(context)]
        candidates = [name] + [f"{scope.path}.{name}" for scope in scopes]
        collection = context.modules_collection
        for path in candidates:
            try:
                obj = collection[path]
            except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            try:
                canonical = obj.final_target if obj.is_alias else obj
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
            return canonical.path if self._rendered(canonical) else None
        return None

    def _rendered(self, obj: griffe.Object) -> bool:
        """True when ``obj`` appears on an API page (public all the way up to its module)."""
        if obj.is_module:
            return obj.path in self.modules
        chain = [obj] + [p for p in _parents(obj) if not p.is_module]
        if any(not member.is_public for member in chain):
            return False
        # Objects without any docstring are not rendered (show_if_no_docstring is off).
        return obj.has_docstrings and obj.module.path in self.modules


def _comment_docstring(attr: griffe.Object) -> None:
    """Attach the ``#:`` comment of an attribute (lines above, or the end of its line)."""
    lines = attr.module.lines
    if not lines or attr.lineno is None:
        return
    first = attr.lineno - 1  # 0-based index of the assignment
    _, hash_, trailing = lines[first].partition("#:")
    if hash_:
        text = [trailing.strip()]
    else:
        top = first
        while top > 0 and lines[top - 1].strip().startswith("#:"):
            top -= 1
        text = [line.strip()[2:].strip() for line in lines[top:first]]
    if any(text):
        attr.docstring = griffe.Docstring("\n".join(text), lineno=attr.lineno, parent=attr)


def _parents(obj: griffe.Object) -> list[griffe.Object]:
    out = []
    while obj.parent is not None:
        obj = obj.parent
        out.append(obj)
    return out


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member)
