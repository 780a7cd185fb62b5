"""The documentation: the MkDocs site builds strictly (a warning, a broken link or anchor, a page
left out of the nav fails it), README's and CONTRIBUTING's relative links reach a file and, into
Markdown, a heading that exists, and the blocks that scripts rewrite are where the scripts look."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def test_site_builds_strictly(tmp_path):
    """`make docs`'s build, into a temporary directory; ~2 s."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "index.html").is_file()


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (lower case, punctuation dropped,
    spaces to hyphens, repeats numbered)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", markdown).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(markdown: str) -> list[str]:
    text = FENCE.sub("", markdown)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md"])
def test_repository_links_resolve(name):
    """GitHub shows these outside the site, so MkDocs does not check them: every relative link
    must reach a file, and an anchor a heading of the file it names."""
    source = ROOT / name
    broken = []
    for target in relative_links(source.read_text()):
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and file.suffix == ".md" and anchor not in github_anchors(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{name}: " + "; ".join(broken)


def test_rewritten_blocks_are_where_the_scripts_look():
    """`make bench` rewrites the table between bench markers in the file the Makefile names; the
    measured blocks (skills, leaks, view-bench, uneven, strong, targets) are kept once each, intact,
    somewhere."""
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"bench/run_all\.py .*--readme (\S+)", makefile)
    assert target, "the Makefile's bench target no longer passes --readme"
    text = (ROOT / target.group(1)).read_text()
    assert text.count("<!-- bench:begin -->") == 1 and text.count("<!-- bench:end -->") == 1
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    texts = {page: page.read_text() for page in pages}
    for block in ("skills", "leaks", "view-bench", "uneven", "strong", "targets"):
        begin, end = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
        holders = [p for p, t in texts.items() if begin in t]
        assert len(holders) == 1, f"{block} block in {holders}"
        text = texts[holders[0]]
        assert text.count(begin) == 1 and text.count(end) == 1
        assert text.index(begin) < text.index(end)
