"""The lifetime that data-plane handles owning a loaded object and the
Links they made share (Conntrack, LbDataplane, Decap): an ExitStack, the
Links, where the handle was made, and an idempotent ``close()`` with a
finalizer that only warns and closes. Private."""

import contextlib
import traceback
import warnings


def creation_site():
    """"file:line" of the innermost caller outside pybpfnet ("?" if none),
    for the ResourceWarning of a handle never closed."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "pybpfnet" not in frame.filename:
            return "%s:%d" % (frame.filename, frame.lineno)
    return "?"


class _LinkOwner:
    """Base of a handle that owns ``_stack`` (its object, maps ...) and
    ``_links``; a subclass calls ``_init_owner()`` first."""

    def _init_owner(self):
        self._site = creation_site()
        self._stack = contextlib.ExitStack()
        self._links = []
        self._closed = False

    def _keep(self, link):
        """``link``, kept to be closed by ``close()``."""
        self._links.append(link)
        return link

    def _close_links(self):
        for link in reversed(self._links):
            link.close()
        self._links.clear()

    def close(self):
        """Detach everywhere, then unload (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._close_links()
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            what = type(self).__name__
            warnings.warn("%s was never closed (made at %s)" % (what, self._site),
                          ResourceWarning, source=self)
            self.close()
