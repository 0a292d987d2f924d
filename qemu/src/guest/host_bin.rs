//! The host program (crate `host`) as a static binary, for the guest.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::command::run;
use super::cpio::Layer;
use super::elf::elf_info;
use super::error::{GuestError, Result, io_err};

/// Target triple the host program is built for (statically linked with `+crt-static`).
pub const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Path of the host program inside the guest when added by [`add_host_binary`].
pub const HOST_GUEST_PATH: &str = "usr/bin/cbd-host";

/// Builds the `host` crate as a static binary (release profile) and returns its path:
/// `cargo build -p host --release --target x86_64-unknown-linux-gnu` with
/// `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"`.
pub fn build_host_binary() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "host", "--release", "--target", HOST_TARGET])
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .current_dir(&root);
    run(&mut cmd, "building the host program (crate host)")?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target_dir
        .join(HOST_TARGET)
        .join("release")
        .join("cbd-host");
    let bytes = fs::read(&bin).map_err(io_err(&bin))?;
    match elf_info(&bytes) {
        Some(i) if i.interp.is_none() && i.needed.is_empty() => Ok(bin),
        Some(i) => Err(GuestError::Elf {
            path: bin,
            detail: format!(
                "host binary is not static (interp {:?}, needs {:?})",
                i.interp, i.needed
            ),
        }),
        None => Err(GuestError::Elf {
            path: bin,
            detail: "not an ELF64 file".into(),
        }),
    }
}

/// Adds the host binary (from [`build_host_binary`]) to `layer` at [`HOST_GUEST_PATH`].
pub fn add_host_binary(layer: &mut Layer, bin: &Path) -> Result<()> {
    layer.add_file(HOST_GUEST_PATH, bin, 0o755)
}
