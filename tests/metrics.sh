#!/usr/bin/env bash
# Checks taskd's /metrics with Prometheus' own linter: starts the debug
# binary with HTTP, TCP and UDP listeners on free loopback ports, sends
# requests of several kinds (answers and errors, line protocol and HTTP),
# then `promtool check metrics` must print nothing and exit 0.
# Needs curl, python3 (to pick free ports) and promtool (Debian's
# `prometheus` package). Cleans up on every path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v promtool >/dev/null 2>&1; then
    echo "metrics.sh: promtool not found; apt-get install prometheus" >&2
    exit 1
fi
cargo build --quiet --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/debug/taskd"

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Two ports free right now (both bound at once, so they differ); the UDP
# listener shares the TCP one's number.
read -r http_port tcp_port < <(python3 -c '
import socket
a = socket.socket(); a.bind(("127.0.0.1", 0))
b = socket.socket(); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')

cat >"$work/taskd.toml" <<EOF
[server]
workers = 2
state_dir = "$work"

[limits]
max_values = 5

[results_log]
path = "$work/results.log"

[metrics]
per_user = true

[[listener]]
proto = "http"
address = "127.0.0.1:$http_port"

[[listener]]
proto = "tcp"
address = "127.0.0.1:$tcp_port"

[[listener]]
proto = "udp"
address = "127.0.0.1:$tcp_port"
EOF

"$bin" --config "$work/taskd.toml" 2>"$work/stderr.log" &
pid=$!
base="http://127.0.0.1:$http_port"
for _ in $(seq 100); do
    curl -s -o /dev/null "$base/healthz" && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/stderr.log" >&2; echo "FAIL: taskd exited" >&2; exit 1; }
    sleep 0.1
done

# HTTP: answers, then errors of the line protocol's codes and of HTTP's own.
for path in '/v1/max?values=1,2,3&username=alice' '/pi?simulations=10000&concurrency=2&username=1111' \
    '/v1/stats?values=7,8,54,89' '/v1/ping' '/v1/info' '/statistics' '/healthz' \
    '/v1/max' '/v1/max?values=1,x' '/v1/max?values=1,2,3,4,5,6' '/v1/pi?samples=0' \
    '/v1/nosuch' '/v1/help' '/nosuch'; do
    curl -s -o /dev/null "$base$path"
done
curl -s -o /dev/null -H 'Content-Type: application/json' -d '{"id": 1, "values": [1, 2.5]}' "$base/v1/sum"
curl -s -o /dev/null -H 'Content-Type: application/json' -d '{"op": "min", "values": [1]}' "$base/v1/max"
curl -s -o /dev/null -X DELETE "$base/v1/max"
curl -s -o /dev/null -H 'Transfer-Encoding: chunked' -d '{"values": [1]}' "$base/v1/sum"

# The line protocol over TCP and UDP.
exec 3<>"/dev/tcp/127.0.0.1/$tcp_port"
printf 'max 1 5 3\n@bob mean 2 4\nnosuchop\nsum 1 x\n{"op": "median", "values": [4, 1]}\n' >&3
timeout 10 head -n 5 <&3 >/dev/null
exec 3>&-
printf 'sum 1 2 3\n' >"/dev/udp/127.0.0.1/$tcp_port"

metrics=$(curl -sf "$base/metrics")
for series in 'taskd_requests_total{proto="http",op="max"}' 'taskd_requests_total{proto="tcp",op="max"}' \
    'taskd_errors_total{proto="http",op="unknown",code="not-found"}' 'taskd_task_duration_seconds_count' \
    'taskd_user_requests_total{user="alice"}'; do
    grep -qF "$series " <<<"$metrics" || { echo "FAIL: no $series in /metrics" >&2; exit 1; }
done

set +e
out=$(curl -s "$base/metrics" | promtool check metrics 2>&1)
rc=$?
set -e
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
    echo "FAIL: promtool check metrics exited $rc:" >&2
    echo "$out" >&2
    exit 1
fi
echo "PASS promtool check metrics ($(grep -vc '^#' <<<"$metrics") samples)"
