//! The device finds and enables its shared memory on every topology: it reads a
//! pattern the host left in the backing file (invalidate, then read) and writes
//! patterns to the first and last line (store, write back) that we find in the file.
//! Failures (no CXL, region too small) end with their own exit status and one line.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use qemu::device_vm::DeviceVm;
use qemu::status::KernelStatus;
use qemu::topology::{self, SharedFile};
use qemu::{Echo, Outcome, Vm};

struct TempShm(std::path::PathBuf);

impl Drop for TempShm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(format!("{}.lsa", self.0.display()));
    }
}

fn shm(name: &str) -> TempShm {
    TempShm(format!("/dev/shm/cbdfw-test-{name}-{}.raw", std::process::id()).into())
}

fn boot(name: &str, vm: DeviceVm) -> Outcome {
    let img = boot::image::kernel_image_for_tests(qemu::Firmware::Bios).expect("kernel image");
    let v = Vm::spawn(name, &vm.command(&img), Echo::Quiet).expect("start QEMU");
    // Right after the spawn: 180 s for the whole boot.
    let out = v.wait(Duration::from_secs(180));
    eprintln!("---- {name} ----\n{}", out.output);
    out
}

fn read_at(path: &std::path::Path, off: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut b = vec![0; len];
    f.read_exact(&mut b).unwrap();
    b
}

fn selftest_on(topo: &str) {
    let file = shm(topo);
    let size_mib = 256;
    let t = topology::load(
        topo,
        &SharedFile {
            path: file.0.clone(),
            size_mib,
        },
    )
    .unwrap();
    t.prepare_files().unwrap();
    let host_pattern = format!("host-pattern-{topo}-{}", std::process::id());
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file.0)
            .unwrap();
        f.seek(SeekFrom::Start(0x1000)).unwrap();
        f.write_all(host_pattern.as_bytes()).unwrap();
        f.write_all(&[0]).unwrap();
    }
    let out = boot(
        topo,
        DeviceVm::default()
            .option("mode", "region-selftest")
            .topology(t),
    );
    assert_eq!(
        out.status,
        KernelStatus::Success,
        "{}",
        out.status.describe()
    );
    assert!(
        out.output
            .contains(&format!("host pattern at +0x1000: \"{host_pattern}\"")),
        "device did not read the host pattern"
    );
    let size = size_mib << 20;
    let first = read_at(&file.0, 0, 64);
    assert!(
        first.starts_with(b"CBDFW-FIRST-LINE off=0x0 src="),
        "first line: {:?}",
        String::from_utf8_lossy(&first)
    );
    let last = read_at(&file.0, size - 64, 64);
    let want = format!("CBDFW-LAST-LINE off={:#x} src=", size - 64);
    assert!(
        last.starts_with(want.as_bytes()),
        "last line: {:?}",
        String::from_utf8_lossy(&last)
    );
}

#[test]
fn selftest_cxl_single_root_port() {
    selftest_on("cxl");
}

#[test]
fn selftest_cxl_two_root_ports_programs_host_bridge_decoder() {
    selftest_on("cxl2rp");
}

#[test]
fn selftest_ivshmem() {
    selftest_on("ivshmem");
}

#[test]
fn no_cxl_device_is_a_clear_error_with_its_own_status() {
    let out = boot(
        "no-cxl",
        DeviceVm::default()
            .option("mode", "region-selftest")
            .option("region", "cxl"),
    );
    assert_eq!(out.status, KernelStatus::NoCxl);
    assert!(
        out.output.contains("cxl: no CEDT table"),
        "missing error line"
    );
}

#[test]
fn missing_ivshmem_is_a_clear_error() {
    let out = boot(
        "no-ivshmem",
        DeviceVm::default()
            .option("mode", "region-selftest")
            .option("region", "ivshmem"),
    );
    assert_eq!(out.status, KernelStatus::NoCxl);
    assert!(out.output.contains("no ivshmem-plain device"));
}

#[test]
fn region_smaller_than_required_is_a_clear_error() {
    let file = shm("small");
    let t = topology::load(
        "cxl",
        &SharedFile {
            path: file.0.clone(),
            size_mib: 256,
        },
    )
    .unwrap();
    t.prepare_files().unwrap();
    let out = boot(
        "small",
        DeviceVm::default()
            .option("mode", "region-selftest")
            .option("min-region-mib", "512")
            .topology(t),
    );
    assert_eq!(out.status, KernelStatus::RegionTooSmall);
    assert!(
        out.output
            .contains("256 MiB shared region is smaller than the 512 MiB required")
    );
}
