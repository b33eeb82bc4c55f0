"""Every relative link of the README and the pages under docs/ points at a file that exists, and
every #anchor into a Markdown page at one of its headings. No network: web links are skipped."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def links(text: str) -> list[str]:
    """Link targets of Markdown text, leaving out code, where brackets are not links."""
    return LINK.findall(CODE.sub("", FENCE.sub("", text)))


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    headings = re.findall(r"^#+\s+(.*?)\s*$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(page: Path):
    assert broken_links(page) == []


def test_the_readme_links_to_the_docs():
    targets = links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "docs/README.md" in targets
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= {
        t.partition("#")[0] for t in links((ROOT / "docs/README.md").read_text(encoding="utf-8"))
    } | {"README.md"}


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-section) [web](https://example.org/x) `[code](nowhere.md)`\n"
        "[gone](missing.md) ![img](pics/none.png) [bad anchor](other.md#no-section)\n"
        "```\n[fenced](nowhere.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "pics/none.png: no such file",
        "other.md#no-section: no heading #no-section in other.md",
    ]
