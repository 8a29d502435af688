"""Every ```python block of docs/packet.md runs as-is, each in a fresh namespace."""

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "packet.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.S | re.M)


def test_the_page_has_examples():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index, capsys):
    code = compile(BLOCKS[index], "%s[block %d]" % (DOC.name, index), "exec")
    exec(code, {"__name__": "__docs__"})
