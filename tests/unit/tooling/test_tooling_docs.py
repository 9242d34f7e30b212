"""The docs a user or contributor reads are in the repository, and their links work.

Issue 8: the README and the CLI's help pointed at the design notes (SEED and DESIGN),
files outside the repository that a user of a clone never has.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
#: [text](target) links, without those to other hosts or to anchors only.
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_docs_exist() -> None:
    assert (ROOT / "ARCHITECTURE.md").is_file()
    assert (ROOT / "docs" / "formats.md").is_file()


def test_every_relative_link_names_a_file_of_the_repository() -> None:
    broken = []
    for page in DOCS:
        for target in _LINK.findall(page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_nothing_refers_to_design_notes_outside_the_repository() -> None:
    outside = re.compile(r"\b(SEED|DESIGN)\.md\b")
    sources = [
        *DOCS,
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "benchmarks").rglob("*.py"),
    ]
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if outside.search(line)
    ]
    assert found == []


def test_every_doc_a_docstring_cites_is_in_the_repository() -> None:
    """Issue 9: docstrings cited ``docs/design.md`` after it had moved; a cited
    page (``ARCHITECTURE.md``, ``docs/formats.md``) must exist at the root."""
    cited = re.compile(r"\b((?:docs/)?[A-Za-z_]+\.md)\b")
    missing = [
        f"{path.relative_to(ROOT)}:{number}: {name}"
        for path in (ROOT / "src").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for name in cited.findall(line)
        if not (ROOT / name).exists()
    ]
    assert missing == []
