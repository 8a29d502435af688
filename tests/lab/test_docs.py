"""Every ```python block in docs/*.md and README.md runs as written
(blocks of one page share a namespace, in order)."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(page):
    return BLOCK.findall(page.read_text())


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)],
                         ids=lambda p: p.name)
def test_doc_examples_run(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__doc_%s__" % page.stem}
    for i, src in enumerate(blocks(page)):
        code = compile(src, "%s[block %d]" % (page.name, i + 1), "exec")
        exec(code, ns)
    for v in list(ns.values()):
        close = getattr(v, "close", None)
        if callable(close) and type(v).__module__.startswith("pybpfnet"):
            close()
