#!/usr/bin/env bash
# Does what README.md shows a newcomer doing: taskd on its embedded default
# (run in a temporary folder, where it writes its files), then netcat over
# TCP and UDP, checking every reply. Cleans up on every path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release --manifest-path "$root/Cargo.toml"
bin="$root/target/release/taskd"

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -e /etc/taskd/taskd.toml ]; then
    echo "loopback.sh: /etc/taskd/taskd.toml exists; the embedded default would not be used" >&2
    exit 1
fi
(cd "$work" && exec "$bin") 2>"$work/stderr.log" &
pid=$!
for _ in $(seq 100); do
    nc -z 127.0.0.1 7700 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/stderr.log" >&2; echo "FAIL: taskd exited" >&2; exit 1; }
    sleep 0.1
done

fails=0
check() { # name expected actual
    if [ "$2" == "$3" ]; then
        echo "PASS $1"
    else
        echo "FAIL $1"; echo "  expected: $2"; echo "  got:      $3"; fails=$((fails + 1))
    fi
}

got=$(printf 'max 1 5 3\n' | nc -N 127.0.0.1 7700)
check "tcp max" "OK 5" "$got"

got=$(printf 'mean 2 4\n#7 stats 7 8 54 89\n@alice sum 1,2,3\nmedian [4, 1, 3, 2]\nnosuchop\n' | nc -N 127.0.0.1 7700)
check "tcp session" "OK 3
#7 OK count=4 min=7 max=89 mean=39.5 median=31
OK 6
OK 2.5
ERR unknown-op no operation \"nosuchop\"; try help" "$got"

got=$(printf 'pi 1000000 2\n' | nc -N 127.0.0.1 7700)
case "$got" in
    "OK 3.1"*" samples=1000000 chunks=2") echo "PASS tcp pi" ;;
    *) echo "FAIL tcp pi: $got"; fails=$((fails + 1)) ;;
esac

got=$(printf '{"id": 7, "op": "median", "values": [4, 1, 3, 2]}\n' | nc -N 127.0.0.1 7700)
check "tcp json" '{"id":7,"ok":true,"result":2.5}' "$got"

got=$(printf 'users\n' | nc -N 127.0.0.1 7700)
check "tcp users" 'OK [{"request_count":1,"username":"alice"},{"request_count":7,"username":"anonymous"}]' "$got"

got=$(printf 'sum 1 2 3\n' | nc -u -w1 127.0.0.1 7700)
check "udp sum" "OK 6" "$got"

got=$(printf '#a max 1 2\n#b min 1 2\n' | nc -u -w1 127.0.0.1 7700)
check "udp two lines" "#a OK 2
#b OK 1" "$got"

got=$(printf 'users\n' | nc -u -w1 127.0.0.1 7700)
check "udp tcp-only" "ERR tcp-only users is served over TCP, TLS and HTTP only" "$got"

got=$(curl -s 'http://127.0.0.1:7780/pi?simulations=1000000&concurrency=2')
case "$got" in
    '{"pi":3.1'*',"simulations":1000000,"concurrency":2,"elapsed_s":'*'}') echo "PASS http pi" ;;
    *) echo "FAIL http pi: $got"; fails=$((fails + 1)) ;;
esac

got=$(curl -s 'http://127.0.0.1:7780/pi?simulations=1000000&concurrency=2&username=1111' >/dev/null; curl -s http://127.0.0.1:7780/statistics)
check "http statistics" '[{"request_count":1,"username":"1111"},{"request_count":1,"username":"alice"},{"request_count":11,"username":"anonymous"}]' "$got"

got=$(curl -s 'http://127.0.0.1:7780/v1/stats?values=7,8,54,89&id=q1')
check "http v1 get" '{"id":"q1","ok":true,"result":{"count":4,"min":7,"max":89,"mean":39.5,"median":31}}' "$got"

got=$(curl -s -X POST -d '{"id": 7, "values": [4, 1, 3, 2]}' http://127.0.0.1:7780/v1/median)
check "http v1 post" '{"id":7,"ok":true,"result":2.5}' "$got"

got=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:7780/v1/max)
check "http empty is 400" "400" "$got"

got=$(curl -s http://127.0.0.1:7780/healthz)
check "http healthz" '{"status":"ok"}' "$got"

if [ "$fails" -ne 0 ]; then
    echo "loopback.sh: $fails failed"; cat "$work/stderr.log"; exit 1
fi
echo "loopback.sh: all passed"
