//! Linux guest image: a reproducible kernel + initramfs built only from Debian packages.
//!
//! The guest is the CBD *host* side (a Linux VM on the same shared memory as the cbdfw backend).
//! [`ensure_image`] resolves the package versions through apt, downloads the `.deb`s with
//! `apt-get download`, unpacks them with `dpkg-deb -x`, and assembles an initramfs
//! (busybox, cxl/ndctl/daxctl, fio, mkfs.ext4/fsck.ext4 with exactly the shared libraries they
//! need, and a chosen set of decompressed kernel modules with a `depmod` index). The result lives in
//! a cache directory under a key derived from every input, so a second call is a no-op.
//!
//! Per-test files (scripts, the host binary) go into a second, small initramfs [`Layer`]; the
//! kernel unpacks concatenated archives in order, so the base image is never rebuilt for a test.
//! See `docs/guest.md` for the why of each step.
//!
//! Rooms: [`apt`] (package resolution), `store.rs` (the .deb store and library lookup),
//! [`elf`], [`modules`] (kernel modules), [`cpio`] (initramfs layers), [`cache_key`],
//! `assemble.rs` (putting the image together), [`host_bin`] (the static `cbd-host`),
//! [`qemu_args`], `command.rs` (running apt, dpkg-deb, depmod…); this file holds the
//! inputs, the cache and [`ensure_image`].

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

pub mod apt;
mod assemble;
pub mod cache_key;
mod command;
pub mod cpio;
pub mod elf;
pub mod error;
pub mod host_bin;
pub mod modules;
pub mod qemu_args;
mod store;

pub use apt::{Pkg, parse_apt_show, parse_depends, resolve_root_packages};
pub use cache_key::cache_key;
pub use cpio::Layer;
pub use elf::{ElfInfo, elf_info, elf_section, is_elf};
pub use error::GuestError;
pub use host_bin::{HOST_GUEST_PATH, HOST_TARGET, add_host_binary, build_host_binary};
pub use modules::{module_deps, parse_module_list};
pub use qemu_args::qemu_args;

use apt::apt_resolve;
use assemble::assemble;
pub use assemble::tools_layer;
use error::{Result, io_err};

/// Bumped whenever the assembly logic changes in a way that changes the image.
pub const TOOL_VERSION: &str = "cbdfw-guest-image/1";

/// The kernel: Debian's `linux-image-amd64` metapackage from this suite (6.12 in bookworm-backports).
pub const KERNEL_META: &str = "linux-image-amd64";
/// Suite the kernel comes from.
pub const KERNEL_SUITE: &str = "bookworm-backports";

/// Userspace packages and the files taken from each (paths inside the package = paths in the guest).
/// Symlinks are followed; ELF files get their shared libraries resolved.
pub const TOOLS: &[(&str, &[&str])] = &[
    ("busybox-static", &["bin/busybox"]),
    ("ndctl", &["usr/bin/ndctl", "usr/bin/cxl"]),
    ("daxctl", &["usr/bin/daxctl"]),
    ("fio", &["usr/bin/fio"]),
    (
        "e2fsprogs",
        &[
            "sbin/mke2fs",
            "sbin/mkfs.ext4",
            "sbin/e2fsck",
            "sbin/fsck.ext4",
            "sbin/debugfs",
            "etc/mke2fs.conf",
        ],
    ),
    // Discard and write-zeroes from user space (busybox has no `blkdiscard -z` nor
    // `fallocate -p`): the paired test pair-discard.
    (
        "util-linux",
        &["sbin/blkdiscard", "sbin/fstrim", "usr/bin/fallocate"],
    ),
];

/// Tools only the profile bench takes, in a layer of their own ([`tools_layer`]): `perf`
/// from the kernel's suite (the same 6.12 as the guest's kernel).
pub const PROFILE_TOOLS: &[(&str, &[&str])] =
    &[("linux-perf/bookworm-backports", &["usr/bin/perf"])];

/// Directory (in the guest) where every resolved shared library is placed.
const GUEST_LIBDIR: &str = "lib/x86_64-linux-gnu";
/// How many dependency levels below a binary's package are searched for a missing library.
const MAX_DEP_DEPTH: usize = 4;

/// A built guest image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel (`bzImage`), for QEMU `-kernel`.
    pub kernel: PathBuf,
    /// The base initramfs (gzip'd newc cpio), for QEMU `-initrd` (see [`GuestImage::initrd_with`]).
    pub initrd: PathBuf,
    /// `uname -r` of the kernel, e.g. `6.12.95+deb12-amd64`.
    pub kernel_release: String,
    /// Every package that went into the image, as `name=version`.
    pub packages: Vec<String>,
    /// The image directory (`<cache>/images/<key>`).
    pub dir: PathBuf,
}

impl GuestImage {
    /// Writes `out` = base initrd followed by `layers` (each a gzip'd cpio, e.g. from
    /// [`Layer::write`]). The kernel unpacks them in order; later files replace earlier ones.
    pub fn initrd_with(&self, layers: &[&Path], out: &Path) -> Result<()> {
        let mut w = BufWriter::new(fs::File::create(out).map_err(io_err(out))?);
        for p in std::iter::once(self.initrd.as_path()).chain(layers.iter().copied()) {
            let mut r = fs::File::open(p).map_err(io_err(p))?;
            io::copy(&mut r, &mut w).map_err(io_err(out))?;
        }
        w.flush().map_err(io_err(out))
    }
}

/// `<workspace>/.cache/guest`, or `$CBDFW_GUEST_CACHE` if set.
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("CBDFW_GUEST_CACHE") {
        Some(p) => PathBuf::from(p),
        None => crate::workspace_root().join(".cache").join("guest"),
    }
}

/// `<workspace>/qemu/guest`: the `init` script and the `modules` list.
pub fn guest_data_dir() -> PathBuf {
    crate::data_dir().join("guest")
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io_err(path))
}

/// Builds (or finds in `cache_dir`) the guest image. A second call with unchanged inputs only
/// resolves versions through `apt-cache` and returns the cached paths.
pub fn ensure_image(cache_dir: &Path) -> Result<GuestImage> {
    fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    // Serialise concurrent builders (parallel tests, two terminals).
    let lock_path = cache_dir.join("lock");
    let lock = fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;

    let data = guest_data_dir();
    let init = read_input(&data.join("init"))?;
    let modules_text = read_input(&data.join("modules"))?;
    let roots = resolve_root_packages()?;
    let key = cache_key(&roots, &init, &modules_text);
    let dir = cache_dir.join("images").join(&key);

    if let Some(img) = load_cached(&dir)? {
        log::info!("guest image up to date: {}", dir.display());
        return Ok(img);
    }
    log::info!("building guest image {key}");
    let tmp = cache_dir.join("images").join(format!("{key}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let modules = parse_module_list(&String::from_utf8_lossy(&modules_text));
    let (release, packages) = assemble(cache_dir, &roots, &init, &modules, &tmp)?;
    let manifest = format!(
        "tool {TOOL_VERSION}\nkernel {release}\n{}",
        packages
            .iter()
            .map(|p| format!("package {p}\n"))
            .collect::<String>()
    );
    fs::write(tmp.join("manifest.txt"), manifest).map_err(io_err(&tmp))?;
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    drop(lock);
    load_cached(&dir)?.ok_or_else(|| GuestError::Input {
        detail: format!(
            "image in {} incomplete right after building it",
            dir.display()
        ),
    })
}

/// Reads a finished image directory; `None` if absent, incomplete, or if a dependency package
/// (recorded in its manifest) now resolves to a different version.
fn load_cached(dir: &Path) -> Result<Option<GuestImage>> {
    let manifest = match fs::read_to_string(dir.join("manifest.txt")) {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    if !kernel.is_file() || !initrd.is_file() {
        return Ok(None);
    }
    let mut release = String::new();
    let mut packages = Vec::new();
    for l in manifest.lines() {
        if let Some(r) = l.strip_prefix("kernel ") {
            release = r.to_string();
        } else if let Some(p) = l.strip_prefix("package ") {
            packages.push(p.to_string());
        }
    }
    let names: Vec<String> = packages
        .iter()
        .filter_map(|p| p.split('=').next().map(str::to_string))
        .collect();
    let now: BTreeSet<String> = apt_resolve(&names)?.iter().map(Pkg::id).collect();
    // The kernel is pinned by the key (resolved from backports), not by the default candidate.
    if let Some(stale) = packages
        .iter()
        .find(|p| !p.starts_with("linux-image-") && !now.contains(*p))
    {
        log::info!("guest image {} is stale: {stale} changed", dir.display());
        return Ok(None);
    }
    Ok(Some(GuestImage {
        kernel,
        initrd,
        kernel_release: release,
        packages,
        dir: dir.to_path_buf(),
    }))
}
