#!/usr/bin/env bash
# End-to-end test of the taskd Debian package under a real systemd (taskd(8),
# SIGNALS and SYSTEMD): it builds the .deb with `cargo deb`, boots a minimal
# Debian 12 tree with systemd-nspawn, installs the package there and checks
# it as an operator would (systemctl, nc, journalctl, man, dpkg -P). Prints
# PASS/FAIL per check and exits non-zero if any failed.
#
#   sudo tests/systemd/run.sh        # as root, on a throwaway Debian 12 box
#
# Host needs: root, Debian's package mirror (debootstrap, systemd-container,
# python3 and cargo-deb are installed when missing). Nothing runs on the
# host's own root file system: the container is a copy of a cached tree,
# booted inside a private mount namespace, with its own network namespace
# (loopback only); the clients of the restart check run on the host in that
# network namespace alone.
#
# Environment:
#   TASKD_SYSTEMD_CACHE    the script's own folder: the cached tree and the
#                          per-run copies (default /var/cache/taskd-ci)
#   TASKD_SYSTEMD_MIRROR   Debian mirror for debootstrap
#                          (default http://deb.debian.org/debian)
#   TASKD_SYSTEMD_TIMEOUT  upper bound of the whole run in seconds (600)
#   TASKD_SYSTEMD_KEEP=1   keep the run's tree, console log and journal
#                          (for debugging; the next run removes them)

# Single quotes around `eval` and `sh -c` arguments are deliberate: they are
# expanded when the check runs, or in the container.
# shellcheck disable=SC2016

set -euo pipefail

T_ALL=${TASKD_SYSTEMD_TIMEOUT:-600}
if [ -z "${TASKD_SYSTEMD_BOUNDED:-}" ]; then
    # The whole run is bounded: on expiry timeout sends SIGTERM to the
    # script's process group, the EXIT trap powers the container off and
    # removes its tree; SIGKILL follows 60 s later if that hangs.
    # In the background so that this shell can pass on INT/TERM (timeout runs
    # in a process group of its own, out of reach of a terminal's Ctrl-C).
    export TASKD_SYSTEMD_BOUNDED=1
    timeout -k 60 "$T_ALL" bash "$0" "$@" &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null' INT TERM HUP
    while :; do
        rc=0
        wait "$child" || rc=$?
        kill -0 "$child" 2>/dev/null || break
    done
    [ "$rc" != 124 ] || echo "FAIL tests/systemd/run.sh ran out of time (${T_ALL}s)"
    exit "$rc"
fi

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TASKD_SYSTEMD_CACHE:-/var/cache/taskd-ci}
mirror=${TASKD_SYSTEMD_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# systemd, systemd-sysv, dbus: a booting system. netcat-openbsd: TCP and UDP
# client. man-db: `man taskd`. ssl-cert: a Depends of taskd (the container
# has no network, so dpkg -i cannot fetch it).
include=systemd,systemd-sysv,dbus,netcat-openbsd,man-db,ssl-cert
# Bump when the preparation of the tree below changes.
tree_version=1
tree_key=$(printf '%s %s %s %s' "$suite" "$include" "$tree_version" "$(uname -m)" | sha256sum | cut -c1-12)
tree=$cache/rootfs-$suite-$tree_key

export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
# Upper bounds in seconds of single steps: nothing waits forever.
T_APT=300 T_CARGO_INSTALL=900 T_BUILD=480 T_DEBOOTSTRAP=300 T_BOOT=60 T_CMD=60

start_s=$SECONDS
failures=0 passes=0
run_dir='' nspawn_pid='' ct_pid=''

step() { printf '\n=== %s (%ds)\n' "$*" "$((SECONDS - start_s))"; }
pass() { echo "PASS $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
indent() { sed 's/^/      /'; }
# check NAME CMD...: PASS if CMD succeeds, else FAIL with its output.
# CMD may be `eval '...'`, expanded when it runs. It runs as a background
# job with `wait`, which a signal interrupts: the TERM trap then runs at once
# instead of after the command (a $(...) would hold it until its end).
check() {
    local _name=$1 _rc=0
    shift
    "$@" <&0 >"$run_dir/check.out" 2>&1 & # <&0: keep a here-string as stdin
    wait "$!" || _rc=$?
    if [ "$_rc" = 0 ]; then
        pass "$_name"
    else
        fail "$_name"
        tail -n 30 "$run_dir/check.out" | indent
    fi
}

# ct CMD...: run CMD in the container (its mount, PID, UTS, IPC and network
# namespaces) with a clean environment, bounded by T_CMD.
ct() {
    timeout "$T_CMD" nsenter -t "$ct_pid" -m -u -i -n -p -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 TERM=dumb "$@"
}
ctsh() { ct sh -c "$1"; }
# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds; on
# timeout, print what its last try printed.
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
# query PROTO PORT LINE: one request over the container's loopback.
query() {
    case $1 in
    tcp) ctsh "printf '%s\n' '$3' | nc -N -w 5 127.0.0.1 $2" ;;
    udp) ctsh "printf '%s\n' '$3' | nc -u -w 1 127.0.0.1 $2" ;;
    esac
}
# expect_reply PROTO PORT LINE WANT: the reply is exactly WANT.
expect_reply() {
    local got
    got=$(query "$1" "$2" "$3" 2>&1) || true
    [ "$got" = "$4" ] || { echo "sent '$3' over $1 to 127.0.0.1:$2, got '$got', want '$4'"; return 1; }
}
# prop UNIT PROPERTY: one property, as `systemctl show` gives it.
prop() { ct systemctl show -p "$2" --value "$1"; }
# is UNIT PROPERTY VALUE: the property has that value.
is() {
    local got
    got=$(prop "$1" "$2")
    [ "$got" = "$3" ] || { echo "$1: $2=$got, want $3"; return 1; }
}
# silent CMD...: CMD succeeds and prints nothing (else its output is shown).
silent() {
    local _out
    if _out=$("$@" 2>&1) && [ -z "$_out" ]; then return 0; fi
    printf '%s\n' "$_out"
    return 1
}
no_failed_units() { silent ct systemctl list-units --failed --no-legend --plain; }
# journal_has PATTERN [journalctl options]: a line of the taskd unit matches.
journal_has() {
    local pat=$1
    shift
    local _j
    # Read whole, then grep: `grep -q` in a pipe would stop early and, with
    # pipefail, turn journalctl's SIGPIPE into a failure.
    _j=$(ct journalctl --no-pager -u taskd "$@") || return 1
    grep -qE -- "$pat" <<<"$_j"
}
ct_absent() { ! ct test -e "$1" && ! ct test -L "$1"; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# kill_tree PID: SIGKILL to PID, its descendants and the process groups
# that those lead.
kill_tree() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$c"; done
    [ "$(ps -o pgid= -p "$1" 2>/dev/null | tr -d ' ')" != "$1" ] || kill -KILL -- "-$1" 2>/dev/null
    kill -KILL "$1" 2>/dev/null
}

cleanup() {
    local rc=$? j
    set +e
    trap - EXIT INT TERM
    # Our own background jobs (a check, the stop-test clients; not nspawn)
    # and what they started: ct's `timeout` leads a process group of its own
    # with nsenter and the command in the container, which may ignore
    # SIGTERM (dpkg does at times) and would hold up the poweroff.
    for j in $(jobs -p); do [ "$j" = "$nspawn_pid" ] || kill_tree "$j"; done
    if alive "$ct_pid"; then
        if [ "$failures" -gt 0 ] || [ "$rc" -ne 0 ]; then
            echo "--- the container's journal of taskd (last 40 lines)"
            T_CMD=5 ct journalctl --no-pager -u taskd.service -u taskd.socket 2>&1 | tail -n 40 | indent
        fi
        [ -z "${TASKD_SYSTEMD_KEEP:-}" ] || T_CMD=5 ct journalctl -b --no-pager >"$run_dir/journal.txt" 2>&1
    fi
    if alive "$nspawn_pid"; then
        # A clean poweroff first; nspawn exits when the container's PID 1 does.
        alive "$ct_pid" && T_CMD=5 ct systemctl poweroff --no-block >/dev/null 2>&1
        for _ in $(seq 100); do alive "$nspawn_pid" || break; sleep 0.2; done
        if alive "$nspawn_pid"; then
            # SIGTERM makes nspawn power the container off too, then kill it.
            kill -TERM "$nspawn_pid" 2>/dev/null
            for _ in $(seq 50); do alive "$nspawn_pid" || break; sleep 0.2; done
            kill -KILL "$nspawn_pid" 2>/dev/null
        fi
    fi
    # Killing the PID namespace's init kills everything in the container.
    if alive "$ct_pid"; then
        kill -KILL "$ct_pid" 2>/dev/null
        for _ in $(seq 50); do alive "$ct_pid" || break; sleep 0.2; done
    fi
    [ -z "$nspawn_pid" ] || wait "$nspawn_pid" 2>/dev/null
    # The mounts lived in the private mount namespace of unshare: they are
    # gone with its last process. Remove the run's tree, never crossing into
    # a mount that might still be there.
    if [ -n "$run_dir" ] && [ -d "$run_dir" ]; then
        if alive "$ct_pid" || alive "$nspawn_pid"; then
            echo "container still running (pid $ct_pid); left $run_dir" >&2
        elif [ -n "${TASKD_SYSTEMD_KEEP:-}" ]; then
            echo "kept $run_dir (TASKD_SYSTEMD_KEEP)"
        else
            rm -rf --one-file-system "$run_dir"
        fi
    fi
    [ "$rc" -eq 0 ] || [ "$failures" -gt 0 ] || fail "aborted (exit status $rc)"
    echo
    echo "tests/systemd/run.sh took $((SECONDS - start_s)) s"
    echo "systemd-e2e: $passes passed, $failures failed"
    [ "$failures" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
step "preflight"
if [ "$(id -u)" != 0 ]; then
    echo "tests/systemd/run.sh boots a container: run it as root" >&2
    exit 2
fi
need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# The clients of the restart check run on the host (tests/scaleout/stream.py).
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
    echo "apt-get install ${need[*]}"
    timeout "$T_APT" apt-get update -qq
    timeout "$T_APT" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo install cargo-deb --locked (a few minutes)"
    timeout "$T_CARGO_INSTALL" cargo install cargo-deb --locked --quiet
fi
mkdir -p "$cache"
# Leftovers of runs that were killed (SIGKILL skips the trap): their
# container is gone with its namespaces once its processes are.
for d in "$cache"/run.* "$cache"/build.*; do
    [ -d "$d" ] || continue
    owner=$(cat "$d/owner" 2>/dev/null || echo 0)
    if [ "$owner" != 0 ] && kill -0 "$owner" 2>/dev/null; then continue; fi
    # pids: systemd-nspawn (its command line names the tree) and the
    # container's PID 1 (its hostname is taskd-ci-OWNER).
    read -r p q <"$d/pids" 2>/dev/null || p='' q=''
    if [ -n "$p" ] && grep -qF "$d" "/proc/$p/cmdline" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
    if [ -n "$q" ] && [ "$(nsenter -t "$q" -u hostname 2>/dev/null)" = "taskd-ci-$owner" ]; then
        kill -KILL "$q" 2>/dev/null || true
    fi
    sleep 0.5
    echo "removing the leftover $d"
    rm -rf --one-file-system "$d"
done
pass "tools: $(debootstrap --version | head -n 1), $(systemd-nspawn --version | head -n 1), $(cargo deb --version)"
run_dir=$(mktemp -d "$cache/run.XXXXXX")
echo $$ >"$run_dir/owner"

# ---------------------------------------------------------------------------
step "cargo deb"
log=$run_dir/cargo-deb.log
if (cd "$repo" && timeout "$T_BUILD" cargo deb -p taskd) >"$log" 2>&1; then
    deb=$(tail -n 1 "$log")
else
    tail -n 40 "$log" | indent
    fail "cargo deb"
    exit 1
fi
[ -f "$deb" ] || { fail "cargo deb printed no .deb path ($deb)"; exit 1; }
# A copy of our own at once: target/ is shared with other builds.
cp "$deb" "$run_dir/taskd.deb"
pass "cargo deb: ${deb#"$repo"/} ($(dpkg-deb -f "$deb" Version), $(du -k "$deb" | cut -f1) KiB)"

# ---------------------------------------------------------------------------
step "container tree"
exec 9>"$cache/lock"
flock -w "$T_DEBOOTSTRAP" 9 || { fail "another run holds $cache/lock"; exit 1; }
# Trees of other versions of this script (another include list) are stale.
for t in "$cache"/rootfs-*; do
    [ ! -d "$t" ] || [ "$t" = "$tree" ] || { echo "removing the stale tree $t"; rm -rf --one-file-system "$t"; }
done
if [ -f "$tree/.taskd-ci-tree" ]; then
    pass "cached tree $tree"
else
    build=$cache/build.$$
    rm -rf --one-file-system "$build"
    mkdir -p "$build"
    echo $$ >"$build/owner"
    echo "debootstrap --variant=minbase $suite (about a minute)"
    # In a private mount namespace: the mounts debootstrap makes in the tree
    # (proc, sys) go away with it, even when it is killed.
    if ! timeout "$T_DEBOOTSTRAP" unshare --mount --propagation private -- \
        debootstrap --variant=minbase --include="$include" \
        "$suite" "$build/root" "$mirror" >"$build/debootstrap.log" 2>&1; then
        tail -n 30 "$build/debootstrap.log" | indent
        rm -rf --one-file-system "$build"
        fail "debootstrap $suite"
        exit 1
    fi
    r=$build/root
    # Smaller and quicker to copy; the container never uses apt.
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
    echo taskd-ci >"$r/etc/hostname"
    # An empty machine-id: systemd makes a new one at each boot.
    : >"$r/etc/machine-id"
    # Nothing logs in: no getty on the console pipe.
    ln -sf /dev/null "$r/etc/systemd/system/console-getty.service"
    ln -sf /dev/null "$r/etc/systemd/system/getty@.service"
    echo "$suite $include version $tree_version" >"$r/.taskd-ci-tree"
    rm -rf --one-file-system "$tree"
    mv "$r" "$tree"
    rm -rf "$build"
    pass "debootstrap $suite into $tree ($(du -sh "$tree" | cut -f1))"
fi

# A fresh copy per run: runs never see each other's changes.
cp -a "$tree" "$run_dir/root"
flock -u 9
exec 9>&-
cp "$run_dir/taskd.deb" "$run_dir/root/root/taskd.deb"
mkdir -p "$run_dir/root/root/stop"
cp "$here/stop-client.sh" "$run_dir/root/root/stop-client.sh"
chmod 755 "$run_dir/root/root/stop-client.sh"
pass "fresh copy of the tree in $run_dir"

# ---------------------------------------------------------------------------
step "boot"
name=taskd-ci-$$
# In a private mount namespace: a tmpfs over /run (this host's /run is a
# plain folder and nspawn needs /run/systemd/nspawn on a tmpfs), so nothing
# is created on the host; the container gets its own network namespace with
# only a loopback, and registers with no machined.
# shellcheck disable=SC2016
unshare --mount --propagation private -- sh -c '
    mount -n --make-rprivate / &&
    mount -n -t tmpfs -o mode=0755 tmpfs /run &&
    mkdir -p /run/systemd/nspawn &&
    exec systemd-nspawn --quiet -D "$1" --boot --register=no --keep-unit \
        --private-network --console=pipe -M "$2"' _ "$run_dir/root" "$name" \
    </dev/null >"$run_dir/console.log" 2>&1 &
nspawn_pid=$!
echo "$nspawn_pid" >"$run_dir/pids"
# The container's PID 1 is the child of systemd-nspawn whose PID in its own
# namespace is 1.
find_init() {
    local c
    # shellcheck disable=SC2013 # the file is one line of PIDs
    for c in $(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null); do
        if awk '/^NSpid:/ { exit !($NF == 1 && NF > 2) }' "/proc/$c/status" 2>/dev/null &&
            [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ]; then
            ct_pid=$c
            return 0
        fi
    done
    return 1
}
boot_deadline=$((SECONDS + T_BOOT))
while ! find_init; do
    if ! alive "$nspawn_pid" || [ "$SECONDS" -ge "$boot_deadline" ]; then
        fail "systemd-nspawn --boot: no systemd as the container's PID 1"
        tail -n 30 "$run_dir/console.log" | indent
        exit 1
    fi
    sleep 0.1
done
echo "$nspawn_pid $ct_pid" >"$run_dir/pids"
# systemctl needs PID 1's private socket, which comes a moment after exec.
wait_for "$T_BOOT" ct test -S /run/systemd/private || true
state=$(T_CMD=$T_BOOT ct systemctl is-system-running --wait 2>&1) || true
case $state in
running) pass "container booted: systemd $(ct systemctl --version | awk 'NR == 1 { print $2 }'), state running" ;;
degraded)
    pass "container booted: state degraded (units below failed, not taskd's)"
    ct systemctl --failed --no-legend | indent
    ;;
*)
    fail "container did not boot: state '$state'"
    tail -n 30 "$run_dir/console.log" | indent
    exit 1
    ;;
esac

# ---------------------------------------------------------------------------
step "dpkg -i"
check "dpkg -i taskd.deb" ct dpkg -i /root/taskd.deb
if [ "$(ct dpkg-query -W -f='${Status}' taskd 2>/dev/null)" != "install ok installed" ]; then
    fail "taskd is not installed; the remaining checks need it"
    exit 1
fi
check "taskd.service is enabled" is taskd.service UnitFileState enabled
if wait_for 15 is taskd.service ActiveState active; then
    pass "taskd.service is active after dpkg -i"
else
    fail "taskd.service is not active after dpkg -i ($(prop taskd.service ActiveState))"
    ct systemctl status --no-pager -l taskd.service | indent
    check "systemctl start taskd" ct systemctl start taskd
    check "taskd.service is active" is taskd.service ActiveState active
fi
check "taskd.socket is installed, not enabled (opt-in)" is taskd.socket UnitFileState disabled
check "taskd.socket is inactive, not failed" is taskd.socket ActiveState inactive
check "no failed units after dpkg -i" no_failed_units
check "systemd-analyze verify taskd.service taskd.socket (in the container)" \
    silent ct systemd-analyze verify taskd.service taskd.socket
# Lines like "taskd.service:42: Unknown key name ..." from PID 1.
check "systemd logged no warning about the unit files" \
    silent ctsh 'journalctl --no-pager -b _PID=1 | grep -E "taskd\.(service|socket):[0-9]+: " || true'

# ---------------------------------------------------------------------------
step "queries over the container's loopback"
check "systemctl start taskd (already running: a no-op)" ct systemctl start taskd
check "tcp 7700: max 1 5 3 -> OK 5" expect_reply tcp 7700 "max 1 5 3" "OK 5"
check "udp 7700: sum 1 2 3 -> OK 6" expect_reply udp 7700 "sum 1 2 3" "OK 6"
check "tcp 7700: @alice mean 2 4 -> OK 3" expect_reply tcp 7700 "@alice mean 2 4" "OK 3"
check "http 7780: GET /healthz -> {\"status\":\"ok\"}" \
    ctsh 'printf "GET /healthz HTTP/1.0\r\n\r\n" | nc -N -w 5 127.0.0.1 7780 | grep -F "{\"status\":\"ok\"}"'
show=$(ct systemctl show -p Type,NRestarts,StatusText,MainPID taskd)
printf '%s\n' "$show" | indent
check "systemctl show: Type=notify" grep -qx 'Type=notify' <<<"$show"
check "systemctl show: NRestarts=0" grep -qx 'NRestarts=0' <<<"$show"
check "systemctl show: a live STATUS (StatusText=...connections=...)" \
    grep -qE '^StatusText=.*connections=[0-9]+' <<<"$show"

# An upgrade (here: the same .deb again) restarts the service: a drain, then
# a new process.
pid_before=$(prop taskd MainPID)
check "dpkg -i again (upgrade path)" ct dpkg -i /root/taskd.deb
check "the upgrade restarted taskd (new MainPID), still enabled and active" \
    eval "! is taskd MainPID $pid_before && is taskd UnitFileState enabled && is taskd ActiveState active"
check "tcp 7700 answers after the upgrade" wait_for 10 expect_reply tcp 7700 "max 1 5 3" "OK 5"

# ---------------------------------------------------------------------------
step "systemctl reload"
pid0=$(prop taskd MainPID)
# conf.d is the administrator's: if we make it, we remove it again, so that
# dpkg -P can remove /etc/taskd.
made_confd=0
ct test -d /etc/taskd/conf.d || { ct mkdir /etc/taskd/conf.d && made_confd=1; }
ctsh 'printf "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:7701\"\n" >/etc/taskd/conf.d/50-extra.toml'
check "systemctl reload taskd (valid drop-in: a tcp listener on 127.0.0.1:7701)" ct systemctl reload taskd
# systemd 252 has no Type=notify-reload: reload returns once SIGHUP is sent.
check "the new listener 127.0.0.1:7701 answers (within 10 s)" \
    wait_for 10 expect_reply tcp 7701 "max 1 5 3" "OK 5"
check "STATUS says last_reload=ok" wait_for 5 ctsh 'systemctl show -p StatusText taskd | grep -q last_reload=ok'
check "same MainPID after the reload (no restart)" is taskd MainPID "$pid0"

ctsh 'printf "[server]\nno_such_key = 1\n" >/etc/taskd/conf.d/50-extra.toml'
if out=$(ct systemctl reload taskd 2>&1); then
    fail "systemctl reload taskd with an unknown key in a drop-in succeeded"
else
    pass "systemctl reload taskd with an unknown key in the drop-in fails: $(head -n 1 <<<"$out")"
fi
sleep 1
check "still active after the refused reload" is taskd ActiveState active
check "same MainPID after the refused reload" is taskd MainPID "$pid0"
check "tcp 7700 still answers" expect_reply tcp 7700 "max 1 5 3" "OK 5"
check "tcp 7701 (the old configuration) still answers" expect_reply tcp 7701 "min 4 2 9" "OK 2"
check "the journal names the bad key" journal_has no_such_key
check "journalctl -p err names it too (every line of the error at priority err)" journal_has no_such_key -p err

ct rm -f /etc/taskd/conf.d/50-extra.toml
[ "$made_confd" = 0 ] || ct rmdir /etc/taskd/conf.d
check "systemctl reload taskd without the drop-in" ct systemctl reload taskd
check "127.0.0.1:7701 closed after that reload (within 10 s)" \
    wait_for 10 eval '! ctsh "printf \"ping\n\" | nc -N -w 2 127.0.0.1 7701"'

# ---------------------------------------------------------------------------
step "/etc/default/taskd"
# TASKD_OPTS reaches the check before a start, the daemon and the check
# before a reload alike.
check "/etc/taskd/conf.d is shipped, with its README" ct test -f /etc/taskd/conf.d/README
ctsh 'printf "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:7702\"\n" >/etc/taskd/alt.toml'
ctsh 'cp /etc/default/taskd /root/default.orig && echo "TASKD_OPTS=\"-c /etc/taskd/alt.toml\"" >>/etc/default/taskd'
check "systemctl restart taskd with TASKD_OPTS=\"-c /etc/taskd/alt.toml\"" ct systemctl restart taskd
check "tcp 7702, the listener of alt.toml, answers" wait_for 10 expect_reply tcp 7702 "max 1 5 3" "OK 5"
check "tcp 7700, not in alt.toml, is closed" eval '! ctsh "printf \"ping\n\" | nc -N -w 2 127.0.0.1 7700"'
ctsh 'printf "[server]\nno_such_alt_key = 1\n" >>/etc/taskd/alt.toml'
if ct systemctl reload taskd >/dev/null 2>&1; then
    fail "systemctl reload accepted a broken alt.toml (ExecReload= checked another file)"
else
    pass "systemctl reload refuses a broken alt.toml: ExecReload= checks the file TASKD_OPTS names"
fi
check "journalctl -p err names the bad key of alt.toml" journal_has no_such_alt_key -p err
check "tcp 7702 still answers" expect_reply tcp 7702 "min 4 2 9" "OK 2"
ctsh 'cp /root/default.orig /etc/default/taskd && rm /etc/taskd/alt.toml /root/default.orig'
check "back to the packaged options: systemctl restart taskd" ct systemctl restart taskd
check "tcp 7700 answers" wait_for 10 expect_reply tcp 7700 "max 1 5 3" "OK 5"

# ---------------------------------------------------------------------------
step "watchdog"
ct mkdir -p /etc/systemd/system/taskd.service.d
ctsh 'printf "[Service]\nWatchdogSec=2s\n" >/etc/systemd/system/taskd.service.d/50-watchdog.conf'
check "daemon-reload, restart with a drop-in WatchdogSec=2s" \
    eval 'ct systemctl daemon-reload && ct systemctl restart taskd'
check "WatchdogUSec=2s" is taskd WatchdogUSec 2s
n0=$(prop taskd NRestarts)
pid1=$(prop taskd MainPID)
sleep 3 # longer than WatchdogSec: taskd's tick keeps it alive
check "alive after 3 s with WatchdogSec=2s (WATCHDOG=1 is sent)" \
    eval 'is taskd MainPID "$pid1" && is taskd NRestarts "$n0"'
ctsh "kill -STOP $pid1" # the shell's builtin: no procps in the container
t0=$SECONDS
restarted() {
    local n p
    n=$(prop taskd NRestarts) p=$(prop taskd MainPID)
    [ "$n" -gt "$n0" ] && [ "$p" != 0 ] && [ "$p" != "$pid1" ] && is taskd ActiveState active
}
if wait_for 15 restarted; then
    pass "kill -STOP $pid1: systemd restarted taskd in $((SECONDS - t0)) s (NRestarts $n0 -> $(prop taskd NRestarts), MainPID $(prop taskd MainPID))"
else
    fail "kill -STOP $pid1: no restart within 15 s"
    ct systemctl show -p NRestarts,MainPID,ActiveState,SubState,Result taskd | indent
fi
check "the journal shows the watchdog timeout" journal_has 'Watchdog timeout'
check "tcp 7700 answers after the restart" wait_for 10 expect_reply tcp 7700 "max 1 5 3" "OK 5"
ct rm -r /etc/systemd/system/taskd.service.d
check "back to the packaged unit: daemon-reload, restart, WatchdogUSec=30s" \
    eval 'ct systemctl daemon-reload && ct systemctl restart taskd && is taskd WatchdogUSec 30s'
check "tcp 7700 answers" wait_for 10 expect_reply tcp 7700 "max 1 5 3" "OK 5"

# ---------------------------------------------------------------------------
step "systemctl stop under a stream of requests"
# Three connections (stop-client.sh) each send 100 slow requests at once
# (3e9 samples of pi in all: about 4 s of work for two workers, so that it
# is still running when the stop comes even on a faster machine; and fewer
# than max_inflight_per_conn, so taskd reads them all), then, once
# `systemctl stop` is under way, 30 quick ones 20 ms apart. Each of the first 100 must be answered, OK or ERR
# shutting-down. Replies come in order, so whatever came back of the second
# batch must be the first K of it (none lost in between), each OK (read
# before SIGTERM) or ERR shutting-down.
N1=100 N2=30 clients="c1 c2 c3"
sd=$run_dir/root/root/stop
client_jobs=()
for c in $clients; do
    ct sh -c "exec /root/stop-client.sh $c $N1 $N2 /root/stop </dev/null >/dev/null 2>&1" &
    client_jobs+=($!)
done
all_exist() { local c; for c in $clients; do [ -e "$sd/$c.$1" ] || return 1; done; }
wait_for 10 all_exist phase1 || echo "      (the clients did not all send their first batch in 10 s)"
sleep 0.3 # nc forwards the batch, taskd reads it
t0=$(date +%s.%N)
ct systemctl stop taskd &
stop_job=$!
sleep 0.05
: >"$sd/stop-issued"
stop_rc=0
wait "$stop_job" || stop_rc=$?
stop_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
wait_for 20 all_exist rc || echo "      (a client did not finish in 20 s)"
# Not a bare `wait`: that would wait for systemd-nspawn too.
wait "${client_jobs[@]}" || true
check "systemctl stop taskd returned 0 (after ${stop_s}s)" test "$stop_rc" = 0
check "stopped cleanly: Result=success" is taskd Result success
check "stopped cleanly: ExecMainStatus=0" is taskd ExecMainStatus 0
for c in $clients; do touch "$sd/$c.sent2" "$sd/$c.out"; done
# One line per client, then "total A1 OK1 SD1 S2 A2 OK2 SD2 BAD": answered,
# OK and shutting-down of each batch, S2 written of the second, BAD problems.
report=$(
    for c in $clients; do
        awk -v c="$c" -v n1="$N1" '
            BEGIN { seen = sent2 = a1 = ok1 = sd1 = a2 = ok2 = sd2 = bad = 0 }
            FILENAME == ARGV[1] { sent2++; next }       # c.sent2: the second batch written
            {                                           # c.out: the replies, in order
                want = (seen < n1) ? "#a" seen : "#b" (seen - n1)
                if ($1 != want) { printf "%s: reply %d is %s, expected one for %s\n", c, seen + 1, $0, want; bad++ }
                ok = ($2 == "OK"); sdn = ($2 == "ERR" && $3 == "shutting-down")
                if (!ok && !sdn) { printf "%s: unexpected reply %s\n", c, $0; bad++ }
                if (seen < n1) { a1++; ok1 += ok; sd1 += sdn } else { a2++; ok2 += ok; sd2 += sdn }
                seen++
            }
            END {
                if (a1 < n1) { printf "%s: only %d of the %d requests sent before the stop were answered\n", c, a1, n1; bad++ }
                printf "%s: first batch %d/%d answered (%d OK, %d shutting-down); second batch %d answered of %d written (%d OK, %d shutting-down)\n",
                    c, a1, n1, ok1, sd1, a2, sent2, ok2, sd2
                printf "total %d %d %d %d %d %d %d %d\n", a1, ok1, sd1, sent2, a2, ok2, sd2, bad
            }' "$sd/$c.sent2" "$sd/$c.out"
    done
)
grep -v '^total ' <<<"$report" | indent
read -r A1 OK1 SD1 S2 A2 OK2 SD2 BAD < <(awk '$1 == "total" { for (i = 2; i <= 9; i++) t[i] += $i }
    END { for (i = 2; i <= 9; i++) printf "%d ", t[i]; print "" }' <<<"$report")
if [ "$BAD" = 0 ] && [ "$A1" = $((N1 * 3)) ]; then
    pass "stop under load: all $A1 requests sent before the stop answered in order ($OK1 OK, $SD1 ERR shutting-down); of $S2 sent during the drain $A2 answered ($OK2 OK, $SD2 ERR shutting-down), none lost in between"
else
    fail "stop under load: missing, misordered or unexpected replies (above)"
fi
check "requests read during the drain were answered ERR shutting-down" test "$SD2" -gt 0
check "the journal shows the drain" journal_has '^.*draining'

# ---------------------------------------------------------------------------
step "files"
for f in /var/log/taskd/results.log /var/lib/taskd/users.json; do
    st=$(ct stat -L -c '%u:%g %a' "$f" 2>&1) || st="missing: $st"
    check "$f exists, owned by the dynamic user, not root ($st)" \
        eval '[[ $st =~ ^[1-9][0-9]*:[0-9]+\ [0-7]+$ ]]'
done
for d in lib log; do
    check "/var/$d/taskd is a symlink to private/taskd (DynamicUser=)" \
        eval '[ "$(ct readlink /var/$d/taskd)" = private/taskd ] && ct test -d /var/$d/private/taskd'
done
check "results.log has a line for max 1 5 3" \
    ctsh 'grep "\"op\":\"max\"" /var/log/taskd/results.log | grep -q "\"ok\":true"'
check "users.json counts alice" ctsh 'grep -q "\"username\":\"alice\"" /var/lib/taskd/users.json'

# ---------------------------------------------------------------------------
step "socket activation"
check "systemctl disable --now taskd && systemctl enable --now taskd.socket" \
    eval 'ct systemctl disable --now taskd && ct systemctl enable --now taskd.socket'
check "taskd.socket active" is taskd.socket ActiveState active
check "taskd.service inactive" is taskd.service ActiveState inactive
check "tcp 7700: the first query starts taskd and is answered (OK 5)" expect_reply tcp 7700 "max 1 5 3" "OK 5"
check "systemctl is-active taskd becomes active (within 10 s)" \
    wait_for 10 eval '[ "$(ct systemctl is-active taskd)" = active ]'
check "udp 7700 through the passed socket: sum 1 2 3 -> OK 6" expect_reply udp 7700 "sum 1 2 3" "OK 6"
check "taskd serves the sockets from systemd" journal_has 'listening on tcp 127.0.0.1:7700 \(socket from systemd\)'
check "no failed units" no_failed_units

# ---------------------------------------------------------------------------
step "restarts and an upgrade under socket activation, under a stream of requests"
# Clients on this host but in the container's network namespace alone
# (tests/scaleout/stream.py, the host's python3): 4 TCP connections, 2 HTTP
# keep-alive connections and 2 UDP sockets to the packaged listeners, each
# sending its next request as soon as the last one is answered (a busy
# stream: with a slow one, a request arriving just as a draining taskd
# exits, which resets the connection, is rarely met). They retry only what
# is always safe to retry (docs/scaling.md): ERR shutting-down or HTTP 503,
# the end of a connection before the reply (they connect again), a UDP
# datagram unanswered for 0.5 s; a refused or reset connection, a timeout
# or a wrong reply is a failure. Meanwhile taskd is restarted twice and the
# package upgraded: systemd holds the sockets and the draining taskd leaves
# them to the next one, so nothing may fail.
sa=$run_dir/sa
sa_jobs=()
for kind in tcp:7700:4 http:7780:2 udp:7700:2; do
    IFS=: read -r proto port n <<<"$kind"
    timeout 150 nsenter -t "$ct_pid" -n -- python3 "$repo/tests/scaleout/stream.py" --"$proto" "127.0.0.1:$port" \
        --clients "$n" --interval 0 --name "$proto-" --stop-file "$sa.stop" --max-seconds 120 \
        --out "$sa-$proto" </dev/null >"$sa-$proto.log" 2>&1 &
    sa_jobs+=($!)
done
sleep 2
for i in 1 2; do
    p0=$(prop taskd MainPID)
    t0=$SECONDS
    check "systemctl restart taskd ($i of 2) under the stream" ct systemctl restart taskd
    check "... in $((SECONDS - t0)) s: a new MainPID, taskd.service and taskd.socket active" \
        eval "! is taskd MainPID $p0 && is taskd ActiveState active && is taskd.socket ActiveState active"
    sleep 2
done
p0=$(prop taskd MainPID)
check "dpkg -i taskd.deb (an upgrade: postinst restarts taskd) under the stream" ct dpkg -i /root/taskd.deb
check "... a new MainPID; taskd.socket still enabled and active, taskd.service still disabled" \
    eval "! is taskd MainPID $p0 && is taskd ActiveState active && is taskd.socket UnitFileState enabled &&
          is taskd.socket ActiveState active && is taskd.service UnitFileState disabled"
sleep 2
touch "$sa.stop"
wait "${sa_jobs[@]}" || true
for proto in tcp http udp; do
    rc=0
    summary=$(python3 - "$sa-$proto.json" 2>&1 <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["counts"]
print(f'{c["sent"]} sent, {c["ok"]} answered OK; retried: {c["retried_shutting_down"]} shutting-down, '
      f'{c["retried_eof"]} end of connection, {c["retried_udp_timeout"]} UDP timeouts; failed: '
      f'{c["refused"]} refused, {c["reset"]} reset, {c["timeout"]} timed out, {c["wrong"]} wrong')
for f in r["failures"]:
    print(f)
bad = c["refused"] + c["reset"] + c["timeout"] + c["wrong"] + c["other_error"]
sys.exit(0 if c["sent"] > 0 and c["ok"] == c["sent"] and not bad else 1)
EOF
    ) || rc=1
    if [ "$rc" = 0 ]; then
        pass "$proto stream through 2 restarts and an upgrade: every request answered, no connection refused or reset"
        head -n 1 <<<"$summary" | indent
    else
        fail "$proto stream through 2 restarts and an upgrade"
        { printf '%s\n' "$summary"; tail -n 5 "$sa-$proto.log"; } | indent
    fi
done
check "the journal shows the sockets left to the next start" journal_has 'left to the next start'
check "no failed units" no_failed_units

# ---------------------------------------------------------------------------
step "journal"
check "journalctl -u taskd shows 'listening on'" journal_has '^.*listening on' -o cat
check "journalctl -u taskd shows 'stopped'" journal_has '^stopped$' -o cat
check "journalctl -u taskd -p info has 'listening on', -p warning has not (priorities parsed)" \
    eval 'journal_has "listening on" -p info && ! journal_has "listening on" -p warning'
check "journalctl -o json: PRIORITY 6 on every 'listening on' line" \
    ctsh 'j=$(journalctl --no-pager -u taskd -o json | grep "\"MESSAGE\":\"listening on")
          [ -n "$j" ] && ! printf "%s\n" "$j" | grep -v "\"PRIORITY\":\"6\""'
check "no '<N>' priority prefix left in the messages" eval '! journal_has "^<[0-7]>" -o cat'

# ---------------------------------------------------------------------------
step "man"
check "man -w taskd" eval '[ "$(ct man -w taskd)" = /usr/share/man/man8/taskd.8.gz ]'
check "man -w taskd.toml" eval '[ "$(ct man -w taskd.toml)" = /usr/share/man/man5/taskd.toml.5.gz ]'
man_out=$(ct env MANPAGER=cat MANWIDTH=80 man taskd 2>&1 | head -n 12) || true
printf '%s\n' "$man_out" | indent
check "MANPAGER=cat man taskd renders the page" grep -q '^NAME' <<<"$man_out"

# ---------------------------------------------------------------------------
step "dpkg -P"
if out=$(ct dpkg -P taskd 2>&1); then
    pass "dpkg -P taskd"
else
    fail "dpkg -P taskd"
fi
printf '%s\n' "$out" | indent
check "dpkg -P printed no warning" eval '! grep -i warning <<<"$out"'
check "taskd.socket no longer active" eval '! is taskd.socket ActiveState active'
check "taskd.service no longer active" eval '! is taskd.service ActiveState active'
check "127.0.0.1:7700 closed" eval '! ctsh "printf \"ping\n\" | nc -N -w 2 127.0.0.1 7700"'
check "taskd.service gone (LoadState=not-found)" is taskd.service LoadState not-found
check "taskd.socket gone (LoadState=not-found)" is taskd.socket LoadState not-found
for p in /usr/bin/taskd /usr/lib/systemd/system/taskd.service /usr/lib/systemd/system/taskd.socket \
    /etc/taskd /var/lib/taskd /var/lib/private/taskd /var/log/taskd /var/log/private/taskd; do
    check "dpkg -P removed $p" ct_absent "$p"
done
check "no unit links left in /etc/systemd/system" silent ct find /etc/systemd/system -name 'taskd*'
check "no failed units" no_failed_units
