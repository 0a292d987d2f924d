//! The device VM of the crash tests: backend mode on ivshmem, the media image as a
//! virtio-blk disk, RAM staging, `takeover=on`; waiting until it serves.

use std::time::{Duration, Instant};

use qemu::device_vm::DeviceVm;
use qemu::topology::{self, SharedFile};
use qemu::{Echo, Input, Vm};

use crate::common::now_ns;
use crate::driver::Dev;

pub struct Setup {
    pub shm_path: String,
    pub img: std::path::PathBuf,
    pub kernel: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.shm_path);
        let _ = std::fs::remove_file(&self.img);
    }
}

pub const SHM_MIB: u64 = 512;

pub fn spawn_device(s: &Setup, standard_bound_us: u64, name: &str) -> Vm {
    let t = topology::load(
        "ivshmem",
        &SharedFile {
            path: s.shm_path.clone().into(),
            size_mib: SHM_MIB,
        },
    )
    .unwrap();
    t.prepare_files().unwrap();
    let mut vm = DeviceVm::default()
        .option("mode", "backend")
        .option("channels", "2")
        .option("media", "virtio")
        .option("staging-mib", "8")
        .option("standard-bound-us", &standard_bound_us.to_string())
        .option("takeover", "on")
        .topology(t);
    vm.media = Some(s.img.clone());
    Vm::spawn_with_input(name, &vm.command(&s.kernel), Echo::Quiet, Input::Piped).unwrap()
}

/// Wait for the device to serve, heartbeating the blkdev meanwhile; its backend id.
pub fn wait_served(dev: &mut Vm, blk: Option<&mut Dev<'_>>) -> u32 {
    let t0 = Instant::now();
    let mut blk = blk;
    loop {
        if dev.wait_for("serve: backend", Duration::from_millis(200)) {
            break;
        }
        if let Some(b) = blk.as_deref_mut() {
            b.heartbeat(now_ns()).unwrap();
        }
        let out = dev.output();
        assert!(
            !out.contains("backend-start failed") && t0.elapsed() < Duration::from_secs(300),
            "device never served:\n{out}"
        );
    }
    let out = dev.output();
    let line = out.lines().find(|l| l.contains("serve: backend")).unwrap();
    line.split("serve: backend ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
