#!/usr/bin/env bash
# Runs every example of README.md as printed and checks its output exactly:
# each ```console block's `$ command` lines (a trailing \ continues a
# command) run in order with bash in one temporary folder, and what a
# command prints on stdout must be the lines that follow it in the README,
# up to the next command, with exit status 0. Only π estimates and elapsed
# times may differ (the README says so). Nothing is copied here, so the
# README and this check cannot drift apart.
#
# Directives in HTML comments, invisible on a rendered README:
#   <!-- loopback: start PORT [ARGS] -->  before a block: stop the daemon
#       started before, if any, start `taskd ARGS` in the folder and wait
#       until 127.0.0.1:PORT accepts connections
#   <!-- loopback: file NAME -->  before a code block: write the block to
#       NAME in the folder (a configuration the README shows)
#
# Needs nc, curl, promtool, openssl and socat (.ci/run installs them).
# Cleans up on every path; every command and start is bounded in time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
readme=$root/README.md
cargo build --quiet --release --manifest-path "$root/Cargo.toml"
bin="$root/target/release/taskd"

if [ -e /etc/taskd/taskd.toml ]; then
    echo "loopback.sh: /etc/taskd/taskd.toml exists; the embedded default would not be used" >&2
    exit 1
fi
for tool in nc curl promtool openssl socat; do
    command -v "$tool" >/dev/null || { echo "loopback.sh: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d)
pid=
stop_daemon() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
cleanup() {
    stop_daemon
    rm -rf "$work"
}
trap cleanup EXIT

fails=0 passes=0

# start PORT [ARGS...]
start_daemon() {
    local port=$1
    shift
    stop_daemon
    (cd "$work" && exec "$bin" "$@") 2>>"$work/stderr.log" &
    pid=$!
    for _ in $(seq 100); do
        nc -z 127.0.0.1 "$port" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$work/stderr.log" >&2
            echo "FAIL taskd $* exited before serving on $port" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "FAIL taskd $* does not serve on $port after 10 s" >&2
    exit 1
}

# The digits that differ from run to run.
normalize() {
    sed -E -e 's/(OK 3)\.[0-9]+ samples=/\1.# samples=/' \
        -e 's/("pi":3)\.[0-9]+/\1.#/' \
        -e 's/("elapsed_s":)[0-9.e+-]+/\1#/'
}

# check_command LINE: runs the pending command, compares with the pending
# expected output.
cmd='' expected='' cmd_line=0
check_command() {
    [ -n "$cmd" ] || return 0
    local got rc=0
    got=$(cd "$work" && timeout 30 bash -c "$cmd" 2>>"$work/commands.err") || rc=$?
    if [ "$rc" = 0 ] && [ "$(normalize <<<"$got")" == "$(normalize <<<"$expected")" ]; then
        echo "PASS README.md:$cmd_line: $cmd"
        passes=$((passes + 1))
    else
        echo "FAIL README.md:$cmd_line: $cmd (exit status $rc)"
        echo "  expected:"
        sed 's/^/    /' <<<"$expected"
        echo "  got:"
        sed 's/^/    /' <<<"$got"
        fails=$((fails + 1))
    fi
    cmd='' expected=''
}

directive='' block='' file='' continued=0 n=0
while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    if [ -z "$block" ]; then
        if [[ $line =~ ^\<!--\ loopback:\ (.*)\ --\>$ ]]; then
            directive=${BASH_REMATCH[1]}
        elif [[ $line =~ ^\`\`\`(.*)$ ]]; then
            block=${BASH_REMATCH[1]:-text}
            case "$directive" in
                start\ *)
                    read -r -a words <<<"${directive#start }"
                    start_daemon "${words[@]}"
                    ;;
                file\ *)
                    file=$work/${directive#file }
                    : >"$file"
                    block=file
                    ;;
                '') ;;
                *) echo "loopback.sh: README.md:$n: unknown directive: $directive" >&2; exit 1 ;;
            esac
            directive=''
        fi
        continue
    fi
    if [ "$line" = '```' ]; then
        [ "$block" != console ] || check_command
        block='' file=''
        continue
    fi
    case "$block" in
        file) printf '%s\n' "$line" >>"$file" ;;
        console)
            if [ "$continued" = 1 ]; then
                cmd+=$'\n'$line
            elif [[ $line == '$ '* ]]; then
                check_command
                cmd=${line#\$ } cmd_line=$n expected=''
            elif [ -n "$cmd" ]; then
                expected+=${expected:+$'\n'}$line
            fi
            if [[ $line == *\\ ]] && { [ "$continued" = 1 ] || [[ $line == '$ '* ]]; }; then
                continued=1
            else
                continued=0
            fi
            ;;
    esac
done <"$readme"

if [ "$passes" = 0 ]; then
    echo "loopback.sh: no example found in README.md" >&2
    exit 1
fi
if [ "$fails" -ne 0 ]; then
    echo "loopback.sh: $fails of $((passes + fails)) README examples failed"
    echo "--- taskd's stderr"
    cat "$work/stderr.log"
    echo "--- the commands' stderr"
    cat "$work/commands.err" 2>/dev/null || true
    exit 1
fi
echo "loopback.sh: all $passes README examples passed"
