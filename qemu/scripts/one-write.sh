# One 4 KiB O_DIRECT write and its read-back, for following a single request
# through the whole stack (cargo run -- demo --script one-write --trace).
T=one-write
HOSTARGS=-v
start_host
printf 'cbdfw: the life of one write\n' | dd of=/tmp/blk bs=4096 conv=sync 2>/dev/null
echo "one-write: write(2) of 4096 bytes at offset 1 MiB"
dd if=/tmp/blk of=$DEV bs=4096 seek=256 count=1 oflag=direct 2>/dev/null || fail "dd write"
echo "one-write: read it back"
dd if=$DEV bs=4096 skip=256 count=1 iflag=direct 2>/dev/null | head -c 29; echo
stop_host
grep -E "cbd|ublk" /tmp/host.log | head -n 40
echo "RESULT $T OK"
