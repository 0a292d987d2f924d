//! Image assembly: the kernel, the module tree, the tools with exactly the shared
//! libraries they need, busybox applets, and a manifest, into `vmlinuz` + `initrd.img`.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::apt::{Pkg, apt_resolve_one};
use super::cache_key::tools_key;
use super::command::run;
use super::cpio::Layer;
use super::elf::{elf_info, is_elf};
use super::error::{GuestError, Result, io_err};
use super::modules::add_modules;
use super::store::{Store, find_lib_fetching, resolve_in_tree};
use super::{GUEST_LIBDIR, TOOL_VERSION, TOOLS};

/// Assembles the image into `out`: `vmlinuz`, `initrd.img`. Returns the kernel release and the
/// packages used.
pub(super) fn assemble(
    cache: &Path,
    roots: &[Pkg],
    init: &[u8],
    modules: &[String],
    out: &Path,
) -> Result<(String, Vec<String>)> {
    let mut store = Store::new(cache)?;
    for p in roots {
        store.add(p)?;
    }
    let kpkg = &roots[0];
    let release = kpkg
        .name
        .strip_prefix("linux-image-")
        .unwrap_or(&kpkg.name)
        .to_string();
    if !release.starts_with("6.12") {
        log::warn!("kernel {release} is not 6.12; the recipe was measured on 6.12");
    }
    let kroot = store.root(&kpkg.name).to_path_buf();
    let vmlinuz = kroot.join(format!("boot/vmlinuz-{release}"));
    fs::copy(&vmlinuz, out.join("vmlinuz")).map_err(|e| GuestError::Package {
        package: kpkg.id(),
        detail: format!("cannot copy {}: {e}", vmlinuz.display()),
    })?;

    let mut img = Layer::new();
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "mnt",
        "root",
        "tests",
        "lib64",
        GUEST_LIBDIR,
    ] {
        img.add_dir(d)?;
    }
    img.add_bytes("init", init.to_vec(), 0o755)?;

    // Kernel modules.
    let modroot = out.join("modroot");
    add_modules(&kroot, &kpkg.id(), &release, modules, &modroot)?;
    let mut stack = vec![modroot.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_err(&d))? {
            let e = e.map_err(io_err(&d))?;
            let p = e.path();
            let rel = p
                .strip_prefix(&modroot)
                .expect("under modroot")
                .to_string_lossy()
                .into_owned();
            if p.is_dir() {
                img.add_dir(&rel)?;
                stack.push(p);
            } else {
                img.add_file(&rel, &p, 0o644)?;
            }
        }
    }
    img.add_bytes("etc/guest-modules", modules.join("\n") + "\n", 0o644)?;

    // Tools and their shared libraries.
    add_tools(&mut store, &mut img, TOOLS)?;

    // Busybox applets, where no real binary is installed.
    let bb = store.root("busybox-static").join("bin/busybox");
    let list = run(
        Command::new(&bb).arg("--list-full"),
        "listing busybox applets (busybox-static)",
    )?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "bin/busybox" && !img.contains(applet) {
            img.add_symlink(applet, "/bin/busybox")?;
        }
    }

    let packages: Vec<String> = store.pkgs.values().map(|(p, _)| p.id()).collect();
    img.add_bytes(
        "etc/cbdfw-guest",
        format!(
            "tool {TOOL_VERSION}\nkernel {release}\n{}",
            packages
                .iter()
                .map(|p| format!("package {p}\n"))
                .collect::<String>()
        ),
        0o644,
    )?;
    img.write(&out.join("initrd.img"))?;
    fs::remove_dir_all(&modroot).map_err(io_err(&modroot))?;
    Ok((release, packages))
}

/// Puts each tool's files (`(package, paths)`, packages already in `store`) into `img`,
/// and every shared library they need, transitively, under [`GUEST_LIBDIR`] (plus the ELF
/// interpreter's link).
pub(super) fn add_tools(
    store: &mut Store,
    img: &mut Layer,
    tools: &[(&str, &[&str])],
) -> Result<()> {
    let mut queue: VecDeque<(String, PathBuf, String)> = VecDeque::new();
    for (pkg, files) in tools {
        let root = store.root(pkg).to_path_buf();
        for f in *files {
            let src = resolve_in_tree(&root, f).ok_or_else(|| GuestError::Package {
                package: store.pkgs[*pkg].0.id(),
                detail: format!("has no file {f}"),
            })?;
            let mode = fs::metadata(&src).map_err(io_err(&src))?.mode();
            img.add_file(f, &src, mode)?;
            queue.push_back((f.to_string(), src, pkg.to_string()));
        }
    }
    let mut have: BTreeSet<String> = BTreeSet::new();
    while let Some((guest, src, owner)) = queue.pop_front() {
        let bytes = fs::read(&src).map_err(io_err(&src))?;
        if !is_elf(&bytes) {
            continue;
        }
        let info = elf_info(&bytes).ok_or_else(|| GuestError::Elf {
            path: src.clone(),
            detail: "cannot parse program/section headers".into(),
        })?;
        let mut wanted = info.needed.clone();
        if let Some(interp) = &info.interp {
            let base = interp.rsplit('/').next().unwrap_or(interp).to_string();
            if !img.contains(interp) {
                img.add_symlink(interp, &format!("/{GUEST_LIBDIR}/{base}"))?;
            }
            wanted.push(base);
        }
        for soname in wanted {
            if !have.insert(soname.clone()) {
                continue;
            }
            let (path, pkg) = find_lib_fetching(store, &soname, &info.runpath, &owner)?
                .ok_or_else(|| GuestError::MissingLibrary {
                    binary: guest.clone(),
                    soname: soname.clone(),
                    package: owner.clone(),
                })?;
            log::debug!("{guest}: {soname} from {pkg}");
            img.add_file(&format!("{GUEST_LIBDIR}/{soname}"), &path, 0o755)?;
            queue.push_back((soname, path, pkg));
        }
    }
    Ok(())
}

/// A layer of extra tools for runs that need them and the base image does not carry
/// (e.g. `perf` for the profile bench: tens of MiB every other boot would unpack for
/// nothing). `tools` as [`TOOLS`], each package a spec `apt-cache` resolves (`name`,
/// `name/suite`). Cached in `<cache>/layers/` under the resolved package versions.
pub fn tools_layer(cache: &Path, tools: &[(&str, &[&str])]) -> Result<PathBuf> {
    let mut store = Store::new(cache)?;
    let mut pkgs = Vec::new();
    for (spec, _) in tools {
        let p = apt_resolve_one(spec)?;
        store.add(&p)?;
        pkgs.push(p);
    }
    let dir = cache.join("layers");
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let out = dir.join(format!("{}.cpio.gz", tools_key(&pkgs)));
    if out.is_file() {
        return Ok(out);
    }
    let mut img = Layer::new();
    for d in ["usr/bin", "lib64", GUEST_LIBDIR] {
        img.add_dir(d)?;
    }
    // By package name (the store's key), not by the spec that resolved it.
    let named: Vec<(&str, &[&str])> = pkgs
        .iter()
        .zip(tools)
        .map(|(p, (_, files))| (p.name.as_str(), *files))
        .collect();
    add_tools(&mut store, &mut img, &named)?;
    let tmp = out.with_extension("tmp");
    img.write(&tmp)?;
    fs::rename(&tmp, &out).map_err(io_err(&out))?;
    log::info!(
        "tools layer {} ({})",
        out.display(),
        pkgs.iter().map(Pkg::id).collect::<Vec<_>>().join(" ")
    );
    Ok(out)
}
