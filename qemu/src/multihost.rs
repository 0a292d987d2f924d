//! One device VM and several Linux VMs on one shared file: the device exports several
//! disks (`disks=…`, one CBD backend each) and each Linux VM runs its own `cbd-host`
//! against its own backend. Every console is piped, so a test drives the run in phases,
//! each with its own deadline: start ([`start`]), then typed lines and awaited output
//! ([`Vm::send_line`], [`Vm::wait_for`]), then [`Hosts::finish`].
//!
//! ```text
//!                        device VM (cbdfw kernel, mode=backend)
//!                        disks=ram:32,virtio → backend 0 /dev/cbdfw0 (RAM disk)
//!                                              backend 1 /dev/cbdfw1 (virtio-blk disk)
//!                                 │
//!            ┌──────── /dev/shm/cbdfw-hosts-….raw (ivshmem BAR2 in every VM) ────────┐
//!            │                                                                       │
//!   Linux VM "a": cbd-host --backend-id 0                  Linux VM "b": cbd-host --backend-id 1
//!   → /dev/ublkb0 ← fio --verify                           → /dev/ublkb0 ← fio --verify
//! ```
//!
//! With one guest this is a paired run whose device console the test can type on
//! (`stats`), used by the long serve-under-load test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::device_vm::DeviceVm;
use crate::guest;
use crate::pair::{
    Cleanup, LINUX_BOOT_LIMIT, fresh_shared, guest_initrd, linux_command, save, spawn_linux,
};
use crate::topology;
use crate::vm::{Echo, Input, Outcome, Vm};

/// How long the device VM may take from spawn to its last backend's `ready` line.
pub const DEVICE_START_LIMIT: Duration = Duration::from_secs(240);

/// One Linux VM: its name (`a`, `b`, …: logs, the guest's `test=`) and its script.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    pub name: String,
    pub script: String,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct HostsSpec {
    /// A name for logs and files (`target/pairs/NAME/`).
    pub name: String,
    /// `ivshmem` (the shared file as a PCI BAR in every VM).
    pub topology: String,
    pub shm_mib: u64,
    /// The device's `disks=` list (`ram[:MIB]`, `virtio`), one backend each.
    pub disks: String,
    /// Size of the virtio-blk image attached to the device (when `disks` names `virtio`).
    pub media_mib: u64,
    pub channels: u32,
    /// Extra device options (fw_cfg).
    pub device_opts: Vec<(String, String)>,
    pub guests: Vec<GuestSpec>,
    pub echo: Echo,
}

impl HostsSpec {
    pub fn new(name: &str, disks: &str, guests: Vec<GuestSpec>) -> HostsSpec {
        HostsSpec {
            name: name.into(),
            topology: "ivshmem".into(),
            shm_mib: 512,
            disks: disks.into(),
            media_mib: 32,
            channels: 2,
            device_opts: Vec::new(),
            guests,
            echo: Echo::Quiet,
        }
    }

    fn disk_count(&self) -> usize {
        self.disks.split(',').count()
    }

    /// RAM the device VM needs: the RAM disks and a staging buffer per disk on top of
    /// the single-disk default.
    fn device_memory_mib(&self) -> u64 {
        let ram: u64 = self
            .disks
            .split(',')
            .filter_map(|d| match d.trim().split_once(':') {
                Some(("ram", mib)) => mib.parse().ok(),
                None if d.trim() == "ram" => Some(64),
                _ => None,
            })
            .sum();
        256 + ram + 16 * self.disk_count() as u64
    }
}

/// A running set: the device VM and the Linux VMs (in spec order), all consoles piped.
pub struct Hosts {
    pub device: Vm,
    pub linux: Vec<Vm>,
    /// Where the consoles are saved.
    pub logs: PathBuf,
    /// The shared file (read it while the VMs run).
    pub shm: PathBuf,
    _cleanup: Vec<Cleanup>,
}

/// How the set ended.
#[derive(Debug)]
pub struct HostsOutcome {
    pub device: Outcome,
    pub linux: Vec<Outcome>,
    pub logs: PathBuf,
}

impl HostsOutcome {
    /// The `RESULT TAG …` line of Linux VM `i`.
    pub fn result_line(&self, i: usize, tag: &str) -> Option<String> {
        let needle = format!("RESULT {tag} ");
        self.linux[i]
            .output
            .lines()
            .find(|l| l.contains(&needle))
            .map(|l| l.trim().to_string())
    }
}

/// Start the device VM (waiting until every backend is ready) and then each Linux VM
/// (waiting until its userspace is up; one boot retry). Each phase has its own deadline.
pub fn start(spec: &HostsSpec, device_image: &Path) -> Result<Hosts, String> {
    let work = crate::workspace_root()
        .join("target")
        .join("pairs")
        .join(&spec.name);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let img = guest::ensure_image(&guest::default_cache_dir()).map_err(|e| e.to_string())?;
    let mut initrds = Vec::new();
    for g in &spec.guests {
        let prefix = format!("{}-", g.name);
        initrds.push(guest_initrd(
            &img,
            &work,
            &prefix,
            &g.name,
            &g.script,
            &[],
            &[],
        )?);
    }

    let pid = std::process::id();
    let shm = PathBuf::from(format!("/dev/shm/cbdfw-hosts-{}-{pid}.raw", spec.name));
    let (topo, guard) = fresh_shared(&spec.topology, &shm, spec.shm_mib)?;
    let mut cleanup = vec![guard];
    let media = spec.disks.contains("virtio").then(|| {
        PathBuf::from(format!(
            "/dev/shm/cbdfw-hosts-{}-{pid}-media.raw",
            spec.name
        ))
    });
    if let Some(m) = &media {
        let _ = std::fs::remove_file(m);
        topology::ensure_file(m, spec.media_mib << 20)?;
        cleanup.push(Cleanup(m.clone()));
    }

    let mut d = DeviceVm {
        memory_mib: spec.device_memory_mib(),
        media,
        ..Default::default()
    }
    .option("mode", "backend")
    .option("disks", &spec.disks)
    .option("channels", &spec.channels.to_string())
    .topology(topo.clone());
    for (k, v) in &spec.device_opts {
        d = d.option(k, v);
    }
    let mut device =
        Vm::spawn_with_input("device", &d.command(device_image), spec.echo, Input::Piped)
            .map_err(|e| e.to_string())?;
    let last = format!("path /dev/cbdfw{}", spec.disk_count() - 1);
    if !device.wait_for(&last, DEVICE_START_LIMIT) {
        let out = device.wait(Duration::from_secs(1));
        save(&work, "device.log", &out.output);
        return Err(format!(
            "the device did not report {} backends ready within {} s (log: {})",
            spec.disk_count(),
            DEVICE_START_LIMIT.as_secs(),
            work.join("device.log").display()
        ));
    }

    let mut linux = Vec::new();
    for (g, initrd) in spec.guests.iter().zip(&initrds) {
        let append = format!("quiet test={}", g.name);
        let cmd = linux_command(&img, initrd, &append, &topo);
        let mut vm = spawn_linux(&cmd, spec.echo, Input::Piped).map_err(|e| {
            save(&work, "device.log", &device.output());
            format!(
                "Linux VM {}: {e} (boot limit {} s)",
                g.name,
                LINUX_BOOT_LIMIT.as_secs()
            )
        })?;
        vm.name = format!("linux-{}", g.name);
        linux.push(vm);
    }
    Ok(Hosts {
        device,
        linux,
        logs: work,
        shm,
        _cleanup: cleanup,
    })
}

impl Hosts {
    /// Wait for every Linux VM to power off (each gets `linux_limit` from this call, in
    /// turn), then type `stop` on the device and give it `DEVICE_STOP_LIMIT` from then.
    /// All consoles are saved under [`Hosts::logs`].
    pub fn finish(self, linux_limit: Duration) -> HostsOutcome {
        let Hosts {
            mut device,
            linux,
            logs,
            _cleanup,
            ..
        } = self;
        let mut outs = Vec::new();
        for vm in linux {
            let name = vm.name.clone();
            let out = vm.wait(linux_limit);
            save(&logs, &format!("{name}.log"), &out.output);
            outs.push(out);
        }
        let _ = device.send_line("stop");
        let dev = device.wait(crate::pair::DEVICE_STOP_LIMIT);
        save(&logs, "device.log", &dev.output);
        drop(_cleanup);
        HostsOutcome {
            device: dev,
            linux: outs,
            logs,
        }
    }
}
