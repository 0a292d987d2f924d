#!/bin/sh
# Guest test: CXL type-3 persistent memory -> region -> devdax namespace.
# Needs the CXL QEMU arguments (qemu/topologies/cxl.args) and `-cpu max,-hypervisor`.
for m in cxl_acpi cxl_pci cxl_mem cxl_pmem nd_pmem dax_pmem device_dax; do
    modprobe $m || { echo "RESULT cxl FAIL modprobe $m"; exit 1; }
done
i=0
while [ ! -e /sys/bus/cxl/devices/mem0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -e /sys/bus/cxl/devices/mem0 ] || { echo "RESULT cxl FAIL no-mem0"; exit 1; }
cxl create-region -m -t pmem -d decoder0.0 -w 1 mem0 || { echo "RESULT cxl FAIL create-region"; exit 1; }
# The namespace persists in the label area: create it only when there is none yet.
i=0
while [ ! -e /dev/dax0.0 ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
if [ ! -e /dev/dax0.0 ]; then
    ndctl create-namespace -m devdax -r region0 >/dev/null || { echo "RESULT cxl FAIL create-namespace"; exit 1; }
fi
i=0
while [ ! -c /dev/dax0.0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -c /dev/dax0.0 ] || { echo "RESULT cxl FAIL no-/dev/dax0.0"; exit 1; }
size=$(cat /sys/bus/dax/devices/dax0.0/size)
start=$(grep -m1 'dax0.0' /proc/iomem | awk '{print $1}' | cut -d- -f1)
echo "RESULT cxl OK dax0.0 size=$size start=$start"
