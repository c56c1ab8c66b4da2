"""A message is written once: the backends' hot loops hold no long text of their own that the
other backend repeats. Log and error texts live in the shared layer (eventstream._runtime,
eventstream.errors), which both backends call; two copies would drift (they did: one word apart).

Read from the source with Python's tokenizer, which also reads the Cython files: every string
literal, and every run of adjacent literals (an implicitly concatenated message), longer than
40 characters, f-string fields compared as ``{}``. Docstrings are not messages and are left out.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LONGER_THAN = 40

_OPENING = re.compile(r"^([A-Za-z]*)('''|\"\"\"|'|\")")
_FIELD = re.compile(r"\{[^{}]*\}")


def _body(token: str) -> str:
    opening = _OPENING.match(token)
    assert opening is not None, token
    prefix, quote = opening.group(1).lower(), opening.group(2)
    body = token[opening.end() : len(token) - len(quote)]
    return _FIELD.sub("{}", body) if "f" in prefix else body


def _long_literals(path: Path) -> dict[str, int]:
    """``{text: line}`` of the long literals and literal runs of ``path`` but docstrings (a
    statement that is nothing but a string)."""
    source = path.read_text(encoding="utf-8")
    tokens = _whole_fstrings(source, list(tokenize.generate_tokens(io.StringIO(source).readline)))
    between = {tokenize.NL, tokenize.COMMENT}
    statement_edges = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    found: dict[str, int] = {}
    i = 0
    while i < len(tokens):
        if tokens[i].type != tokenize.STRING:
            i += 1
            continue
        j, parts = i, []
        while j < len(tokens) and tokens[j].type in {tokenize.STRING, *between}:
            if tokens[j].type == tokenize.STRING:
                parts.append(_body(tokens[j].string))
            j += 1
        before = next((t for t in reversed(tokens[:i]) if t.type not in between), None)
        after = tokens[j] if j < len(tokens) else None
        docstring = (before is None or before.type in statement_edges) and (
            after is None or after.type in statement_edges
        )
        if not docstring:
            for text in {"".join(parts), *parts}:
                if len(text) > LONGER_THAN:
                    found.setdefault(text, tokens[i].start[0])
        i = j
    return found


def _whole_fstrings(source: str, tokens: list[tokenize.TokenInfo]) -> list[tokenize.TokenInfo]:
    """Python 3.12+ tokenizes an f-string into FSTRING_START, its parts and FSTRING_END (PEP
    701); earlier versions give one STRING. Make each f-string one STRING token again, so the
    reader sees the same on every version."""
    start_type = getattr(tokenize, "FSTRING_START", None)
    if start_type is None:
        return tokens
    end_type = tokenize.FSTRING_END
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    out: list[tokenize.TokenInfo] = []
    i = 0
    while i < len(tokens):
        first = tokens[i]
        if first.type != start_type:
            out.append(first)
            i += 1
            continue
        depth, j = 0, i
        while True:
            depth += tokens[j].type == start_type
            depth -= tokens[j].type == end_type
            if depth == 0:
                break
            j += 1
        last = tokens[j]
        text = source[
            offsets[first.start[0] - 1] + first.start[1] : offsets[last.end[0] - 1] + last.end[1]
        ]
        out.append(tokenize.TokenInfo(tokenize.STRING, text, first.start, last.end, first.line))
        i = j + 1
    return out


def _texts(paths: list[Path]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in paths:
        for text, line in _long_literals(path).items():
            texts.setdefault(text, f"{path.relative_to(ROOT)}:{line}")
    return texts


def test_the_reader_finds_long_literals() -> None:
    pure = _texts(sorted((ROOT / "eventstream" / "_pure").rglob("*.py")))
    compiled = _texts(sorted((ROOT / "ext").glob("*.p[xy][xi]")))
    assert pure and compiled
    assert any("{}" in text for text in compiled)  # f-strings, fields normalized


def test_no_long_text_stands_in_both_backends() -> None:
    pure = _texts(sorted((ROOT / "eventstream" / "_pure").rglob("*.py")))
    compiled = _texts(sorted((ROOT / "ext").glob("*.p[xy][xi]")))
    both = [
        f"{text!r}: {pure[text]} and {compiled[text]}" for text in sorted(pure.keys() & compiled)
    ]
    assert both == [], "move these texts to the shared layer (eventstream._runtime or errors)"
