#!/usr/bin/env python3
"""A steady stream of requests to taskd, the way a well-behaved client of a
fleet sends them (docs/scaling.md, "What a client sees"), for
tests/scaleout/run.sh and tests/systemd/run.sh.

    stream.py --tcp 127.0.0.4:7700 --clients 4 --interval 0.01 \
              --stop-file DIR/stop --out DIR/c

Each client sends `#<name>-<n> sum <n> <k>` (k: the client's number, so a
reply that went to the wrong client shows) and waits for its reply before
the next request; with --http, `GET /v1/sum?values=<n>,<k>&id=<name>-<n>`
on a keep-alive connection. It retries what is always safe to retry:

- `ERR shutting-down` (HTTP 503): the host is draining; the client closes
  the connection, connects again (the balancer or the next taskd takes it)
  and sends the same request again;
- end of file before the reply (a draining host closed an idle connection):
  connect again and send the request again;
- over UDP, no reply within --udp-timeout: send it again (a datagram may be
  lost; every retry is counted).

What the client must never see, and counts as a failure: a refused or reset
connection, a connection or reply that times out (--timeout), a reply that
is not the expected one. It keeps going after a failure (so one failure
does not hide the rest) and, at the end, writes OUT.json with its counts
and OUT.ids (one line per request answered OK: the id, then the request's
send time and answer time, seconds since the start) and exits 0 when there
was no failure, 1 otherwise.

It stops after --count requests per client, or once --stop-file exists (the
request under way is finished first), and in any case after --max-seconds.
"""

import argparse
import errno
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

T0 = time.monotonic()


def now():
    return time.monotonic() - T0


class Client:
    def __init__(self, args, k):
        self.args = args
        self.k = k
        self.name = f"{args.name}{k}"
        self.counts = {
            "sent": 0,  # requests, not counting retries
            "ok": 0,
            "retried_shutting_down": 0,
            "retried_eof": 0,
            "retried_udp_timeout": 0,
            "connects": 0,
            "refused": 0,
            "reset": 0,
            "timeout": 0,
            "wrong": 0,
            "other_error": 0,
        }
        self.failures = []  # the first few, for the report
        self.answered = []  # (id, sent_at, answered_at)
        self.sock = None
        self.rbuf = b""

    def fail(self, what, detail):
        self.counts[what] += 1
        if len(self.failures) < 10:
            self.failures.append(f"{now():.3f}s {self.name}: {what}: {detail}")

    # --- TCP ---------------------------------------------------------------
    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.rbuf = b""

    def connect(self):
        host, port = self.args.tcp.rsplit(":", 1)
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(self.args.timeout)
        s.connect((host.strip("[]"), int(port)))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.counts["connects"] += 1

    def read_line(self):
        """A reply line; None at end of file."""
        while b"\n" not in self.rbuf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.rbuf += data
        line, self.rbuf = self.rbuf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def tcp_request(self, rid, line, want):
        """Sends one request until it is answered (with retries); True when
        answered as expected."""
        deadline = time.monotonic() + self.args.max_seconds
        while time.monotonic() < deadline:
            try:
                if self.sock is None:
                    self.connect()
                self.sock.sendall(line.encode() + b"\n")
                reply = self.read_line()
            except ConnectionRefusedError as e:
                self.fail("refused", e)
                self.close()
                time.sleep(0.05)
                continue
            except (ConnectionResetError, BrokenPipeError) as e:
                self.fail("reset", e)
                self.close()
                continue
            except socket.timeout as e:
                self.fail("timeout", f"{rid}: {e}")
                self.close()
                continue
            except OSError as e:
                if e.errno in (errno.ECONNRESET, errno.EPIPE):
                    self.fail("reset", e)
                else:
                    self.fail("other_error", e)
                self.close()
                time.sleep(0.05)
                continue
            if reply is None:
                self.counts["retried_eof"] += 1
                self.close()
                continue
            if reply.startswith(f"#{rid} ERR shutting-down"):
                self.counts["retried_shutting_down"] += 1
                self.close()
                continue
            if reply != want:
                self.fail("wrong", f"sent {line!r}, got {reply!r}, want {want!r}")
                self.close()
                return False
            return True
        self.fail("timeout", f"{rid}: not answered within {self.args.max_seconds}s")
        return False

    # --- HTTP --------------------------------------------------------------
    def http_request(self, rid, n):
        host, port = self.args.http.rsplit(":", 1)
        q = {"values": f"{n},{self.k}", "id": rid}
        if self.args.user:
            q["username"] = self.args.user
        path = "/v1/sum?" + urllib.parse.urlencode(q)
        want = {"id": rid, "ok": True, "result": n + self.k}
        deadline = time.monotonic() + self.args.max_seconds
        while time.monotonic() < deadline:
            try:
                if self.sock is None:
                    self.sock = http.client.HTTPConnection(host, int(port), timeout=self.args.timeout)
                    self.sock.connect()
                    self.counts["connects"] += 1
                self.sock.request("GET", path)
                r = self.sock.getresponse()
                body = r.read()
                closing = r.getheader("Connection", "").lower() == "close"
            except http.client.RemoteDisconnected:
                # The end of the connection, no reset, before a response: the
                # server closed a keep-alive connection (a subclass of
                # ConnectionResetError, so first).
                self.counts["retried_eof"] += 1
                self.close()
                continue
            except ConnectionRefusedError as e:
                self.fail("refused", e)
                self.close()
                time.sleep(0.05)
                continue
            except (ConnectionResetError, BrokenPipeError) as e:
                self.fail("reset", e)
                self.close()
                continue
            except socket.timeout as e:
                self.fail("timeout", f"{rid}: {e}")
                self.close()
                continue
            except (OSError, http.client.HTTPException) as e:
                self.fail("other_error", f"{rid}: {e!r}")
                self.close()
                time.sleep(0.05)
                continue
            if closing:
                self.close()
            if r.status == 503:
                self.counts["retried_shutting_down"] += 1
                self.close()
                continue
            try:
                got = json.loads(body)
            except ValueError:
                got = body
            if r.status != 200 or got != want:
                self.fail("wrong", f"GET {path}: {r.status} {body!r}, want {want}")
                return False
            return True
        self.fail("timeout", f"{rid}: not answered within {self.args.max_seconds}s")
        return False

    # --- UDP ---------------------------------------------------------------
    def udp_request(self, rid, line, want):
        host, port = self.args.udp.rsplit(":", 1)
        if self.sock is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.connect((host, int(port)))
            self.counts["connects"] += 1
        deadline = time.monotonic() + self.args.timeout
        while True:
            try:
                self.sock.send(line.encode() + b"\n")
            except OSError as e:
                # ECONNREFUSED: an ICMP port unreachable of an earlier send.
                self.fail("refused" if e.errno == errno.ECONNREFUSED else "other_error", e)
                time.sleep(0.05)
                if time.monotonic() >= deadline:
                    return False
                continue
            until = time.monotonic() + self.args.udp_timeout
            while True:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                try:
                    reply = self.sock.recv(65536).decode("utf-8", "replace").rstrip("\n")
                except socket.timeout:
                    break
                except OSError as e:
                    self.fail("refused" if e.errno == errno.ECONNREFUSED else "other_error", e)
                    break
                if not reply.startswith(f"#{rid} "):
                    continue  # a late reply to an earlier try
                if reply.startswith(f"#{rid} ERR shutting-down"):
                    self.counts["retried_shutting_down"] += 1
                    break
                if reply != want:
                    self.fail("wrong", f"sent {line!r}, got {reply!r}, want {want!r}")
                    return False
                return True
            if time.monotonic() >= deadline:
                self.fail("timeout", f"{rid}: no UDP reply within {self.args.timeout}s")
                return False
            self.counts["retried_udp_timeout"] += 1

    def run(self):
        a = self.args
        end = time.monotonic() + a.max_seconds
        n = 0
        while time.monotonic() < end:
            if a.count and n >= a.count:
                break
            if a.stop_file and os.path.exists(a.stop_file):
                break
            rid = f"{self.name}-{n}"
            user = f"@{a.user} " if a.user else ""
            line = f"#{rid} {user}sum {n} {self.k}"
            want = f"#{rid} OK {n + self.k}"
            self.counts["sent"] += 1
            sent_at = now()
            if a.http:
                ok = self.http_request(rid, n)
            elif a.udp:
                ok = self.udp_request(rid, line, want)
            else:
                ok = self.tcp_request(rid, line, want)
            if ok:
                self.counts["ok"] += 1
                self.answered.append((rid, sent_at, now()))
            n += 1
            if a.interval:
                time.sleep(a.interval)
        self.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--tcp", metavar="HOST:PORT")
    g.add_argument("--udp", metavar="HOST:PORT")
    g.add_argument("--http", metavar="HOST:PORT")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--name", default="c", help="id prefix of the clients")
    p.add_argument("--user", default="", help="send @USER with each request")
    p.add_argument("--count", type=int, default=0, help="requests per client (0: until stopped)")
    p.add_argument("--interval", type=float, default=0.01, help="pause between requests (s)")
    p.add_argument("--timeout", type=float, default=10.0, help="connect/reply timeout (s)")
    p.add_argument("--udp-timeout", type=float, default=0.5, help="UDP retry after (s)")
    p.add_argument("--stop-file")
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--out", required=True, help="OUT.json and OUT.ids are written")
    a = p.parse_args()

    clients = [Client(a, k) for k in range(1, a.clients + 1)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.max_seconds + a.timeout + 5)
    total = {k: sum(c.counts[k] for c in clients) for k in clients[0].counts}
    failures = [f for c in clients for f in c.failures]
    bad = sum(total[k] for k in ("refused", "reset", "timeout", "wrong", "other_error"))
    bad += sum(1 for t in threads if t.is_alive())
    with open(a.out + ".ids", "w") as f:
        for c in clients:
            for rid, s, r in c.answered:
                f.write(f"{rid} {s:.3f} {r:.3f}\n")
    with open(a.out + ".json", "w") as f:
        json.dump({"counts": total, "failures": failures, "seconds": round(now(), 3)}, f)
        f.write("\n")
    for line in failures:
        print(line, file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
