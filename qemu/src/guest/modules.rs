//! Kernel modules: the `modules` list, `.modinfo` dependencies, and the module tree
//! (decompressed, with a `depmod` index) that goes into the image.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::command::run;
use super::elf::elf_section;
use super::error::{GuestError, Result, io_err};

/// Parses the `modules` data file: one module name per line, `#` comments.
pub fn parse_module_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.replace('-', "_"))
        .collect()
}

/// Module names a kernel module depends on: `depends=` plus `softdep=pre:` entries of `.modinfo`.
pub fn module_deps(ko: &[u8]) -> Option<Vec<String>> {
    let mi = elf_section(ko, ".modinfo")?;
    let mut deps = Vec::new();
    for kv in mi.split(|&c| c == 0) {
        let kv = String::from_utf8_lossy(kv);
        if let Some(d) = kv.strip_prefix("depends=") {
            deps.extend(d.split(',').filter(|s| !s.is_empty()).map(str::to_string));
        } else if let Some(sd) = kv.strip_prefix("softdep=") {
            let mut pre = false;
            for w in sd.split_whitespace() {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    m if pre => deps.push(m.to_string()),
                    _ => {}
                }
            }
        }
    }
    Some(deps)
}

/// Decompresses `wanted` modules and their dependencies from the kernel package tree into
/// `modroot/lib/modules/<release>/…`, then runs `depmod -b modroot`.
pub(super) fn add_modules(
    kroot: &Path,
    kpkg: &str,
    release: &str,
    wanted: &[String],
    modroot: &Path,
) -> Result<()> {
    let moddir_rel = format!("lib/modules/{release}");
    let kmod = kroot.join(&moddir_rel);
    if !kmod.is_dir() {
        return Err(GuestError::Package {
            package: kpkg.to_string(),
            detail: format!("has no {moddir_rel}"),
        });
    }
    // name (with '_') -> path relative to the module dir, of every module in the package.
    let mut index: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut stack = vec![kmod.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_err(&d))? {
            let p = e.map_err(io_err(&d))?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let fname = p.file_name().unwrap_or_default().to_string_lossy();
            for ext in [".ko.xz", ".ko.zst", ".ko.gz", ".ko"] {
                if let Some(stem) = fname.strip_suffix(ext) {
                    index.insert(
                        stem.replace('-', "_"),
                        p.strip_prefix(&kmod).expect("under kmod").to_path_buf(),
                    );
                    break;
                }
            }
        }
    }
    let builtin: BTreeSet<String> = fs::read_to_string(kmod.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|n| n.trim_end_matches(".ko").replace('-', "_"))
        .collect();

    let out = modroot.join(&moddir_rel);
    fs::create_dir_all(&out).map_err(io_err(&out))?;
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<(String, bool)> = wanted.iter().map(|m| (m.clone(), true)).collect();
    while let Some((m, explicit)) = todo.pop() {
        let m = m.replace('-', "_");
        if !done.insert(m.clone()) {
            continue;
        }
        let Some(rel) = index.get(&m) else {
            if builtin.contains(&m) {
                log::debug!("module {m} is built into the kernel");
                continue;
            }
            if explicit {
                return Err(GuestError::Module {
                    module: m,
                    detail: format!("not in package {kpkg} (and not built in)"),
                });
            }
            log::debug!("soft dependency {m} not found, skipped");
            continue;
        };
        let src = kmod.join(rel);
        let ko = decompress(&src).map_err(|detail| GuestError::Module {
            module: m.clone(),
            detail,
        })?;
        let deps = module_deps(&ko).ok_or_else(|| GuestError::Module {
            module: m.clone(),
            detail: format!("{} has no readable .modinfo", src.display()),
        })?;
        let name = rel.to_string_lossy();
        let name = name
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .trim_end_matches(".gz");
        let dst = out.join(name);
        fs::create_dir_all(dst.parent().expect("has parent")).map_err(io_err(&dst))?;
        fs::write(&dst, &ko).map_err(io_err(&dst))?;
        todo.extend(deps.into_iter().map(|d| (d, false)));
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let src = kmod.join(f);
        if src.is_file() {
            fs::copy(&src, out.join(f)).map_err(io_err(&src))?;
        }
    }
    run(
        Command::new("depmod").arg("-b").arg(modroot).arg(release),
        "indexing kernel modules (depmod, package kmod)",
    )?;
    Ok(())
}

fn decompress(path: &Path) -> std::result::Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let prog = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        let mut v = Vec::new();
        fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut v))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(v);
    };
    let out = run(
        Command::new(prog).arg("-dc").arg(path),
        &format!("decompressing {}", path.display()),
    )
    .map_err(|e| e.to_string())?;
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_parsing() {
        assert_eq!(
            parse_module_list("# c\nublk_drv\n\n virtio-blk # x\n"),
            ["ublk_drv", "virtio_blk"]
        );
    }
}
