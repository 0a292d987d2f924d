# (d) the host with no device present must exit with a clear error, not hang.
T=pair-nodevice
if [ "$TOPO" = cxl ]; then
    cxl create-region -m -t pmem -d decoder0.0 -w 1 mem0 >/dev/null 2>&1
    ndctl create-namespace -m devdax -r region0 >/dev/null 2>&1
    TRANSPORT="--transport /dev/dax0.0"
else
    TRANSPORT="--transport ivshmem"
fi
start=$(cut -d. -f1 /proc/uptime)
cbd-host $TRANSPORT --queues 2 --wait-backend 5 >/tmp/host.log 2>&1
rc=$?
took=$(( $(cut -d. -f1 /proc/uptime) - start ))
cat /tmp/host.log
[ $rc != 0 ] || fail "cbd-host succeeded without a device"
[ -b /dev/ublkb0 ] && fail "a ublk device appeared"
grep -qiE "no (live )?(cbd )?(transport|backend)|not alive|no .*backend" /tmp/host.log || fail "error message not clear"
[ $took -lt 60 ] || fail "took ${took}s"
echo "RESULT $T OK rc=$rc after ${took}s"
