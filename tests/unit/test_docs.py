"""The documentation site: it builds in strict mode, every page is in its navigation, every
relative link of the README and the pages finds its file, and the configuration page
documents every setting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from services.core.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 300  # what a newcomer reads; the reference is in docs/

# [text](target) and [text](target "title"); images alike. Code spans and fenced blocks are
# left out first: a `[x](y)` in code is not a link.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")


def broken_links(page: Path) -> list[str]:
    """The relative links of a Markdown file whose file does not exist (anchors are MkDocs'
    to check: its build validates them)."""
    text = _CODE.sub("", _FENCE.sub("", page.read_text()))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, a mailto: or an anchor of this page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    return broken


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def _mkdocs_config() -> dict[str, object]:
    """mkdocs.yml, as plain YAML (it uses none of MkDocs' own tags, !ENV and the like)."""
    loaded: dict[str, object] = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return loaded


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    result = subprocess.run(
        # Not --quiet: it drops the warnings before strict mode counts them, and the build passes.
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference to docs/"


def test_every_relative_link_finds_its_file() -> None:
    pages = [README, *sorted(DOCS.glob("*.md"))]
    broken = {page.name: links for page in pages if (links := broken_links(page))}
    assert broken == {}


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# There\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok too](there.md#top) [web](https://example.org/missing.md)\n"
        "[anchor](#here) `[code](missing-in-code.md)`\n"
        "```\n[fenced](missing-in-a-fence.md)\n```\n"
        "[broken](docs/not-a-page.md#x) ![picture](img/missing.png)\n"
    )
    assert broken_links(page) == ["docs/not-a-page.md#x", "img/missing.png"]


def test_every_page_is_in_the_navigation() -> None:
    nav = _nav_pages(_mkdocs_config()["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages


def test_the_site_needs_no_internet() -> None:
    config = _mkdocs_config()
    theme = config["theme"]
    assert isinstance(theme, dict)
    assert theme["font"] is False  # Material's default loads Google Fonts in the browser
    assert config.get("plugins") in (None, ["search"])  # no plugin that fetches anything


def test_every_setting_is_in_the_configuration_page() -> None:
    text = (DOCS / "configuration.md").read_text()
    names = [f"{ENV_PREFIX}{name.upper()}" for name, _ in Settings().flat()]
    assert [name for name in names if f"`{name}`" not in text] == []
    rows = re.findall(rf"^\| `({ENV_PREFIX}[A-Z0-9_]+)` \|", text, re.M)
    assert sorted(rows) == sorted(names)  # one row each, and none for a setting that is gone
