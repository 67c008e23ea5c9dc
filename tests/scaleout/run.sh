#!/usr/bin/env bash
# A taskd fleet on loopback (docs/scaling.md): two taskd instances from one
# servers.csv, HAProxy and nginx in front, Prometheus collecting both, all
# from Debian's packages and configured by the examples of
# packaging/examples/. Prints PASS/FAIL per check and exits non-zero if any
# failed.
#
#   tests/scaleout/run.sh
#
# Needs: haproxy, nginx with libnginx-mod-stream, prometheus (the server and
# promtool), python3, curl, cargo. No root: everything runs as the calling
# user, on 127.0.0.0/8 only, from a temporary folder that is removed at the
# end (TASKD_SCALEOUT_KEEP=1 keeps it); no system service is started.
#
#   127.0.0.2, 127.0.0.3   taskd: TCP and UDP 7700 (servers.csv), HTTP 7780
#   127.0.0.4              HAProxy: 7700 (TCP), 7780 (HTTP), 8404 (stats, metrics)
#   127.0.0.5              nginx: 7700 TCP and UDP
#   127.0.0.9:9090         Prometheus
#
# The examples are used as they are, except for what a loopback test must
# change, done by `localize` below and nothing else: the addresses of the
# example network (10.0.0.0/24, three taskd hosts) become the loopback ones
# above, the lines of the third taskd host are dropped (the test runs two),
# and the taskd hosts' HTTP listener moves from 0.0.0.0 to each instance's
# own address (two instances share one machine). Prometheus's copy scrapes
# and evaluates every 1 s instead of 15 s, and the alert rules' `for:` are
# 3 s instead of minutes, so that the test takes seconds (the rules' real
# durations are checked by `promtool test rules` with
# tests/scaleout/alerts.test.yml). Each taskd instance gets one drop-in of
# its own: `self_ip` (every loopback address is local, so the csv's rows
# cannot tell the instances apart by themselves) and a single worker.
#
# Environment:
#   TASKD_SCALEOUT_TIMEOUT  upper bound of the whole run in seconds (300)
#   TASKD_SCALEOUT_KEEP=1   keep the temporary folder (configurations, logs,
#                           results logs, clients' reports)

# Single quotes around `eval` arguments are deliberate: they are expanded
# when the check runs.
# shellcheck disable=SC2016

set -euo pipefail

T_ALL=${TASKD_SCALEOUT_TIMEOUT:-300}
if [ -z "${TASKD_SCALEOUT_BOUNDED:-}" ]; then
    # The whole run is bounded: on expiry timeout sends SIGTERM, the EXIT
    # trap stops what the script started; SIGKILL follows 30 s later.
    export TASKD_SCALEOUT_BOUNDED=1
    timeout -k 30 "$T_ALL" bash "$0" "$@" &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null' INT TERM HUP
    while :; do
        rc=0
        wait "$child" || rc=$?
        kill -0 "$child" 2>/dev/null || break
    done
    [ "$rc" != 124 ] || echo "FAIL tests/scaleout/run.sh ran out of time (${T_ALL}s)"
    exit "$rc"
fi

# haproxy and nginx are in /usr/sbin, which a user's PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
examples=$repo/packaging/examples
export LC_ALL=C.UTF-8

H1=127.0.0.2 H2=127.0.0.3 HAPROXY=127.0.0.4 NGINX=127.0.0.5
PROM=http://127.0.0.9:9090
# The instances' drain delay (taskd-fleet.toml): HAProxy must take a host
# out within it.
DRAIN_DELAY=5

start_s=$SECONDS
failures=0 passes=0
work=''
declare -A pid=()

step() { printf '\n=== %s (%ds)\n' "$*" "$((SECONDS - start_s))"; }
pass() { echo "PASS $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
indent() { sed 's/^/      /'; }
# check NAME CMD...: PASS if CMD succeeds, else FAIL with its output.
check() {
    local _name=$1 _rc=0
    shift
    "$@" >"$work/check.out" 2>&1 || _rc=$?
    if [ "$_rc" = 0 ]; then
        pass "$_name"
    else
        fail "$_name"
        tail -n 30 "$work/check.out" | indent
    fi
}
# wait_for SECONDS CMD...: CMD every 0.2 s until it succeeds; on timeout,
# print what its last try printed and fail.
wait_for() {
    local _secs=$1 _deadline=$((SECONDS + $1)) _last
    shift
    until _last=$("$@" 2>&1); do
        if [ "$SECONDS" -ge "$_deadline" ]; then
            printf 'not within %s s; the last try said: %s\n' "$_secs" "$_last"
            return 1
        fi
        sleep 0.2
    done
}
alive() { [ -n "${pid[$1]:-}" ] && kill -0 "${pid[$1]}" 2>/dev/null; }
# spawn NAME CMD...: start CMD in the background, its output in
# $work/NAME.log; `stop NAME` ends it.
spawn() {
    local name=$1
    shift
    "$@" >>"$work/$name.log" 2>&1 </dev/null &
    pid[$name]=$!
}
# stop NAME [SIGNAL] [SECONDS]: SIGNAL (TERM) and wait at most SECONDS (10)
# for the exit, then SIGKILL. Sets stop_rc to the exit status.
stop() {
    local name=$1 sig=${2:-TERM} secs=${3:-10} i
    stop_rc=
    [ -n "${pid[$name]:-}" ] || return 0
    # (stderr: bash's own notice of a job killed by a signal)
    {
        kill -"$sig" "${pid[$name]}" || true
        for ((i = 0; i < secs * 10; i++)); do
            alive "$name" || break
            sleep 0.1
        done
        ! alive "$name" || kill -KILL "${pid[$name]}"
        stop_rc=0
        wait "${pid[$name]}" || stop_rc=$?
    } 2>/dev/null
    unset "pid[$name]"
}

cleanup() {
    local rc=$? name
    set +e
    trap - EXIT INT TERM
    # The taskd instances get SIGKILL: their drain delay would only slow the
    # cleanup down, and their files go with the folder.
    for name in "${!pid[@]}"; do
        case $name in taskd*) stop "$name" KILL 5 ;; *) stop "$name" TERM 10 ;; esac
    done
    if [ -n "$work" ] && [ -d "$work" ]; then
        if [ "$failures" -gt 0 ] || [ "$rc" -ne 0 ]; then
            for name in taskd1 taskd2 haproxy nginx prometheus; do
                [ -s "$work/$name.log" ] || continue
                echo "--- $name.log (last 15 lines)"
                tail -n 15 "$work/$name.log" | indent
            done
        fi
        if [ -n "${TASKD_SCALEOUT_KEEP:-}" ]; then
            echo "kept $work (TASKD_SCALEOUT_KEEP)"
        else
            rm -rf "$work"
        fi
    fi
    [ "$rc" -eq 0 ] || [ "$failures" -gt 0 ] || fail "aborted (exit status $rc)"
    echo
    echo "tests/scaleout/run.sh took $((SECONDS - start_s)) s"
    echo "scaleout: $passes passed, $failures failed"
    [ "$failures" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# localize FILE: the example with the loopback test's addresses (see the
# head of this file).
localize() {
    sed -e '/\b10\.0\.0\.13\b/d' \
        -e 's/\b10\.0\.0\.11\b/127.0.0.2/g' \
        -e 's/\b10\.0\.0\.12\b/127.0.0.3/g' \
        -e 's/\b10\.0\.0\.4\b/127.0.0.4/g' \
        -e 's/\b10\.0\.0\.5\b/127.0.0.5/g' \
        -e 's#\b10\.0\.0\.0/24#127.0.0.0/8#g' \
        "$1"
}
# ping_tcp ADDR: `ping` over TCP to ADDR:7700 is answered `OK pong`.
ping_tcp() {
    python3 -c 'import socket, sys
s = socket.create_connection((sys.argv[1], 7700), 2)
s.sendall(b"ping\n")
sys.exit(s.recv(100) != b"OK pong\n")' "$1"
}
# healthz ADDR: the status code of taskd's /healthz.
healthz() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1:7780/healthz"; }
# haproxy_status BACKEND SERVER: UP, DOWN, ... as HAProxy's statistics say.
haproxy_status() {
    curl -sf --max-time 2 "http://$HAPROXY:8404/stats;csv" |
        awk -F, -v b="$1" -v s="$2" '$1 == b && $2 == s { print $18 }'
}
# haproxy_is SERVER STATE: SERVER is in STATE in both backends.
haproxy_is() {
    local b got
    for b in taskd_line taskd_http; do
        got=$(haproxy_status "$b" "$1")
        [ "${got%% *}" = "$2" ] || { echo "$b/$1: '$got', want $2"; return 1; }
    done
}
prom() { python3 "$here/prom.py" "$PROM" "$@"; }
# stream NAME ARGS...: tests/scaleout/stream.py in the background; its
# reports are $work/NAME.json and $work/NAME.ids.
stream() {
    local name=$1
    shift
    spawn "$name" python3 "$here/stream.py" --name "$name-" --out "$work/$name" "$@"
}
# finished NAME: wait for a stream started by `stream` (bounded by its own
# --max-seconds) and print its counts; fails when it saw a failure.
finished() {
    local name=$1 rc=0
    wait "${pid[$name]}" || rc=$?
    unset "pid[$name]"
    python3 - "$work/$name.json" <<'EOF' || rc=1
import json, sys
r = json.load(open(sys.argv[1]))
c = r["counts"]
print(f'{c["sent"]} sent, {c["ok"]} answered OK; retried: {c["retried_shutting_down"]} shutting-down, '
      f'{c["retried_eof"]} end of connection, {c["retried_udp_timeout"]} UDP timeouts; failed: '
      f'{c["refused"]} refused, {c["reset"]} reset, {c["timeout"]} timed out, {c["wrong"]} wrong replies, '
      f'{c["other_error"]} other errors')
for f in r["failures"]:
    print(f)
sys.exit(0 if c["ok"] == c["sent"] else 1)
EOF
    return "$rc"
}
# ids_per_host PREFIX: how many requests with ids starting with PREFIX each
# instance's results log (rotated files included) has answered OK ("N1 N2").
ids_per_host() {
    python3 - "$1" "$work/h1/results.log" "$work/h2/results.log" <<'EOF'
import glob, json, sys
out = []
for path in sys.argv[2:]:
    n = 0
    for line in (line for p in glob.glob(path + ".*") + [path] for line in open(p)):
        r = json.loads(line)
        n += bool(r.get("ok") and str(r.get("id", "")).startswith(sys.argv[1]))
    out.append(str(n))
print(" ".join(out))
EOF
}
# logs_flushed: the results logs hold every answer so far (taskd writes
# them at least once a second).
logs_flushed() { sleep 1.5; }
# metrics_sum ADDR SERIES: the sum of a series' values on taskd's /metrics.
metrics_sum() {
    curl -sf --max-time 2 "http://$1:7780/metrics" |
        awk -v s="$2" 'index($0, s) == 1 && substr($0, length(s) + 1, 1) ~ /[{ ]/ { t += $NF } END { print t + 0 }'
}

# ---------------------------------------------------------------------------
step "preflight"
missing=()
for tool in haproxy nginx prometheus promtool python3 curl cargo; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
stream_module=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f "$stream_module" ] || missing+=("$stream_module (libnginx-mod-stream)")
if [ "${#missing[@]}" -gt 0 ]; then
    fail "missing: ${missing[*]} (apt-get install haproxy nginx libnginx-mod-stream prometheus python3 curl)"
    exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/taskd-scaleout.XXXXXX")
if ! (cd "$repo" && timeout 900 cargo build --quiet --release) >"$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log" | indent
    fail "cargo build --release"
    exit 1
fi
bin="${CARGO_TARGET_DIR:-$repo/target}/release/taskd"
# Every address and port the test uses must be free: another run, or
# anything else listening there, would make the results meaningless.
busy=$(python3 - <<'EOF'
import socket
busy = []
for host, port, kinds in [("127.0.0.2", 7700, "tu"), ("127.0.0.2", 7780, "t"), ("127.0.0.3", 7700, "tu"),
                          ("127.0.0.3", 7780, "t"), ("127.0.0.4", 7700, "t"), ("127.0.0.4", 7780, "t"),
                          ("127.0.0.4", 8404, "t"), ("127.0.0.5", 7700, "tu"), ("127.0.0.9", 9090, "t")]:
    for k in kinds:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if k == "t" else socket.SOCK_DGRAM)
        if k == "t":
            # As the servers bind: past connections in TIME_WAIT are no obstacle.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            busy.append(f"{'tcp' if k == 't' else 'udp'} {host}:{port} ({e.strerror})")
        finally:
            s.close()
print(", ".join(busy))
EOF
)
if [ -n "$busy" ]; then
    fail "addresses in use: $busy"
    exit 1
fi
pass "tools: $(haproxy -v | head -n 1 | cut -d' ' -f1-3), nginx $(nginx -v 2>&1 | cut -d/ -f2), $(prometheus --version 2>&1 | head -n 1 | cut -d' ' -f1-3), $("$bin" --version)"

# ---------------------------------------------------------------------------
step "the examples, checked by their own tools"
mkdir -p "$work/prometheus" "$work/nginx" "$work/fleet"
check "promtool check rules packaging/examples/taskd-alerts.yml" promtool check rules "$examples/taskd-alerts.yml"
check "promtool test rules tests/scaleout/alerts.test.yml (every alert, with its real durations)" \
    promtool test rules "$here/alerts.test.yml"
check "promtool check config packaging/examples/prometheus.yml" \
    eval 'cp "$examples/prometheus.yml" "$examples/taskd-alerts.yml" "$work/fleet/" && promtool check config "$work/fleet/prometheus.yml"'

localize "$examples/haproxy.cfg" >"$work/haproxy.cfg"
check "haproxy -c: haproxy.cfg" haproxy -c -q -f "$work/haproxy.cfg"

localize "$examples/nginx-taskd-stream.conf" >"$work/nginx/taskd-stream.conf"
# The main file of this nginx: the Debian module, the foreground, its pid
# and error log in the folder; the example is included as docs/scaling.md
# says, at the top level.
cat >"$work/nginx/nginx.conf" <<EOF
load_module $stream_module;
daemon off;
worker_processes 1;
pid nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
include taskd-stream.conf;
EOF
check "nginx -t: nginx-taskd-stream.conf" nginx -q -t -p "$work/nginx" -c "$work/nginx/nginx.conf"

localize "$examples/prometheus.yml" |
    sed -e 's/^\( *\)scrape_interval: 15s$/\1scrape_interval: 1s/' \
        -e 's/^\( *\)evaluation_interval: 15s$/\1evaluation_interval: 1s/' >"$work/prometheus/prometheus.yml"
sed -e 's/^\( *\)for: .*/\1for: 3s/' "$examples/taskd-alerts.yml" >"$work/prometheus/taskd-alerts.yml"
check "promtool check config: the test's copy (1 s intervals, for: 3s)" \
    promtool check config "$work/prometheus/prometheus.yml"

check "grafana-taskd.json: valid JSON, unique panel ids, a query in every panel" python3 - "$examples/grafana-taskd.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
def walk(ps):
    for p in ps:
        yield p
        yield from walk(p.get("panels", []))
panels = list(walk(d["panels"]))
ids = [p["id"] for p in panels]
assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
for p in panels:
    if p["type"] != "row":
        assert p.get("targets") and all(t.get("expr") for t in p["targets"]), f'panel {p["title"]}: no query'
print(f"{len(panels)} panels")
EOF

# One servers.csv for both instances (each host folder links to it), one
# taskd.toml each from the example.
localize "$examples/servers.csv" >"$work/fleet/servers.csv"
for i in 1 2; do
    h=$work/h$i addr=127.0.0.$((i + 1))
    mkdir -p "$h/conf.d"
    ln -s ../fleet/servers.csv "$h/servers.csv"
    localize "$examples/taskd-fleet.toml" | sed "s/\"0\.0\.0\.0:7780\"/\"$addr:7780\"/" >"$h/taskd.toml"
    printf '[server]\nself_ip = ["%s"]\nworkers = 1\n' "$addr" >"$h/conf.d/60-loopback.toml"
    check "taskd --check-config: instance $i ($addr) from taskd-fleet.toml and the shared servers.csv" \
        "$bin" --check-config --quiet --config "$h/taskd.toml"
done
[ "$failures" = 0 ] || exit 1

# ---------------------------------------------------------------------------
step "start: two taskd, HAProxy, nginx, Prometheus"
start_taskd() {
    local i=$1
    spawn "taskd$i" "$bin" --config "$work/h$i/taskd.toml"
}
start_taskd 1
start_taskd 2
for i in 1 2; do
    addr=127.0.0.$((i + 1))
    if wait_for 10 eval "[ \"\$(healthz $addr)\" = 200 ]"; then
        pass "taskd $i answers /healthz on $addr:7780 (listening: $(grep -o 'listening on [a-z]* [0-9.:]*' "$work/taskd$i.log" | cut -d' ' -f3- | paste -sd, -))"
    else
        fail "taskd $i does not answer /healthz on $addr:7780"
        exit 1
    fi
done
spawn haproxy haproxy -db -f "$work/haproxy.cfg"
spawn nginx nginx -p "$work/nginx" -c "$work/nginx/nginx.conf"
spawn prometheus prometheus --config.file="$work/prometheus/prometheus.yml" \
    --storage.tsdb.path="$work/prometheus/data" --web.listen-address=127.0.0.9:9090 --log.level=warn
check "HAProxy: taskd1 and taskd2 UP in both backends (health checks on /healthz)" \
    wait_for 10 eval 'haproxy_is taskd1 UP && haproxy_is taskd2 UP'
check "nginx passes a TCP ping on $NGINX:7700 to taskd" wait_for 10 ping_tcp "$NGINX"
check "Prometheus: both taskd targets and HAProxy up" \
    wait_for 20 eval 'prom targets-up taskd 2 && prom targets-up haproxy 1'
[ "$failures" = 0 ] || exit 1

# ---------------------------------------------------------------------------
step "requests through the balancers reach both hosts, each reply its own client"
# Eight clients per path at once, 25 requests each; every client checks
# that each reply is the one to its own request (the sum includes its own
# number). All as user fleet.
N_CLIENTS=8 N_REQ=25
stream ha-tcp --tcp "$HAPROXY:7700" --clients "$N_CLIENTS" --count "$N_REQ" --interval 0 --user fleet --max-seconds 30
stream ha-http --http "$HAPROXY:7780" --clients "$N_CLIENTS" --count "$N_REQ" --interval 0 --user fleet --max-seconds 30
stream ng-tcp --tcp "$NGINX:7700" --clients "$N_CLIENTS" --count "$N_REQ" --interval 0 --user fleet --max-seconds 30
stream ng-udp --udp "$NGINX:7700" --clients "$N_CLIENTS" --count "$N_REQ" --interval 0 --user fleet --max-seconds 30
declare -A label=([ha-tcp]="HAProxy TCP" [ha-http]="HAProxy HTTP" [ng-tcp]="nginx TCP" [ng-udp]="nginx UDP")
for s in ha-tcp ha-http ng-tcp ng-udp; do
    check "${label[$s]}: $((N_CLIENTS * N_REQ)) requests from $N_CLIENTS clients, each answered with its own result" finished "$s"
    head -n 1 "$work/check.out" | indent
done
logs_flushed
for s in ha-tcp ha-http ng-tcp ng-udp; do
    read -r a b < <(ids_per_host "$s-")
    check "${label[$s]}: both hosts served ($H1: $a, $H2: $b; together $((N_CLIENTS * N_REQ)))" \
        test "$a" -gt 0 -a "$b" -gt 0 -a "$((a + b))" = "$((N_CLIENTS * N_REQ))"
done

# ---------------------------------------------------------------------------
step "the fleet's totals from Prometheus"
# Everything sent so far, no retry among it (checked above: ok == sent and
# the results logs hold each exactly once), and the one ping through nginx.
sent=$((4 * N_CLIENTS * N_REQ + 1))
fleet=$((4 * N_CLIENTS * N_REQ))
own=$(($(metrics_sum "$H1" taskd_requests_total) + $(metrics_sum "$H2" taskd_requests_total)))
check "the hosts' own /metrics: taskd_requests_total sums to $own, the $sent requests sent (streams and one ping)" test "$own" = "$sent"
# is EXPR VALUE: Prometheus gives EXPR that value.
is() {
    local got
    got=$(prom value "$1") || { echo "$got"; return 1; }
    [ "$got" = "$2" ] || { echo "$1 = $got, want $2"; return 1; }
}
check "Prometheus: sum(taskd_requests_total) = $sent, what was sent and the hosts' own sums" \
    wait_for 10 is 'sum(taskd_requests_total)' "$sent"
check "Prometheus: sum(taskd_user_requests_total{user=\"fleet\"}) = $fleet, what user fleet sent (per_user metrics over the hosts)" \
    wait_for 10 is 'sum(taskd_user_requests_total{user="fleet"})' "$fleet"
per_host=$(prom value "sum(taskd_user_requests_total{user=\"fleet\", instance=\"$H1:7780\"})" || true)
check "Prometheus: the per-user count of one host ($per_host) is a part of the fleet's" \
    test "${per_host:-0}" -gt 0 -a "${per_host:-0}" -lt "$fleet"

# ---------------------------------------------------------------------------
step "every dashboard query returns data"
# A light stream through HAProxy and straight to each host, some errors and
# pi tasks on each host, so that every rate, ratio and quantile has
# something to show; then each query of every panel (and of the template
# variables) against Prometheus, with $__rate_interval = 10s (ten scrapes).
stream dash-ha --tcp "$HAPROXY:7700" --clients 2 --interval 0.02 --stop-file "$work/dash-stop" --max-seconds 60
stream dash-h1 --tcp "$H1:7700" --interval 0.02 --stop-file "$work/dash-stop" --max-seconds 60
stream dash-h2 --tcp "$H2:7700" --interval 0.02 --stop-file "$work/dash-stop" --max-seconds 60
for _ in 1 2 3; do
    for h in "$H1" "$H2"; do
        printf 'nosuchop\nmax\nsum 1 x\npi 100000 1\n' >"/dev/udp/$h/7700"
        curl -s -o /dev/null --max-time 2 "http://$h:7780/v1/max"
    done
    sleep 1
done
wait_for 20 eval '[ "$(prom value "count(count by (instance) (taskd_errors_total))")" = 2 ]' >/dev/null || true
sleep 4
check "prom.py dashboard grafana-taskd.json: every panel's query, for the fleet and for each host" \
    prom dashboard "$examples/grafana-taskd.json" 10s "$H1:7780" "$H2:7780"
tail -n 1 "$work/check.out" | indent
touch "$work/dash-stop"
for s in dash-ha dash-h1 dash-h2; do finished "$s" >/dev/null || fail "the dashboard's background stream $s saw a failure"; done

# ---------------------------------------------------------------------------
step "SIGTERM to one host under a stream of requests (the HAProxy way)"
# Streams through HAProxy (TCP and HTTP) and nginx (TCP and UDP), 100
# requests/s each, retrying only what is always safe to retry
# (docs/scaling.md): ERR shutting-down, an end of connection without the
# reply, a UDP datagram without an answer. Then SIGTERM to taskd 1: its
# /healthz says 503 at once, HAProxy takes it out within the drain delay,
# it drains and exits 0; the streams go on through taskd 2.
rm -f "$work/drain-stop"
stream drain-ha-tcp --tcp "$HAPROXY:7700" --clients 4 --interval 0.01 --stop-file "$work/drain-stop" --max-seconds 60
stream drain-ha-http --http "$HAPROXY:7780" --clients 2 --interval 0.01 --stop-file "$work/drain-stop" --max-seconds 60
stream drain-ng-tcp --tcp "$NGINX:7700" --clients 2 --interval 0.01 --stop-file "$work/drain-stop" --max-seconds 60
stream drain-ng-udp --udp "$NGINX:7700" --clients 2 --interval 0.01 --stop-file "$work/drain-stop" --max-seconds 60
sleep 2
t_term=$SECONDS
kill -TERM "${pid[taskd1]}"
check "taskd 1's /healthz answers 503 at once" wait_for 2 eval "[ \"\$(healthz $H1)\" = 503 ]"
if wait_for 10 haproxy_is taskd1 DOWN >"$work/check.out" 2>&1; then
    t_down=$((SECONDS - t_term))
    if alive taskd1 && [ "$t_down" -lt "$DRAIN_DELAY" ]; then
        pass "HAProxy took taskd1 out of both backends after ${t_down} s, while it still served (drain_delay_s = $DRAIN_DELAY)"
    else
        fail "HAProxy took taskd1 out only after ${t_down} s, past the drain delay of $DRAIN_DELAY s"
    fi
else
    fail "HAProxy did not take taskd1 out"
    indent <"$work/check.out"
fi
stop taskd1 TERM 20
t_exit=$((SECONDS - t_term))
check "taskd 1 drained and exited 0 within 20 s (after $t_exit s)" test "$stop_rc" = 0
exit_time=$(date +%s.%N)
sleep 2
touch "$work/drain-stop"
for s in drain-ha-tcp drain-ha-http drain-ng-tcp drain-ng-udp; do
    check "stream $s: every request answered, nothing refused, reset or lost" finished "$s"
    head -n 1 "$work/check.out" | indent
done
logs_flushed
check "every request of the streams answered OK exactly once over both hosts' results logs, and the streams went on through taskd 2 after taskd 1 exited" \
    python3 - "$work" "$exit_time" <<'EOF'
import collections, datetime, glob, json, sys
work, exit_time = sys.argv[1], float(sys.argv[2])
sent = set()
for s in ("drain-ha-tcp", "drain-ha-http", "drain-ng-tcp", "drain-ng-udp"):
    for line in open(f"{work}/{s}.ids"):
        sent.add(line.split()[0])
ok = collections.Counter()
after = collections.Counter()
for h in ("h1", "h2"):
    # Rotated files first (results.log.5 ... .1), then the current one.
    paths = sorted(glob.glob(f"{work}/{h}/results.log.*"), reverse=True) + [f"{work}/{h}/results.log"]
    for line in (line for p in paths for line in open(p)):
        r = json.loads(line)
        rid = str(r.get("id"))
        if rid.startswith("drain-") and r.get("ok"):
            ok[rid] += 1
            t = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
            if t > exit_time:
                after[(h, rid.split("-")[1] + "-" + rid.split("-")[2])] += 1
missing = sent - set(ok)
twice = [k for k, n in ok.items() if n > 1]
print(f"{len(sent)} requests answered to the clients, {sum(ok.values())} OK lines in the results logs")
print("answered after taskd 1 exited:", dict(sorted(after.items())) or "none")
assert not missing, f"not in any results log as OK: {sorted(missing)[:10]}"
assert not twice, f"answered OK twice: {twice[:10]}"
assert not any(h == "h1" for h, _ in after), "taskd 1 answered after its exit?"
for s in ("ha-tcp", "ha-http", "ng-tcp", "ng-udp"):
    assert after[("h2", s)] > 0, f"drain-{s}: nothing answered by taskd 2 after taskd 1 exited"
EOF
indent <"$work/check.out"

# ---------------------------------------------------------------------------
step "alerts for the stopped host"
check "Prometheus: TaskdDown firing for $H1:7780 (within 20 s)" \
    wait_for 20 prom alert TaskdDown firing "instance=$H1:7780"
check "Prometheus: no TaskdDown for $H2:7780" prom alert TaskdDown none "instance=$H2:7780"
check "HAProxy: taskd1 still DOWN, taskd2 UP" eval 'haproxy_is taskd1 DOWN && haproxy_is taskd2 UP'

# ---------------------------------------------------------------------------
step "the host returns"
start_taskd 1
check "taskd 1 started again: /healthz 200" wait_for 10 eval "[ \"\$(healthz $H1)\" = 200 ]"
check "HAProxy: taskd1 UP again in both backends (rise 2)" wait_for 10 haproxy_is taskd1 UP
stream back --tcp "$HAPROXY:7700" --clients "$N_CLIENTS" --count 10 --interval 0 --max-seconds 30
check "HAProxy TCP: $((N_CLIENTS * 10)) requests answered" finished back
logs_flushed
read -r a b < <(ids_per_host back-)
check "both hosts serve again ($H1: $a, $H2: $b)" test "$a" -gt 0 -a "$b" -gt 0
check "Prometheus: TaskdDown for $H1:7780 resolved (within 20 s)" \
    wait_for 20 prom alert TaskdDown none "instance=$H1:7780"
