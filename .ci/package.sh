#!/usr/bin/env bash
# Packaging checks for taskd (README.md, "Install and run as a service";
# taskd(8), SYSTEMD and FILES): the man pages, the .deb built
# by cargo-deb, lintian, the systemd units, and an install / remove / purge
# cycle on this machine. Runs as root on a Debian 12 CI box (no systemd as
# PID 1 is needed: the maintainer scripts only start units where systemd
# runs). Prints PASS/FAIL per check and exits non-zero if any failed. It
# purges the package again on every path, even after a failure.
#
#   .ci/package.sh            # from anywhere; it works in the repository root
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8

# Upper bounds, in seconds, of the slow steps: the script never hangs.
T_APT=900 T_CARGO_INSTALL=1800 T_BUILD=1800 T_LINTIAN=600 T_STEP=120

# Exposure rating the unit must not exceed (systemd-analyze security).
MAX_EXPOSURE=2.0
# The listeners of the embedded default, as "proto address" lines.
EXPECTED_LISTENERS=$'http 127.0.0.1:7780\ntcp 127.0.0.1:7700\nudp 127.0.0.1:7700'

failures=0
installed_by_us=0
work=$(mktemp -d /tmp/taskd-package.XXXXXX)
# Directories this script may create (fake state for the remove/purge checks);
# removed at the end only if they did not exist before and are empty.
made_dirs=()

# installed, config-files, half-installed, ... or not-installed.
pkg_state() { dpkg-query -W -f='${db:Status-Status}' taskd 2>/dev/null || echo not-installed; }
export -f pkg_state
step() { printf '\n=== %s\n' "$*"; }
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failures=$((failures + 1)); }

# check NAME COMMAND...: runs the command, prints PASS or FAIL and, on
# failure, its output. Commands that could take long carry a timeout.
check() {
    local name=$1
    shift
    if "$@" >"$work/out" 2>&1; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/      /' "$work/out" | tail -n 40
    fi
}

cleanup() {
    local rc=$?
    set +e
    if [ "$installed_by_us" = 1 ] && [ "$(pkg_state)" != not-installed ]; then
        echo "cleanup: purging taskd"
        timeout "$T_STEP" dpkg --purge taskd >/dev/null 2>&1
    fi
    if [ "$installed_by_us" = 1 ]; then
        # Only paths that did not exist when the script started (checked in
        # preflight), so nothing here belongs to anyone else.
        rm -rf /var/lib/taskd /var/lib/private/taskd /var/log/taskd /var/log/private/taskd
    fi
    local d
    for d in "${made_dirs[@]}"; do
        rmdir "$d" 2>/dev/null
    done
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
step "preflight"
if [ "$(id -u)" != 0 ]; then
    echo "package.sh installs and purges a .deb: run it as root (a CI box)" >&2
    exit 2
fi
if [ "$(pkg_state)" != not-installed ]; then
    echo "taskd is already installed here; package.sh would purge it at the end." >&2
    echo "Remove it first (dpkg --purge taskd) on a machine where that is fine." >&2
    exit 2
fi
for p in /etc/taskd /etc/default/taskd /var/lib/taskd /var/lib/private/taskd /var/log/taskd /var/log/private/taskd; do
    if [ -e "$p" ] || [ -L "$p" ]; then
        echo "$p exists although taskd is not installed; package.sh would delete it." >&2
        echo "Move it away first." >&2
        exit 2
    fi
done
pass "no taskd installation or state on this machine to clobber"

# ---------------------------------------------------------------------------
step "install the tools"
need_apt=()
command -v lintian >/dev/null 2>&1 || need_apt+=(lintian)
command -v mandoc >/dev/null 2>&1 || need_apt+=(mandoc)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v man >/dev/null 2>&1 || need_apt+=(man-db)
# The package depends on ssl-cert (the group of SupplementaryGroups=ssl-cert);
# dpkg -i does not fetch dependencies.
[ "$(dpkg-query -W -f='${db:Status-Status}' ssl-cert 2>/dev/null)" = installed ] || need_apt+=(ssl-cert)
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "apt-get install ${need_apt[*]}"
    if ! { timeout "$T_APT" apt-get update -qq &&
        timeout "$T_APT" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null; }; then
        fail "apt-get install ${need_apt[*]}"
        exit 1
    fi
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo install cargo-deb --locked (a few minutes)"
    if ! timeout "$T_CARGO_INSTALL" cargo install cargo-deb --locked --quiet; then
        fail "cargo install cargo-deb --locked"
        exit 1
    fi
fi
pass "tools: $(lintian --version), mandoc, $(systemd-analyze --version | head -n 1), $(cargo deb --version)"

# ---------------------------------------------------------------------------
step "man pages"
for page in man/taskd.8 man/taskd.toml.5; do
    # mandoc -Tlint prints nothing for a clean page; any line is a finding.
    check "mandoc -Tlint $page is clean" \
        bash -c 'out=$(mandoc -Tlint "$1" 2>&1) || true; [ -z "$out" ] || { printf "%s\n" "$out"; exit 1; }' _ "$page"
done

# ---------------------------------------------------------------------------
step "packaged configuration"
# /etc/taskd/taskd.toml must be the embedded default (taskd.toml(5), FILES):
# packaging/taskd.toml is a byte-for-byte copy of EMBEDDED_DEFAULT.
awk '/pub const EMBEDDED_DEFAULT: &str = r#"/ { f = 1; sub(/.*r#"/, "") }
     f { if (/^"#;/) exit; print }' src/config/mod.rs >"$work/embedded.toml"
check "packaging/taskd.toml is the text of EMBEDDED_DEFAULT (src/config/mod.rs)" \
    bash -c '[ -s "$1" ] || { echo "EMBEDDED_DEFAULT not found in src/config/mod.rs"; exit 1; }
             diff -u "$2" "$1" || { echo "refresh it: the awk command in .ci/package.sh prints the constant"; exit 1; }' \
    _ "$work/embedded.toml" packaging/taskd.toml

check "packaging/servers.csv has no active row (every row commented)" \
    bash -c '! grep -v -E "^[[:space:]]*(#|$)" packaging/servers.csv'

# The changelog's newest entry must be this version (cargo-deb's revision 1).
cargo_version=$(awk -F'"' '/^\[/ { in_pkg = ($0 == "[package]") } in_pkg && /^version *=/ { print $2; exit }' Cargo.toml)
check "packaging/changelog's newest entry is taskd ($cargo_version-1)" \
    bash -c 'head -n 1 packaging/changelog | grep -qF "taskd ($1-1) " || { head -n 1 packaging/changelog; exit 1; }' _ "$cargo_version"

# ---------------------------------------------------------------------------
step "cargo deb"
if timeout "$T_BUILD" cargo deb -p taskd >"$work/deb.log" 2>&1; then
    deb=$(tail -n 1 "$work/deb.log")
    pass "cargo deb: $deb"
else
    fail "cargo deb"
    tail -n 40 "$work/deb.log" | sed 's/^/      /'
    exit 1
fi
[ -f "$deb" ] || { fail "cargo deb printed no .deb path ($deb)"; exit 1; }
# cargo-deb built it here (target/debian/../release), wherever target/ is.
taskd_bin=$(realpath "$(dirname "$deb")/../release/taskd")

# The effective configuration of the packaged file equals the embedded
# default's (paths aside: those resolve against different folders). Run from
# an empty folder so nothing there is picked up. Before dpkg -i: afterwards
# /etc/taskd/taskd.toml exists and replaces the embedded default.
mkdir "$work/empty"
(cd "$work/empty" && timeout "$T_STEP" "$taskd_bin" --check-config) >"$work/embedded.cfg" 2>&1 || true
(cd "$work/empty" && timeout "$T_STEP" "$taskd_bin" --check-config --config "$OLDPWD/packaging/taskd.toml") \
    >"$work/packaged.cfg" 2>&1 || true
check "taskd --check-config runs on the embedded default here" \
    grep -qx '# Loaded from: the embedded default.' "$work/embedded.cfg"
check "effective configuration of packaging/taskd.toml equals the embedded default's" \
    diff <(grep -v -E '^(#|state_dir = |path = )' "$work/packaged.cfg") \
    <(grep -v -E '^(#|state_dir = |path = )' "$work/embedded.cfg")

# The man pages keep up with the code: every configuration key of the raw
# structs, every operation and its limits (from --check-config), and every
# error code has its entry. A "\-" in roff is a "-" in the code.
# (Files, not pipes into grep -q: with pipefail an early exit of grep would
# read as a failure.)
sed 's/\\-/-/g' man/taskd.8 >"$work/taskd.8.txt"
sed 's/\\-/-/g' man/taskd.toml.5 >"$work/taskd.toml.5.txt"
awk '/^\.SH / { on = /^\.SH OPERATIONS/ } on' "$work/taskd.8.txt" >"$work/operations.txt"
awk '/^\.SH / { on = /^\.SH ERRORS/ } on' "$work/taskd.8.txt" >"$work/errors.txt"
awk '/^\[ops\./ { t = substr($0, 6, length($0) - 6) } /^\[/ && !/^\[ops\./ { t = "" }
     t != "" && /^[a-z_]+ = / && $1 != "enabled" { print "ops." t "." $1 }' "$work/embedded.cfg" >"$work/limits.txt"
missing=()
for k in $(grep -oP 'pub \K\w+(?=: Opt<)' src/config/raw.rs); do
    grep -qE "^\.BR? $k( |\$)" "$work/taskd.toml.5.txt" || missing+=("key $k")
done
for op in $(sed -n 's/^\[ops\.\([a-z0-9_-]*\)\]$/\1/p' "$work/embedded.cfg"); do
    grep -qE "(^\.BI? $op( |\$)|[\\]fP$op\")" "$work/operations.txt" || missing+=("operation $op in taskd(8)")
    grep -qw "$op" "$work/taskd.toml.5.txt" || missing+=("operation $op in taskd.toml(5)")
done
for limit in $(cat "$work/limits.txt"); do
    grep -qE "^\.BR $limit " "$work/taskd.toml.5.txt" || missing+=("limit $limit")
done
for code in $(grep -oP 'Code::\w+ => "\K[a-z-]+' src/protocol/mod.rs); do
    grep -qx "\.B $code" "$work/errors.txt" || missing+=("error code $code in ERRORS")
done
check "man pages document every key, operation, limit and error code of the code" \
    bash -c '[ "$#" -eq 0 ] || { printf "undocumented: %s\n" "$@"; exit 1; }' _ "${missing[@]}"

# ---------------------------------------------------------------------------
step "contents of $(basename "$deb")"
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|' >"$work/contents"
for f in /usr/bin/taskd /etc/taskd/taskd.toml /etc/taskd/servers.csv \
    /etc/taskd/conf.d/README /etc/default/taskd \
    /usr/lib/systemd/system/taskd.service /usr/lib/systemd/system/taskd.socket \
    /usr/share/man/man8/taskd.8.gz /usr/share/man/man5/taskd.toml.5.gz \
    /usr/share/bash-completion/completions/taskd /usr/share/zsh/vendor-completions/_taskd \
    /usr/share/fish/vendor_completions.d/taskd.fish \
    /usr/share/doc/taskd/copyright /usr/share/doc/taskd/changelog.Debian.gz \
    /usr/share/lintian/overrides/taskd; do
    check "ships $f" grep -qx "$f" "$work/contents"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles >"$work/conffiles" 2>/dev/null || true
check "conffiles: everything under /etc" \
    diff <(sort "$work/conffiles") \
    <(printf '%s\n' /etc/default/taskd /etc/taskd/conf.d/README /etc/taskd/servers.csv /etc/taskd/taskd.toml)
check "Depends: names ssl-cert" bash -c 'dpkg-deb -f "$1" Depends | grep -qw ssl-cert' _ "$deb"
check "packaging/default/taskd is shell syntax and sets TASKD_OPTS empty" \
    bash -c 'sh -n packaging/default/taskd && [ -z "$(set -a; . ./packaging/default/taskd; printf %s "${TASKD_OPTS-unset}")" ]'
check "the bash completion loads and completes taskd's options" \
    bash -c '. packaging/completions/taskd.bash && complete -p taskd >/dev/null &&
             COMP_WORDS=(taskd --che) COMP_CWORD=1 && _taskd taskd --che taskd && [ "${COMPREPLY[*]}" = --check-config ]'

# ---------------------------------------------------------------------------
step "lintian"
# Errors and warnings fail; informational tags are shown. lintian warns that
# it runs as root; on a CI box that is expected.
if timeout "$T_LINTIAN" lintian --fail-on error,warning --display-info --pedantic "$deb" >"$work/lintian" 2>"$work/lintian.err"; then
    pass "lintian: no errors, no warnings"
else
    fail "lintian --fail-on error,warning"
fi
grep -v 'running with root privileges' "$work/lintian.err" | sed 's/^/      /' || true
# The full picture, overridden tags (packaging/lintian-overrides, each with
# its reason) included; --show-overrides changes lintian's exit status, so
# this run only reports.
timeout "$T_LINTIAN" lintian --display-info --pedantic --show-overrides "$deb" 2>/dev/null | sed 's/^/      /' || true

# ---------------------------------------------------------------------------
step "systemd units"
security_out=$(timeout "$T_STEP" systemd-analyze security --offline=true packaging/taskd.service 2>&1 || true)
exposure=$(printf '%s\n' "$security_out" | sed -n 's/.*Overall exposure level for taskd\.service: \([0-9.]*\).*/\1/p' | tail -n 1)
if [ -z "$exposure" ]; then
    fail "systemd-analyze security --offline=true: no rating found"
    printf '%s\n' "$security_out" | tail -n 20 | sed 's/^/      /'
elif awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
    pass "systemd-analyze security --offline=true: exposure $exposure <= $MAX_EXPOSURE"
else
    fail "systemd-analyze security --offline=true: exposure $exposure > $MAX_EXPOSURE"
    printf '%s\n' "$security_out" | grep '✗' | sed 's/^/      /'
fi
# What the unit must never do (taskd(8), SYSTEMD): limit which clients reach
# taskd; access control is the listeners' allow lists.
check "taskd.service has no IPAddressDeny=/IPAddressAllow=/PrivateNetwork=" \
    bash -c '! grep -n -E "^[[:space:]]*(IPAddressDeny|IPAddressAllow|PrivateNetwork|RestrictNetworkInterfaces|SocketBindDeny|SocketBindAllow)=" packaging/taskd.service'
check "taskd.service: Type=notify, check before start and reload, watchdog, restarts" \
    bash -c 'u=packaging/taskd.service
             for l in "Type=notify" "EnvironmentFile=-/etc/default/taskd" \
                      "ExecStartPre=/usr/bin/taskd \$TASKD_OPTS --check-config --quiet" "ExecStart=/usr/bin/taskd \$TASKD_OPTS" \
                      "ExecReload=/usr/bin/taskd \$TASKD_OPTS --check-config --quiet" "WatchdogSec=30" "Restart=on-failure" \
                      "RestartPreventExitStatus=1" "StartLimitIntervalSec=60" "StartLimitBurst=5" \
                      "TimeoutStopSec=45" "LimitNOFILE=65536" "DynamicUser=yes" \
                      "StateDirectory=taskd" "LogsDirectory=taskd"; do
                 grep -qxF "$l" "$u" || { echo "missing: $l"; exit 1; }
             done
             grep -n "^ExecReload=" "$u" | grep -q "/bin/kill" && { echo "ExecReload uses /bin/kill (procps)"; exit 1; }
             exit 0'

# ---------------------------------------------------------------------------
step "dpkg -i"
installed_by_us=1
check "dpkg -i $(basename "$deb") (no systemd as PID 1 here)" timeout "$T_STEP" dpkg -i "$deb"
if [ "$(pkg_state)" != installed ]; then
    fail "taskd is not installed; the remaining checks need it"
    exit 1
fi
check "taskd.service enabled on installation" test -L /etc/systemd/system/multi-user.target.wants/taskd.service
check "taskd.socket not enabled (socket activation is opt-in)" \
    bash -c '! ls /etc/systemd/system/*.wants/taskd.socket 2>/dev/null | grep -q .'

# systemd-analyze verify loads the installed units with /usr/bin/taskd in
# place and checks that the Documentation= man pages exist; any message is
# a finding.
check "systemd-analyze verify taskd.service taskd.socket" \
    bash -c 'out=$(timeout '"$T_STEP"' systemd-analyze verify /usr/lib/systemd/system/taskd.service /usr/lib/systemd/system/taskd.socket 2>&1) && [ -z "$out" ] || { printf "%s\n" "$out"; exit 1; }'

check "taskd --check-config --config /etc/taskd/taskd.toml" \
    timeout "$T_STEP" /usr/bin/taskd --check-config --quiet --config /etc/taskd/taskd.toml
listeners=$(cd "$work/empty" && timeout "$T_STEP" /usr/bin/taskd --check-config --config /etc/taskd/taskd.toml |
    awk -F'"' '/^proto = / { p = $2 } /^address = / { print p, $2 }' | sort) || true
check "installed taskd.toml listens on tcp+udp 127.0.0.1:7700 and http 127.0.0.1:7780" \
    diff <(printf '%s\n' "$listeners") <(printf '%s\n' "$EXPECTED_LISTENERS")
check "taskd without --config reads /etc/taskd/taskd.toml" \
    bash -c "cd '$work/empty' && timeout $T_STEP /usr/bin/taskd --check-config | grep -qx '#   /etc/taskd/taskd.toml'"
check "/etc/taskd/conf.d exists after installation, with its README" test -f /etc/taskd/conf.d/README
check "taskd -tq -c /etc/taskd/taskd.toml (short options)" timeout "$T_STEP" /usr/bin/taskd -tq -c /etc/taskd/taskd.toml
check "taskd --version names the commit it was built from" \
    bash -c '/usr/bin/taskd --version | grep -qE "^taskd [0-9.]+ \([0-9a-f]{7,}\)$" || { /usr/bin/taskd --version; exit 1; }'
check "man -w taskd" bash -c 'man -w taskd | grep -qx /usr/share/man/man8/taskd.8.gz'
check "man -w taskd.toml" bash -c 'man -w taskd.toml | grep -qx /usr/share/man/man5/taskd.toml.5.gz'

# Reinstalling runs the upgrade path of the maintainer scripts (prerm
# upgrade, postinst configure with the old version).
check "dpkg -i again (upgrade path)" timeout "$T_STEP" dpkg -i "$deb"
check "after the upgrade: taskd.service still enabled, taskd.socket still not" \
    bash -c 'test -L /etc/systemd/system/multi-user.target.wants/taskd.service &&
             ! ls /etc/systemd/system/*.wants/taskd.socket 2>/dev/null | grep -q .'

# ---------------------------------------------------------------------------
step "dpkg -r keeps state and logs, dpkg -P removes them"
# The layout systemd creates for StateDirectory=/LogsDirectory= with
# DynamicUser=yes: private directories and symlinks to them.
for d in /var/lib/private /var/log/private; do
    if [ ! -d "$d" ]; then
        mkdir -m 0700 "$d"
        made_dirs+=("$d")
    fi
done
mkdir /var/lib/private/taskd /var/log/private/taskd
ln -s private/taskd /var/lib/taskd
ln -s private/taskd /var/log/taskd
echo '[{"request_count":1,"username":"ci"}]' >/var/lib/private/taskd/users.json
echo '{"op":"ping"}' >/var/log/private/taskd/results.log

check "dpkg -r taskd" timeout "$T_STEP" dpkg -r taskd
check "dpkg -r removed /usr/bin/taskd and the units" \
    bash -c '! [ -e /usr/bin/taskd ] && ! [ -e /usr/lib/systemd/system/taskd.service ] && ! [ -e /usr/lib/systemd/system/taskd.socket ]'
check "dpkg -r kept users.json and results.log" \
    test -f /var/lib/taskd/users.json -a -f /var/log/taskd/results.log
check "dpkg -r kept the conffiles" test -f /etc/taskd/taskd.toml -a -f /etc/taskd/servers.csv

check "dpkg -P taskd" timeout "$T_STEP" dpkg -P taskd
for p in /etc/taskd /etc/default/taskd /var/lib/taskd /var/lib/private/taskd /var/log/taskd /var/log/private/taskd \
    /usr/share/man/man8/taskd.8.gz /usr/share/man/man5/taskd.toml.5.gz /usr/share/doc/taskd; do
    check "dpkg -P removed $p" bash -c '! [ -e "$1" ] && ! [ -L "$1" ]' _ "$p"
done
check "dpkg -P left no unit links or deb-systemd-helper state" \
    bash -c '! find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
                 -name "taskd.*" 2>/dev/null | grep .'
check "dpkg knows nothing of taskd any more" \
    bash -c '[ "$(pkg_state)" = not-installed ]'

# ---------------------------------------------------------------------------
echo
if [ "$failures" -eq 0 ]; then
    echo "package: all checks passed"
else
    echo "package: $failures check(s) failed"
    exit 1
fi
