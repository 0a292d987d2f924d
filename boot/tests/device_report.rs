//! `cargo run`'s boot report: banner, memory map, CPU features, ACPI tables and the
//! PCI list — and devices passed through (ivshmem, a CXL type-3 topology) appear in it.

use std::time::Duration;

use qemu::device_vm::DeviceVm;
use qemu::status::KernelStatus;
use qemu::topology::{self, SharedFile};
use qemu::{Echo, Firmware, Outcome, Vm};

fn boot(name: &str, vm: DeviceVm) -> Outcome {
    let img = boot::image::kernel_image_for_tests(vm.firmware).expect("kernel image");
    let v = Vm::spawn(name, &vm.command(&img), Echo::Quiet).expect("start QEMU");
    // Right after the spawn: 180 s for the whole boot.
    let out = v.wait(Duration::from_secs(180));
    eprintln!("---- {name} ----\n{}", out.output);
    out
}

fn assert_report(out: &Outcome) {
    assert_eq!(
        out.status,
        KernelStatus::Success,
        "{}",
        out.status.describe()
    );
    for needle in [
        "cbdfw ",
        "memory: ",
        "usable ",
        "cpu: vendor=",
        "clwb=",
        "time: TSC ",
        "acpi: ",
        "APIC(",
        "MCFG(",
        "pci: 00:00.0 8086:29c0",
        "boot: done",
    ] {
        assert!(out.output.contains(needle), "report lacks {needle:?}");
    }
}

#[test]
fn plain_boot_reports_platform() {
    let out = boot("plain", DeviceVm::default());
    assert_report(&out);
    assert!(!out.output.contains("1af4:1110"));
}

#[test]
fn uefi_boot_reports_platform() {
    let out = boot(
        "uefi",
        DeviceVm {
            firmware: Firmware::Uefi,
            ..Default::default()
        },
    );
    assert_report(&out);
}

#[test]
fn passed_through_ivshmem_appears() {
    let path = format!("/dev/shm/cbdfw-test-report-iv-{}.raw", std::process::id());
    let t = topology::load(
        "ivshmem",
        &SharedFile {
            path: path.clone().into(),
            size_mib: 256,
        },
    )
    .unwrap();
    t.prepare_files().unwrap();
    let out = boot("ivshmem", DeviceVm::default().topology(t));
    let _ = std::fs::remove_file(&path);
    assert_report(&out);
    assert!(out.output.contains("1af4:1110 class 050000"));
    assert!(out.output.contains("BAR2 mem") && out.output.contains("size 0x10000000 64-bit"));
}

#[test]
fn passed_through_cxl_topology_appears_with_dvsecs_and_cedt() {
    let path = format!("/dev/shm/cbdfw-test-report-cxl-{}.raw", std::process::id());
    let t = topology::load(
        "cxl",
        &SharedFile {
            path: path.clone().into(),
            size_mib: 256,
        },
    )
    .unwrap();
    t.prepare_files().unwrap();
    let out = boot("cxl", DeviceVm::default().topology(t));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(format!("{path}.lsa"));
    assert_report(&out);
    assert!(out.output.contains("CEDT("));
    assert!(out.output.contains("class 050210 CXL memory device"));
    assert!(out.output.contains("(CXL) id 0 (CXL device)"));
    assert!(out.output.contains("(CXL) id 8 (register locator)"));
}
