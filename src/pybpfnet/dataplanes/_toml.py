"""What the TOML configuration readers (firewall rules, load balancer)
share: parsing with syntax errors as "FILE:LINE: TOML syntax: reason", and
the table-header and key lines of the text, by line number, to report
later errors at. Private."""

import re
import tomllib

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_\-\"' .]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*=""")
_AT = re.compile(r"\s*\(at line (\d+), column \d+\)")


def loads(text, source, error):
    """tomllib.loads(text); a syntax error raises ``error`` (an exception
    class) with "source:line: TOML syntax: reason"."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _AT.search(str(e))
        line = m.group(1) if m else "?"
        raise error("%s:%s: TOML syntax: %s" % (source, line, _AT.sub("", str(e)))) from None


def lines(text):
    """(line number, bracket, table name, key) of each table header and
    key line of ``text``: ("[" or "[[", the name as written, None) for a
    header, (None, None, key without quotes) for a key."""
    for n, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m and not _KEY.match(line):
            yield n, m.group(1), m.group(2), None
            continue
        m = _KEY.match(line)
        if m:
            yield n, None, None, m.group(1).strip("\"'")
