#!/usr/bin/env python3
"""A DNS server that answers every query with REFUSED, over UDP and TCP.

Usage: refuser.py PORT PIDFILE

tests/env/dns-up runs it as the only nameserver of lame.autoencrypt.test.,
so that unbound answers SERVFAIL for names below it at once (a port where
nothing listens makes unbound retry for well over 20 seconds instead).
"""

import os
import socket
import sys
import threading


def question_end(q):
    """Offset just past the (single) question, or 12 when there is none."""
    if q[4:6] != b"\x00\x01":
        return 12
    i = 12
    while i < len(q) and q[i] != 0:
        if q[i] & 0xC0:
            return 12
        i += q[i] + 1
    end = i + 1 + 4
    return end if end <= len(q) else 12


def refused(q):
    if len(q) < 12:
        return None
    if q[2] & 0x80:  # a response: ignore
        return None
    end = question_end(q)
    flags = bytes([(q[2] & 0x79) | 0x80, (q[3] & 0x10) | 0x05])  # QR, opcode, RD; CD; RCODE 5
    qdcount = b"\x00\x01" if end > 12 else b"\x00\x00"
    return q[:2] + flags + qdcount + b"\x00" * 6 + q[12:end]


def serve_tcp(sock):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=tcp_conn, args=(conn,), daemon=True).start()


def tcp_conn(conn):
    try:
        conn.settimeout(5)
        while True:
            head = recv_exact(conn, 2)
            if head is None:
                return
            q = recv_exact(conn, int.from_bytes(head, "big"))
            if q is None:
                return
            r = refused(q)
            if r is not None:
                conn.sendall(len(r).to_bytes(2, "big") + r)
    except OSError:
        pass
    finally:
        conn.close()


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main():
    port = int(sys.argv[1])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(16)
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
    while True:
        q, addr = udp.recvfrom(65535)
        r = refused(q)
        if r is not None:
            udp.sendto(r, addr)


if __name__ == "__main__":
    main()
