"""The README stays a first page, and its links and the docs site's nav point at real files.

The site itself is built by `make docs` (`mkdocs build --strict`, in CI), which also checks
every link inside `docs/`; these checks need no mkdocs.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 250

# [text](target) and ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)[^)]*\)")


def nav_pages(entry) -> list[str]:
    """Every page path of a mkdocs ``nav`` (nested lists of ``{title: page}``)."""
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, list):
        return [page for item in entry for page in nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in nav_pages(value)]
    raise TypeError(f"mkdocs.yml nav: {entry!r} is not a page, a list or a section")


def relative_links(markdown: str) -> list[str]:
    """The link targets of ``markdown`` that are paths in the repository: no URL, no
    in-page anchor; an anchor after a path is dropped."""
    targets = [m.group(1) for m in LINK.finditer(markdown)]
    return [t.split("#", 1)[0] for t in targets
            if not t.startswith("#") and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def test_readme_is_a_first_page_of_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; at most {MAX_README_LINES}: move detail into docs/")


def test_every_page_of_the_docs_nav_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs_dir = ROOT / config.get("docs_dir", "docs")
    pages = nav_pages(config["nav"])
    assert pages, "mkdocs.yml has an empty nav"
    missing = [page for page in pages if not (docs_dir / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that {docs_dir} lacks: {missing}"


def test_every_relative_link_of_the_readme_is_a_file():
    links = relative_links(README.read_text(encoding="utf-8"))
    assert links, "README.md links to no file of the repository"
    broken = [link for link in links if not (ROOT / link).is_file()]
    assert not broken, f"README.md links to files that do not exist: {broken}"


def test_the_link_finder_sees_paths_and_skips_urls_and_anchors():
    text = ("[a](docs/a.md) ![b](docs/b.png) [c](https://x.org/c.md) [d](#top) "
            "[e](docs/e.md#part) [f](mailto:x@y.org)")
    assert relative_links(text) == ["docs/a.md", "docs/b.png", "docs/e.md"]
