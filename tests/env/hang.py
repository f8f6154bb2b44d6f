#!/usr/bin/env python3
"""A TCP server that accepts every connection and never sends a byte.

Usage: hang.py PIDFILE IP:PORT [IP:PORT ...]

tests/env/web-up runs it on HANG_IP:443 (a "WKD host" whose TLS handshake
is never answered) and HANG_IP:8443 (the plain-HTTP upstream nginx proxies
slow@'s URL to, so TLS succeeds and no HTTP answer ever comes). What
arrives is read and thrown away, so the peer's writes never block; a
connection ends only when the peer closes it. The PID file is written once
every socket listens.
"""

import os
import selectors
import socket
import sys


def main():
    pidfile = sys.argv[1]
    sel = selectors.DefaultSelector()
    for spec in sys.argv[2:]:
        ip, port = spec.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, int(port)))
        s.listen(64)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "listener")
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(pidfile + ".tmp", pidfile)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if key.data == "listener":
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, "conn")
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()


if __name__ == "__main__":
    main()
