# (d) durability tokens in use by default: fio with fsync every 8 writes and O_DSYNC (FUA)
# writes, then cbd-host's counters must show fsyncs answered from the watermark (flushes_by_watermark > 0), tokens
# confirmed, none lost, and no CBD FLUSH command sent.
T=pair-tokens
start_host
fio --name=fsync --filename=$DEV --direct=1 --ioengine=psync --rw=randwrite --bs=4k \
    --size=${FIO_SIZE:-4M} --fsync=8 --output=/tmp/fio.log >/dev/null 2>&1 || { cat /tmp/fio.log; fail fio; }
grep -q "err= 0" /tmp/fio.log || { cat /tmp/fio.log; fail "fio reported errors"; }
# O_DIRECT|O_DSYNC writes to the block device carry REQ_FUA: sent CRITICAL, no FLUSH.
[ "$(cat /sys/block/ublkb0/queue/fua)" = 1 ] || fail "ublk device does not advertise FUA"
fio --name=fua --filename=$DEV --direct=1 --sync=dsync --ioengine=psync --rw=write --bs=4k \
    --size=64k --offset=8M --output=/tmp/fio2.log >/dev/null 2>&1 || { cat /tmp/fio2.log; fail "fio dsync"; }
sleep 2   # the stats file is rewritten every second
STATS=$(cbd-host stats 0) || fail "cbd-host stats 0"
echo "stats: $STATS"
val() { echo "$STATS" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
[ "$(val durable_tokens)" = on ] || fail "durable_tokens not on"
[ "$(val cbd_flushes_sent)" = 0 ] || fail "CBD FLUSH commands were sent: $(val cbd_flushes_sent)"
[ "$(val flushes_by_watermark)" -gt 0 ] || fail "no flush answered from the watermark"
[ "$(val tokens_confirmed)" -gt 0 ] || fail "no token confirmed"
[ "$(val tokens_lost)" = 0 ] || fail "tokens lost"
[ "$(val critical_writes)" -gt 0 ] || fail "no FUA write was sent CRITICAL"
[ "$(val errors)" = 0 ] || fail "errors"
stop_host
grep -q "stopped;.*cbd_flushes_sent=0 .*durable_tokens=on" /tmp/host.log || fail "final counters"
[ ! -e /run/cbd-host/ublkb0.stats ] || fail "stats file left behind"
echo "RESULT $T OK"
