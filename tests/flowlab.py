"""TCP helpers the flow lab tests share: the socket-side oracles
(TCP_INFO) and a one-connection server thread that is joined even when
the client side fails."""

import contextlib
import socket
import struct
import threading
import time

TCP_CLOSE = 7


def tcp_info(sock):
    """(state, segs_out, bytes_sent, bytes_retrans) from TCP_INFO (struct
    tcp_info offsets of linux/tcp.h: state at 0, segs_out at 136,
    bytes_sent at 200, bytes_retrans at 208). segs_out counts
    retransmitted segments, bytes_sent does not count their payload."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return (raw[0], struct.unpack_from("<I", raw, 136)[0], struct.unpack_from("<Q", raw, 200)[0],
            struct.unpack_from("<Q", raw, 208)[0])


def wait_closed(sock):
    """TCP_INFO of ``sock`` once it reached TCP_CLOSE (every FIN and ACK
    sent); AssertionError after 2 s."""
    for _ in range(400):
        info = tcp_info(sock)
        if info[0] == TCP_CLOSE:
            return info
        time.sleep(0.005)
    raise AssertionError("socket never reached TCP_CLOSE: %r" % (info,))


def drain(conn):
    """Read ``conn`` to EOF; returns the byte count."""
    got = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return got
        got += len(chunk)


@contextlib.contextmanager
def serve_one(srv, handle=drain):
    """Accept one connection on the listening socket ``srv`` in a thread and
    run ``handle(conn)`` there (the connection is closed after it). Leaving
    the block joins the thread and re-raises what ``handle`` raised; when
    the block itself raises, ``srv`` is shut down first, which wakes a
    thread still waiting in accept()."""
    errors = []

    def run():
        try:
            conn, _ = srv.accept()
            with conn:
                handle(conn)
        except BaseException as e:          # re-raised by the caller's thread
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        yield t
    except BaseException:
        with contextlib.suppress(OSError):
            srv.shutdown(socket.SHUT_RDWR)
        t.join()
        raise
    t.join()
    if errors:
        raise errors[0]


def run_beside(traffic, main):
    """``main()``'s result, with ``traffic()`` running in a thread meanwhile;
    the thread is joined and what it raised is raised here (a failed
    connection shows as itself, not as missing records)."""
    errors = []

    def run():
        try:
            traffic()
        except BaseException as e:          # re-raised by the caller's thread
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        result = main()
    finally:
        t.join()
    if errors:
        raise errors[0]
    return result
