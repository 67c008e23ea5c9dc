#!/bin/sh
# stop-client.sh: one TCP client of the "stop under load" check of
# tests/systemd/run.sh; it runs inside the test container.
#
#   stop-client.sh NAME N1 N2 DIR
#
# Over one connection to 127.0.0.1:7700 it sends N1 slow requests
# (`#aI pi 10000000 1`) at once, then touches DIR/NAME.phase1; it waits for
# DIR/stop-issued (at most 5 s), then sends N2 quick requests
# (`#bI sum I 1`), 20 ms apart, listing each one in DIR/NAME.sent2 once
# written. The replies go to DIR/NAME.out, nc's exit status to DIR/NAME.rc.
# run.sh compares the replies with what was sent.
set -u
name=$1 n1=$2 n2=$3 dir=$4

{
    i=0
    while [ "$i" -lt "$n1" ]; do
        printf '#a%d pi 10000000 1\n' "$i"
        i=$((i + 1))
    done
    : >"$dir/$name.phase1"
    t=0
    while [ ! -e "$dir/stop-issued" ] && [ "$t" -lt 100 ]; do
        sleep 0.05
        t=$((t + 1))
    done
    i=0
    while [ "$i" -lt "$n2" ]; do
        printf '#b%d sum %d 1\n' "$i" "$i"
        echo "b$i" >>"$dir/$name.sent2"
        i=$((i + 1))
        sleep 0.02
    done
} 2>/dev/null | nc -N -w 10 127.0.0.1 7700 >"$dir/$name.out" 2>"$dir/$name.err"
echo "$?" >"$dir/$name.rc"
