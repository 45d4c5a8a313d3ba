#!/bin/sh
# A kselftest-style test script for busyroot's TAP test: it runs in the guest from a shared
# directory and prints TAP 13, with one failing and one skipped test point.
echo "TAP version 13"
echo "1..4"
echo "# uname: $(uname -r)"
if [ -d /proc/self ]; then echo "ok 1 proc is mounted"; else echo "not ok 1 proc is mounted"; fi
if [ "$(id -u)" = 0 ]; then echo "ok 2 runs as root"; else echo "not ok 2 runs as root"; fi
echo "# expected to fail: the file does not exist"
if [ -e /no/such/file ]; then echo "ok 3 finds a missing file"; else echo "not ok 3 finds a missing file"; fi
echo "ok 4 needs a device # SKIP no such device"
