"""The examples users read stay right: the README, the PyPI description (docs/pypi.md) and the user
guide show the same first look and the same plugin example, the plugin example is the typed file
that mypy checks and the plugin test runs, every Python block in them parses, and the PyPI text
has no links that only work inside the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PYPI = ROOT / "docs" / "pypi.md"
GUIDE = ROOT / "docs" / "guide"
PLUGIN_EXAMPLE = ROOT / "examples" / "test_with_the_pytest_plugin.py"

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks(path: Path) -> list[str]:
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


def _block_after(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index(heading)
    match = _BLOCK.search(text, start)
    assert match is not None, f"no python block after {heading!r} in {path}"
    return match.group(1)


def _documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_first_look_is_the_same_everywhere() -> None:
    readme = _block_after(README, "## A first look")
    assert "consumer.wait_until_assigned()" in readme
    assert readme.index("wait_until_assigned") < readme.index("producer.produce(")
    assert _block_after(PYPI, "## A first look") == readme
    assert _blocks(GUIDE / "first-topic.md")[0] == readme


def test_the_plugin_example_is_the_typed_example_file() -> None:
    readme = _block_after(README, "### Testing your own code")
    assert _blocks(GUIDE / "testing.md")[0] == readme
    function = readme[readme.index("def test_cache_is_invalidated") :]
    assert function in PLUGIN_EXAMPLE.read_text(encoding="utf-8")
    assert "from eventstream.testing import EventRecorder, TopicFactory" in readme


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_parses(path: Path) -> None:
    for number, block in enumerate(_blocks(path), start=1):
        try:
            ast.parse(block)
        except SyntaxError as exc:
            pytest.fail(f"{path.name}, python block {number}: {exc}")


def test_the_pypi_description_has_no_repository_only_links() -> None:
    text = PYPI.read_text(encoding="utf-8")
    relative = re.findall(r"\]\((?!https?://)([^)]*)\)", text)
    relative += re.findall(r"<(?!https?://)([^>\s]+)>", text)
    assert relative == []
    assert "./scripts" not in text and "scripts/" not in text
