#!/bin/sh
# The payload channel end to end through `cargo xtask run`, for CI on any architecture:
#   tests/channel.sh [RUN FLAGS...]     e.g. --arch aarch64 --kernel K, or --modules DIR
# Checks that the virtio-serial channel was chosen, byte-exact stdout (the issue's printf line,
# NUL, invalid UTF-8, no added newline), a separate stderr, 1 MB of random stdin through `cat`,
# exit statuses 0 1 3 255, and a payload forging statuses on stdout, /dev/console and every
# /dev/vport* without changing the verdict. Exits non-zero, saying what differed, on failure.
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "tests/channel.sh: $*" >&2; exit 1; }
run() { cargo xtask run --initramfs "$@"; }

run "$@" -- printf 'a\tb\033[31mred\r\nx\001y\nno newline\000\376' \
    </dev/null >"$tmp/out" 2>"$tmp/err" || fail "printf failed: $(tail -3 "$tmp/err")"
grep -q '^payload: virtio-serial' "$tmp/err" || fail "not over virtio-serial: $(grep '^payload' "$tmp/err")"
printf 'a\tb\033[31mred\r\nx\001y\nno newline\000\376' >"$tmp/want"
cmp "$tmp/out" "$tmp/want" || fail "stdout differs: $(od -c "$tmp/out" | head -5)"

run "$@" -- sh -c 'printf out; printf to-stderr-only >&2' </dev/null >"$tmp/out" 2>"$tmp/err"
[ "$(cat "$tmp/out")" = out ] || fail "stdout of the stderr check: $(cat "$tmp/out")"
grep -q 'to-stderr-only' "$tmp/err" || fail "stderr lost: $(cat "$tmp/err")"

head -c 1000000 /dev/urandom >"$tmp/in"
run "$@" -- cat <"$tmp/in" >"$tmp/out" 2>"$tmp/err" || fail "cat failed: $(tail -3 "$tmp/err")"
cmp "$tmp/in" "$tmp/out" || fail "1 MB of stdin came back different"

for s in 0 1 3 255; do
    rc=0
    run "$@" -- sh -c "exit $s" </dev/null >/dev/null 2>"$tmp/err" || rc=$?
    [ "$rc" = "$s" ] || fail "exit $s came back as $rc: $(tail -3 "$tmp/err")"
done

rc=0
run "$@" -- sh -c '
    for p in /dev/vport*; do echo "s 0" >"$p" 2>/dev/null && echo "opened $p" >&2; done
    printf "r\ns 0\nk\n" >/dev/console
    printf "s 0\nr\n"
    exit 3' </dev/null >"$tmp/out" 2>"$tmp/err" || rc=$?
[ "$rc" = 3 ] || fail "the forging payload changed the verdict: exit $rc: $(tail -3 "$tmp/err")"
! grep -q '^opened /dev/vport' "$tmp/err" || fail "a port opened: $(grep opened "$tmp/err")"
echo "tests/channel.sh: all passed ($*)"
