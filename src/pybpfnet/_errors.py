"""The exception hierarchy. Leaf module: imported by _binding and the core.

Every failure is an exception (never a bool or an int). ``BpfError`` is an
``OSError`` so ``errno`` and ``except PermissionError``-style handling work;
subclasses also derive from the matching built-in (``KeyError``,
``PermissionError``, ...).
"""

import errno as _errno
import os

__all__ = [
    "BpfError", "BpfPermissionError", "MapKeyError", "VerifierError",
    "NotSupportedError", "ObjectFormatError", "CodecError", "HookBusyError",
]

#: Hints appended to messages for errnos that usually have one cause.
_HINTS = {
    _errno.EPERM: "needs CAP_BPF (plus CAP_NET_ADMIN for networking programs, "
                  "CAP_PERFMON for tracing) or root",
    _errno.EACCES: "the verifier or the kernel refused access; for pins, check "
                   "bpffs permissions",
    _errno.E2BIG: "a size or count exceeds the kernel's limit",
    _errno.ENOSPC: "the map is full (max_entries reached)",
    _errno.EBUSY: "already in use (another program or link holds it)",
}


class BpfError(OSError):
    """A failed BPF operation. ``errno`` is the kernel's error number,
    ``context`` says what was being done."""

    def __init__(self, err, context, detail=None):
        msg = "%s: %s" % (context, detail or os.strerror(err))
        hint = _HINTS.get(err)
        if hint and detail is None:
            msg += " (%s)" % hint
        super().__init__(err, msg)
        self.context = context

    def __str__(self):
        return self.strerror


class BpfPermissionError(BpfError, PermissionError):
    """EPERM/EACCES from the kernel: the message names the capability."""


class MapKeyError(BpfError, KeyError):
    """A key that is not in the map (ENOENT). Also a ``KeyError``."""

    def __init__(self, key, map_name):
        super().__init__(_errno.ENOENT, "map %r" % map_name,
                         "key %r not found" % (key,))
        self.key = key

    def __str__(self):
        return self.strerror


class NotSupportedError(BpfError):
    """A feature this kernel (or sandbox) does not provide."""

    def __init__(self, feature, min_kernel=None, detail=None, err=_errno.EOPNOTSUPP):
        text = "%s is not supported here" % feature
        if min_kernel:
            text += " (needs Linux >= %s)" % min_kernel
        if detail:
            text += ": %s" % detail
        OSError.__init__(self, err, text)
        self.context = feature
        self.feature = feature
        self.min_kernel = min_kernel


class HookBusyError(BpfError):
    """The hook already runs another program (EBUSY). ``prog_id`` names
    it; ``link_id`` is the bpf_link holding it (None for a netlink
    attachment)."""

    def __init__(self, context, detail, prog_id=None, link_id=None):
        super().__init__(_errno.EBUSY, context, detail)
        self.prog_id = prog_id
        self.link_id = link_id


class ObjectFormatError(BpfError, ValueError):
    """The bytes given are not a usable BPF ELF object."""


class CodecError(ValueError, TypeError):
    """A Python value that does not fit the C type it must be encoded as.

    Derives from both ``ValueError`` and ``TypeError``: wrong shape and out of
    range are reported by one class whose message names the field and the C
    type expected."""


class VerifierError(BpfError):
    """The verifier rejected a program.

    ``log`` holds the complete verifier log, ``program`` the program name,
    ``instruction`` the failing instruction line and ``source`` the C source
    line (from BTF line info) when the log has them. ``str()`` shows the last
    lines of the log with "(N lines omitted)".
    """

    SHOWN_LINES = 12

    def __init__(self, err, program, log):
        self.program = program
        self.log = log
        lines = [ln for ln in log.rstrip("\n").split("\n")]
        self.instruction, self.source = _locate_failure(lines)
        shown = lines[-self.SHOWN_LINES:]
        omitted = len(lines) - len(shown)
        head = "program %r rejected by the verifier" % program
        if self.source:
            head += " at %s" % self.source
        body = "\n".join("    " + ln for ln in shown)
        if omitted:
            body = "    (%d lines omitted)\n%s" % (omitted, body)
        super().__init__(err, "load program %r" % program,
                         "%s (%s)\n%s" % (head, os.strerror(err), body))


def _locate_failure(lines):
    """The last instruction line and the last '; source @ file:line' before
    the end of the log (the kernel prints the source line before the insns
    generated for it)."""
    instruction = source = None
    for ln in lines:
        s = ln.strip()
        if s.startswith(";"):
            source = s[1:].strip()
        elif s[:1].isdigit() and ": (" in s:
            instruction = s
    return instruction, source
