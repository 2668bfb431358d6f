"""Fenced code blocks of the project's Markdown files (README.md, docs/*.md).

Tests run what the docs give, read from the file that holds it, so a block
that moves or changes is caught.
"""

from __future__ import annotations

import re

from tests.support.database import PROJECT_ROOT

# A fence may be indented (a block inside a list item); its lines are then
# indented as much, and are returned without that indent.
_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def fenced_blocks(doc: str, language: str) -> list[str]:
    """Every block of ``language`` in ``doc`` (a path relative to the project root), in order."""
    text = (PROJECT_ROOT / doc).read_text()
    blocks = []
    for indent, lang, body in _FENCE.findall(text):
        if lang == language:
            blocks.append("".join(line.removeprefix(indent) for line in body.splitlines(keepends=True)))
    return blocks


def fenced_block(doc: str, language: str, marker: str) -> str:
    """The one block of ``language`` in ``doc`` that contains ``marker``."""
    found = [block for block in fenced_blocks(doc, language) if marker in block]
    assert len(found) == 1, f"{doc} has one {language} block containing {marker!r}, found {len(found)}"
    return found[0]
