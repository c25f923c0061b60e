"""The docs: every relative link and #anchor in README.md and docs/ resolves, on GitHub and in the MkDocs site alike,
and `mkdocs build --strict` passes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
EXPLICIT_ID = re.compile(r"<a\b[^>]*?\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']|\{[^}]*#([\w-]+)[^}]*\}", re.IGNORECASE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def prose(text: str) -> str:
    """The text with fenced code blocks and code spans removed (links there are examples, not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def headings(text: str) -> list[str]:
    """The text of every ATX heading outside code blocks, in order, without an explicit `{#id}`."""
    return [re.sub(r"\s*\{[^}]*\}\s*$", "", m.group(2)) for m in HEADING.finditer(FENCE.sub("", text))]


def plain(heading: str) -> str:
    """A heading as rendered text: links and images become their text, HTML tags and code backticks go."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"<[^>]+>", "", text).replace("`", "")


def github_slug(heading: str) -> str:
    """GitHub's anchor (github-slugger): lowercase, punctuation but `-` and `_` dropped, each space a `-`."""
    return re.sub(r"[^\w\- ]", "", plain(heading).lower()).replace(" ", "-")


def mkdocs_slug(heading: str) -> str:
    """Python-Markdown's default toc slugify (what MkDocs uses): ASCII only, runs of spaces and `-` collapsed."""
    text = unicodedata.normalize("NFKD", plain(heading)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def unique(slugs: list[str], separator: str) -> list[str]:
    """De-duplicate slugs in order: GitHub appends -1, -2; Python-Markdown appends _1, _2."""
    seen: set[str] = set()
    out = []
    for slug in slugs:
        candidate, n = slug, 0
        while candidate in seen or not candidate:
            n += 1
            candidate = f"{slug}{separator}{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


def anchors(page: Path) -> tuple[set[str], set[str]]:
    """The anchors a page offers on GitHub and in MkDocs (explicit ids count for both)."""
    text = page.read_text(encoding="utf-8")
    titles = headings(text)
    explicit = {a or b for a, b in EXPLICIT_ID.findall(FENCE.sub("", text))}
    return (set(unique([github_slug(t) for t in titles], "-")) | explicit,
            set(unique([mkdocs_slug(t) for t in titles], "_")) | explicit)


def links(page: Path) -> list[str]:
    """Every link target of a page outside code, inline, reference-style and HTML."""
    text = prose(page.read_text(encoding="utf-8"))
    return LINK.findall(text) + REFERENCE.findall(text) + HTML_LINK.findall(text)


def broken(page: Path, target: str) -> str | None:
    """Why a link from `page` does not resolve, or None."""
    path, _, anchor = target.partition("#")
    if path.startswith("/"):
        return "absolute path: use a relative link"
    file = (page.parent / path).resolve() if path else page
    if not file.exists():
        return f"no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}"
    if page.is_relative_to(DOCS) and not file.is_relative_to(DOCS):
        return "a docs page links outside docs/, which the MkDocs site does not hold: name the path in backticks"
    if not anchor:
        return None
    if file.suffix != ".md":
        return f"an #anchor into {file.name}, which is not a Markdown page"
    github, mkdocs = anchors(file)
    if anchor not in github:
        return f"no heading of {file.name} has the GitHub anchor #{anchor}"
    if anchor not in mkdocs:
        return f"#{anchor} works on GitHub but MkDocs names that heading otherwise: reword the heading"
    return None


def test_slugs_follow_github_and_python_markdown() -> None:
    assert github_slug("Dream: one layer's channels") == "dream-one-layers-channels"
    assert github_slug("Set up (to work on `atlas`)") == "set-up-to-work-on-atlas"
    assert github_slug("mixed4d_3x3 [link](x.md) — 2 × 3") == "mixed4d_3x3-link--2--3"
    assert mkdocs_slug("mixed4d_3x3 [link](x.md) — 2 × 3") == "mixed4d_3x3-link-2-3"
    assert unique(["a", "a", "a"], "-") == ["a", "a-1", "a-2"]
    assert unique(["a", "a"], "_") == ["a", "a_1"]


@pytest.mark.skipif(importlib.util.find_spec("markdown") is None,
                    reason="Python-Markdown (it comes with mkdocs) not installed")
def test_mkdocs_slug_matches_python_markdown() -> None:
    """Our copy of the MkDocs slug gives the ids Python-Markdown's toc gives every heading of every page."""
    import markdown

    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        md = markdown.Markdown(extensions=["toc", "tables", "fenced_code"])
        md.convert(text)
        ids: list[str] = []
        stack = list(reversed(md.toc_tokens))
        while stack:
            token = stack.pop()
            ids.append(token["id"])
            stack.extend(reversed(token["children"]))
        assert ids == unique([mkdocs_slug(t) for t in headings(text)], "_"), page.name


def test_every_relative_link_and_anchor_resolves() -> None:
    assert (DOCS / "index.md").exists()
    problems = []
    for page in PAGES:
        for target in links(page):
            if SCHEME.match(target):
                continue
            why = broken(page, target)
            if why:
                problems.append(f"{page.relative_to(ROOT)}: ({target}) {why}")
    assert not problems, "\n".join(problems)


def test_readme_is_short() -> None:
    """What a newcomer needs in the first five minutes; the reference lives in docs/."""
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs not installed (pip install -e '.[docs]', also in the test extra)")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """The site builds with no warning: mkdocs.yml turns broken links, anchors and pages left out of the nav into
    warnings, and --strict fails on any."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").exists()
