"""The README and docs/ hold together as a reader follows them.

A reader starts at the README's table of contents, follows links into docs/ and back, and copies
paths out of the text. Each check below is one way that goes wrong after files move: a contents
entry pointing at a renamed heading, a link to a moved file, a page in docs/ nothing links to, or
a path in backticks that no longer exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# Top-level directories of this repository: a path in backticks starting with one of them names
# a file or directory a reader can open.
REPO_DIRS = ("fleetflow/", "dev/", "scripts/", "tests/", "docs/", ".ci/")
PLACEHOLDER = re.compile(r"[<>*{}$~ ]|\.\.\.")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and HTML comments: what a reader sees as prose."""
    text = COMMENT.sub("", text)
    kept, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return "\n".join(kept)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = LINK.sub(r"\1", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of ``page``; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(page.read_text()).splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    return [target for _, target in LINK.findall(prose(page.read_text()))]


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_readme_has_contents_whose_links_reach_its_headings() -> None:
    text = prose(README.read_text())
    match = re.search(r"^## Contents\n(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
    assert match, "README.md has no '## Contents' section"
    entries = [target for _, target in LINK.findall(match.group(1))]
    assert entries, "README.md's contents list no links"
    have = anchors(README)
    broken = [t for t in entries if not t.startswith("#") or t[1:] not in have]
    assert not broken, f"contents entries that reach no heading of README.md: {broken}"
    listed = {t[1:] for t in entries}
    sections = [
        slug(m.group(2))
        for m in map(HEADING.match, text.splitlines())
        if m and len(m.group(1)) == 2 and slug(m.group(2)) != "contents"
    ]
    missing = [s for s in sections if s not in listed]
    assert not missing, f"README.md sections missing from its contents: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_relative_links_reach_files_and_headings(page: Path) -> None:
    broken = []
    for target in links(page):
        if is_external(target):
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.is_relative_to(ROOT) or not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no such heading in {name(dest)})")
    assert not broken, f"{name(page)} links to what is not there: {broken}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in links(README)
        if not is_external(target) and not target.startswith("#")
    }
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds no pages"
    orphans = [name(p) for p in pages if p.resolve() not in linked]
    assert not orphans, f"pages in docs/ that README.md does not link to: {orphans}"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_repository_paths_in_backticks_exist(page: Path) -> None:
    words = (word for span in CODE_SPAN.findall(prose(page.read_text())) for word in span.split())
    paths = {w for w in words if w.startswith(REPO_DIRS) and not PLACEHOLDER.search(w)}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{name(page)} names paths the repository does not have: {missing}"
