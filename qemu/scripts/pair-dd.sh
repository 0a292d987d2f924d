# (a) dd patterns with checksums, bypassing the page cache.
T=pair-dd
start_host
for off in 0 7 33; do
    dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null
    want=$(md5sum </tmp/pat | cut -d' ' -f1)
    dd if=/tmp/pat of=$DEV bs=1M seek=$off oflag=direct 2>/dev/null || fail "dd write at ${off}M"
    got=$(dd if=$DEV bs=1M skip=$off count=4 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$want" = "$got" ] || fail "checksum mismatch at ${off}M: $want != $got"
    echo "dd: 4 MiB at ${off} MiB ok ($got)"
done
# Small unaligned-to-MiB requests too.
dd if=/dev/urandom of=/tmp/small bs=4k count=3 2>/dev/null
dd if=/tmp/small of=$DEV bs=4k seek=1001 oflag=direct 2>/dev/null || fail "dd 4k write"
[ "$(md5sum </tmp/small)" = "$(dd if=$DEV bs=4k skip=1001 count=3 iflag=direct 2>/dev/null | md5sum)" ] || fail "4k mismatch"
sync
stop_host
echo "RESULT $T OK"
