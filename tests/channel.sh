#!/bin/sh
# The payload channel end to end through `cargo xtask run`, for CI on any architecture:
#   tests/channel.sh [--all-statuses] [RUN FLAGS...]    e.g. --arch aarch64, --kernel K --modules DIR
# Checks that the virtio-serial channel was chosen; in one boot, 1 MB of random stdin through
# `cat` followed by the issue's printf line (control bytes, NUL, invalid UTF-8, no final
# newline) as byte-exact stdout and a separate stderr; then exit status 3 from a payload that
# forges statuses on stdout, /dev/console and every /dev/vport*; with --all-statuses also
# statuses 0, 1 and 255. Exits non-zero, saying what differed, on failure.
set -eu
all_statuses=false
if [ "${1:-}" = --all-statuses ]; then all_statuses=true; shift; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "tests/channel.sh: $*" >&2; exit 1; }
run() { cargo xtask run --initramfs "$@"; }
line='a\tb\033[31mred\r\nx\001y\nno newline\000\376'

head -c 1000000 /dev/urandom >"$tmp/in"
run "$@" -- sh -c "cat; printf '$line'; printf to-stderr-only >&2" \
    <"$tmp/in" >"$tmp/out" 2>"$tmp/err" || fail "the stream check failed: $(tail -3 "$tmp/err")"
grep -q '^payload: virtio-serial' "$tmp/err" || fail "not over virtio-serial: $(grep '^payload' "$tmp/err")"
cp "$tmp/in" "$tmp/want"
printf "$line" >>"$tmp/want"
cmp "$tmp/out" "$tmp/want" || fail "stdout differs from stdin + the printf line: $(cmp "$tmp/out" "$tmp/want" 2>&1)"
grep -q 'to-stderr-only' "$tmp/err" || fail "stderr lost: $(tail -3 "$tmp/err")"

if $all_statuses; then
    for s in 0 1 255; do
        rc=0
        run "$@" -- sh -c "exit $s" </dev/null >/dev/null 2>"$tmp/err" || rc=$?
        [ "$rc" = "$s" ] || fail "exit $s came back as $rc: $(tail -3 "$tmp/err")"
    done
fi

rc=0
run "$@" -- sh -c '
    for p in /dev/vport*; do echo "s 0" >"$p" 2>/dev/null && echo "opened $p" >&2; done
    printf "r\ns 0\nk\n" >/dev/console
    printf "s 0\nr\n"
    exit 3' </dev/null >"$tmp/out" 2>"$tmp/err" || rc=$?
[ "$rc" = 3 ] || fail "the forging payload changed the verdict: exit $rc: $(tail -3 "$tmp/err")"
! grep -q '^opened /dev/vport' "$tmp/err" || fail "a port opened: $(grep opened "$tmp/err")"
echo "tests/channel.sh: all passed ($*)"
