"""docs/api.md is generated from docstrings and must be current."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_api_reference_is_current():
    res = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_api.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_public_api_is_curated():
    import pybpfnet
    for name in pybpfnet.__all__:
        assert hasattr(pybpfnet, name), name
        obj = getattr(pybpfnet, name)
        if callable(obj) and not name.startswith("__"):
            assert (obj.__doc__ or "").strip(), "%s has no docstring" % name


def test_inherited_handle_methods_are_documented():
    """The TC monitors share their handle methods through a private base;
    the generated reference must still list them under each class."""
    text = (ROOT / "docs" / "api.md").read_text()
    for cls in ("FlowMonitor", "L7Monitor", "Capture"):
        start = text.index("### class `pybpfnet.%s(" % cls)
        end = text.find("\n### ", start + 1)
        section = text[start:end if end != -1 else len(text)]
        for member in ("`program(self", "`links`", "`closed`", "`ring`", "`fileno(self",
                       "`close(self"):
            assert member in section, (cls, member)
