//! `qemu`: everything about cbdfw's virtual machines.
//!
//! * [`vm`] — the QEMU runner: typed command lines, serial capture, kill on drop,
//!   timeouts; [`status`] maps QEMU's exit status back to the kernel's outcome.
//! * [`topology`] — the machines as data (`qemu/topologies/NAME.args`).
//! * [`device_vm`] — the device VM's command line (`cargo run`, kernel tests,
//!   integration tests).
//! * [`guest`] — the Debian Linux guest image (the CBD host side), built from
//!   packages only; its data is in `qemu/guest/`.
//! * [`pair`] — the device VM and a Linux VM on one shared file; guest-side scripts
//!   are in `qemu/scripts/`.
//! * [`multihost`] — one device VM exporting several disks and several Linux VMs, each
//!   on its own disk, on one shared file; every console piped, driven in phases.
//!
//! Building the device kernel and its boot image is `boot`'s job: functions here that
//! boot the device take the image's path.

use std::path::{Path, PathBuf};

pub mod device_vm;
pub mod guest;
pub mod multihost;
pub mod pair;
pub mod status;
pub mod topology;
pub mod vm;

pub use vm::{Echo, Firmware, Input, Outcome, QemuCmd, Vm};

/// This crate's folder, `<workspace>/qemu`: the data folders `topologies/`, `guest/`
/// and `scripts/` live here.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root (the parent of `qemu/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu/ lives in the workspace")
        .to_path_buf()
}

/// Log to stderr as `PROGRAM: LEVEL: message`, filtered by `RUST_LOG` (default
/// `default_filter`, e.g. `info`): the logger setup of the binaries (`boot`,
/// `guest-image`), with `env_logger`.
pub fn init_logger(program: &'static str, default_filter: &str) {
    use std::io::Write;
    let env = env_logger::Env::default().default_filter_or(default_filter);
    let _ = env_logger::Builder::from_env(env)
        .format(move |buf, r| writeln!(buf, "{program}: {}: {}", r.level(), r.args()))
        .try_init();
}
