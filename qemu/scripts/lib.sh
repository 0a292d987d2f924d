# Shared helpers for the guest scripts (prepended to each script by the harness).
fail() { echo "RESULT $T FAIL $*"; [ -f /tmp/host.log ] && tail -n 30 /tmp/host.log; exit 1; }

# Map the shared memory and start cbd-host; sets $DEV (/dev/ublkbN) and $HOSTPID.
# ivshmem: BAR2 of 1af4:1110. cxl: region + devdax namespace, transport formatted by us.
start_host() {
    queues=${QUEUES:-2}
    if [ "$TOPO" = cxl ] && [ -n "$CXL_FORMATTED" ]; then
        # A later step of the same guest: the region, the namespace and the transport the
        # first step made are there, and the device serves them; attach without formatting.
        TRANSPORT="--transport /dev/dax0.0"
    elif [ "$TOPO" = cxl ]; then
        cxl create-region -m -t pmem -d decoder0.0 -w 1 mem0 >/tmp/region.log 2>&1 || { cat /tmp/region.log; fail "cxl create-region"; }
        [ -e /dev/dax0.0 ] || ndctl create-namespace -m devdax -r region0 >/tmp/ns.log 2>&1 || { cat /tmp/ns.log; fail "ndctl create-namespace"; }
        i=0; while [ ! -e /dev/dax0.0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
        TRANSPORT="--transport /dev/dax0.0 --format"
        CXL_FORMATTED=1
    else
        TRANSPORT="--transport ivshmem"
    fi
    cbd-host $TRANSPORT --queues $queues --depth ${DEPTH:-32} --wait-backend 120 $HOSTARGS >/tmp/host.log 2>&1 &
    HOSTPID=$!
    i=0
    while [ ! -b /dev/ublkb0 ] && [ $i -lt 1200 ]; do
        kill -0 $HOSTPID 2>/dev/null || fail "cbd-host exited early"
        sleep 0.1; i=$((i+1))
    done
    [ -b /dev/ublkb0 ] || fail "no /dev/ublkb0 after 120 s"
    DEV=/dev/ublkb0
    echo "host: $DEV up, $(ls /sys/block/ublkb0/mq | wc -l) queues, $(cat /sys/block/ublkb0/size) sectors"
}

stop_host() {
    kill -TERM $HOSTPID
    wait $HOSTPID
    rc=$?
    tail -n 5 /tmp/host.log
    [ $rc = 0 ] || fail "cbd-host exit $rc"
    case " $HOSTARGS " in
    *" --plain-v3 "*) grep -q "stopped;.*durable_tokens=off" /tmp/host.log || fail "--plain-v3 but tokens on" ;;
    esac
}
