"""The README and docs/ point at things that exist: every relative link (and its #anchor), and every
file or folder of the repository they name in backticks."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"`((?:domain|services|projections|tests|deploy|docs)/[\w./{},-]*)`")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, fence = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]


def test_every_page_is_found() -> None:
    assert len(PAGES) >= 8
    assert {p.name for p in PAGES} >= {"api.md", "topics.md", "configuration.md", "benchmarks.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_repository_paths_exist(page: Path) -> None:
    missing = []
    for name in REPO_PATH.findall(page.read_text()):
        if "{" in name:  # a pattern such as tests/{unit,integration,e2e}
            continue
        if not (ROOT / name.rstrip(".,")).exists():
            missing.append(name)
    assert missing == []


def test_the_checker_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# Title\n[ok](p.md#title) [bad](p.md#nowhere) [gone](missing.md) [web](https://x.y)\n")
    assert links(page) == ["p.md#title", "p.md#nowhere", "missing.md"]
    assert anchors(page) == {"title"}
