"""A griffe extension for this project's docstrings, which are prose with Sphinx roles.

The docstrings say what and why in sentences (no Args:/Returns: sections) and name other
objects with Sphinx roles (``:class:`~.event.Event```) and reST literal blocks (``::``).
Markdown knows neither: a role would render as the text ``:class:`` before a code span.
This extension rewrites each docstring once the package is loaded:

- a role becomes a cross-reference to the object when the API reference renders it, and
  plain code otherwise (an *optional* autoref: an unrendered target is no warning, so the
  docstrings may name internal modules, ``time.sleep`` or anything else);
- ``~`` shows only the last name, as in Sphinx; functions and methods get ``()``;
- a paragraph ending in ``::`` before an indented block ends in ``:``, and the block
  becomes a fenced Python block (highlighted like every other snippet of the site).

The library code is not changed; this only affects how the reference shows it.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|mod|attr|exc|data|obj|const):`(?P<target>[^`]+)`")
EXPLICIT = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")
LITERAL = re.compile(r"::\n\n(?P<block>[ \t]+\S[^\n]*(?:\n(?:[ \t]+[^\n]*)?)*)")
CALLABLE_ROLES = {"func", "meth"}
# the import paths the API reference documents (the modules under them are being moved:
# links and their tooltips name these paths, never the module an object is defined in)
PUBLIC_MODULES = {"flask_sse_stream", "flask_sse_stream.chat", "flask_sse_stream.testing"}


def canonical(obj: griffe.Object, name: str) -> str | None:
    """The full path of ``name`` as written in ``obj``'s docstring, or None if it names
    nothing in the loaded package (``time.sleep``, say)."""
    collection = obj.modules_collection
    if name.startswith("."):
        # Sphinx: ".event.Event" is searched from the current module outwards
        scope: griffe.Object | None = obj if obj.is_module else obj.module
        while scope is not None:
            path = f"{scope.path}{name}"
            if exists(collection, path):
                return path
            scope = scope.parent
        return None
    if "." not in name:
        try:
            return obj.resolve(name)
        except (griffe.NameResolutionError, AttributeError):
            # a method named from its own class: resolve from the class itself
            parent = obj.parent
            if parent is not None and name in parent.members:
                return f"{parent.path}.{name}"
            return None
    return name if exists(collection, name) else None


def exists(collection: griffe.ModulesCollection, path: str) -> bool:
    return lookup(collection, path) is not None


def lookup(collection: griffe.ModulesCollection, path: str) -> griffe.Object | None:
    try:
        found = collection.get_member(path)
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return found.final_target if found.is_alias else found  # type: ignore[no-any-return]


def public_path(obj: griffe.Object) -> str | None:
    """The path of ``obj`` under one of the PUBLIC_MODULES (``flask_sse_stream.Event``
    for ``flask_sse_stream.event.Event``), or None if it is not exported there."""
    if obj.is_module:
        return obj.path if obj.path in PUBLIC_MODULES else None
    if obj.parent is not None and obj.parent.path in PUBLIC_MODULES:
        return obj.path
    for path, alias in obj.aliases.items():
        if alias.parent is not None and alias.parent.path in PUBLIC_MODULES:
            return path
    if obj.parent is not None and not obj.parent.is_module:
        owner = public_path(obj.parent)  # a method or attribute of an exported class
        return f"{owner}.{obj.name}" if owner else None
    return None


def rewrite_roles(obj: griffe.Object, text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        role, target = match["role"], match["target"].strip()
        explicit = EXPLICIT.match(target)
        if explicit:
            title, target = explicit["title"], explicit["target"]
        else:
            name = target.lstrip("~")
            title = name.rsplit(".", 1)[-1] if target.startswith("~") else name.lstrip(".")
            if role in CALLABLE_ROLES:
                title += "()"
        path = canonical(obj, target.lstrip("~"))
        code = f"<code>{html.escape(title)}</code>"
        found = lookup(obj.modules_collection, path) if path else None
        public = public_path(found) if found is not None else None
        if public is None:
            return code  # not in the reference: plain code, no tooltip naming internals
        return f'<autoref identifier="{html.escape(public)}" optional>{code}</autoref>'

    return ROLE.sub(replace, text)


def rewrite_literal_blocks(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        block = textwrap.dedent(match["block"]).strip("\n")
        return f":\n\n```python\n{block}\n```\n\n"

    return LITERAL.sub(replace, text)


class ProseDocstrings(griffe.Extension):
    """Rewrite every docstring of the package once it is completely loaded (so names
    defined anywhere in it resolve)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader,
                   **kwargs: Any) -> None:
        self.rewrite(pkg)

    def rewrite(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            text = rewrite_literal_blocks(obj.docstring.value)
            obj.docstring.value = rewrite_roles(obj, text)
        for member in obj.members.values():
            if not member.is_alias:
                self.rewrite(member)  # type: ignore[arg-type]
