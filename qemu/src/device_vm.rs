//! The device VM's QEMU command line, shared by `cargo run`, kernel tests and the
//! integration tests.

use std::path::Path;

use crate::topology::Topology;
use crate::vm::{Firmware, QemuCmd};

/// How to start the device VM.
#[derive(Clone, Debug)]
pub struct DeviceVm {
    pub firmware: Firmware,
    pub memory_mib: u64,
    /// fw_cfg options (`opt/cbdfw/<key>`): log, mode, region, min-region-mib, …
    pub options: Vec<(String, String)>,
    pub topology: Option<Topology>,
    /// A raw image attached as a virtio-blk disk: the device's non-volatile media.
    pub media: Option<std::path::PathBuf>,
    pub extra: Vec<String>,
}

impl Default for DeviceVm {
    fn default() -> Self {
        DeviceVm {
            firmware: Firmware::Bios,
            memory_mib: 512,
            options: Vec::new(),
            topology: None,
            media: None,
            extra: Vec::new(),
        }
    }
}

impl DeviceVm {
    pub fn option(mut self, key: &str, value: &str) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    pub fn topology(mut self, t: Topology) -> Self {
        self.topology = Some(t);
        self
    }

    /// The QEMU command line booting `image`.
    pub fn command(&self, image: &Path) -> QemuCmd {
        let mut q = QemuCmd::new();
        q.machine(
            self.topology
                .as_ref()
                .and_then(|t| t.machine.as_deref())
                .unwrap_or("q35"),
        )
        .accel_tcg()
        // -hypervisor: what the Linux side needs too; keep both VMs alike.
        .cpu("max,-hypervisor")
        .memory_mib(self.memory_mib)
        .headless_serial()
        .debug_exit()
        .firmware(self.firmware)
        .boot_disk(image);
        for (k, v) in &self.options {
            q.fw_opt(k, v);
        }
        if let Some(t) = &self.topology {
            t.apply(&mut q);
        }
        if let Some(m) = &self.media {
            q.virtio_blk("media", m);
        }
        q.args(self.extra.iter().cloned());
        q
    }
}
