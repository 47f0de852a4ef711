"""MkDocs hook: a page's link to a repository file outside docs/ works in the site too.

The pages link to files beside them by relative path (``../bench/README.md``), so the
links work on GitHub and in a checkout. The site only holds docs/, so such a link would
be broken there (and ``mkdocs build --strict`` rightly fails on it). This hook publishes
each repository file that a page links to under ``repo/`` (a Markdown file as a page of
its own, anything else as a static file), following links from those pages too, and
points the links at the copies, so --strict still checks every link.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

PREFIX = "repo"
# [text](target) and ![alt](target); the target up to a '#', a space or the ')'
LINK = re.compile(r"(?P<head>\]\()(?P<target>[^)\s#]+)(?P<tail>[^)]*\))")
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|/|#)", re.IGNORECASE)


def _dirs(config: MkDocsConfig) -> tuple[Path, Path]:
    root = Path(config.config_file_path).resolve().parent
    return root, Path(config.docs_dir).resolve()


def _target(base: Path, target: str, root: Path) -> Path | None:
    """The repository file a relative link names, or None (external, missing, outside)."""
    if EXTERNAL.match(target):
        return None
    path = (base / target).resolve()
    if not path.is_file() or not path.is_relative_to(root):
        return None
    return path


def _site_uri(path: Path, root: Path, docs: Path) -> str:
    if path.is_relative_to(docs):
        return path.relative_to(docs).as_posix()
    return f"{PREFIX}/{path.relative_to(root).as_posix()}"


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Add every repository file outside docs/ that a page links to (transitively)."""
    root, docs = _dirs(config)
    pending = [Path(f.abs_src_path) for f in files.documentation_pages() if f.abs_src_path]
    seen: set[Path] = set()
    while pending:
        page = pending.pop()
        for match in LINK.finditer(page.read_text(encoding="utf-8")):
            path = _target(page.parent, match["target"], root)
            if path is None or path.is_relative_to(docs) or path in seen:
                continue
            seen.add(path)
            files.append(File.generated(config, _site_uri(path, root, docs),
                                        abs_src_path=str(path)))
            if path.suffix == ".md":
                pending.append(path)
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files,
                     **kwargs: Any) -> str:
    """Point links that leave docs/ (or start from a published copy) at the copies."""
    root, docs = _dirs(config)
    source = page.file.abs_src_path
    if source is None:
        return markdown
    base = Path(source).resolve().parent
    published = not base.is_relative_to(docs)
    here = posixpath.dirname(page.file.src_uri)

    def fix(match: re.Match[str]) -> str:
        path = _target(base, match["target"], root)
        if path is None or (path.is_relative_to(docs) and not published):
            return match[0]  # mkdocs resolves (and checks) links inside docs/ itself
        link = posixpath.relpath(_site_uri(path, root, docs), here or ".")
        return f"{match['head']}{link}{match['tail']}"

    return LINK.sub(fix, markdown)
