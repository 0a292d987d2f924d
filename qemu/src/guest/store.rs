//! The package store: downloaded `.deb`s and their unpacked trees under the cache
//! directory, and shared-library lookup across them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::MAX_DEP_DEPTH;
use super::apt::{Pkg, apt_resolve};
use super::command::run;
use super::error::{GuestError, Result, io_err};

pub(super) struct Store {
    debs: PathBuf,
    trees: PathBuf,
    /// name -> (package, unpacked root)
    pub(super) pkgs: BTreeMap<String, (Pkg, PathBuf)>,
}

fn deb_version_in_filename(v: &str) -> String {
    v.replace(':', "%3a")
}

impl Store {
    pub(super) fn new(cache: &Path) -> Result<Store> {
        let debs = cache.join("debs");
        let trees = cache.join("pkgs");
        for d in [&debs, &trees] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(Store {
            debs,
            trees,
            pkgs: BTreeMap::new(),
        })
    }

    fn find_deb(&self, p: &Pkg) -> Result<Option<PathBuf>> {
        let prefix = format!("{}_{}_", p.name, deb_version_in_filename(&p.version));
        for e in fs::read_dir(&self.debs).map_err(io_err(&self.debs))? {
            let e = e.map_err(io_err(&self.debs))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.ends_with(".deb") {
                return Ok(Some(e.path()));
            }
        }
        Ok(None)
    }

    /// Downloads (if needed) and unpacks (if needed) `p`; returns its unpacked root.
    pub(super) fn add(&mut self, p: &Pkg) -> Result<PathBuf> {
        if let Some((_, root)) = self.pkgs.get(&p.name) {
            return Ok(root.clone());
        }
        let root = self.trees.join(format!(
            "{}_{}",
            p.name,
            deb_version_in_filename(&p.version)
        ));
        if !root.join(".unpacked").exists() {
            let deb = match self.find_deb(p)? {
                Some(d) => d,
                None => {
                    log::info!("downloading {}", p.id());
                    run(
                        Command::new("apt-get")
                            .args(["download", "-q"])
                            .arg(p.id())
                            .current_dir(&self.debs),
                        &format!("downloading package {}", p.id()),
                    )?;
                    self.find_deb(p)?.ok_or_else(|| GuestError::Package {
                        package: p.id(),
                        detail: format!(
                            "apt-get download succeeded but no .deb appeared in {}",
                            self.debs.display()
                        ),
                    })?
                }
            };
            let tmp = root.with_extension("tmp");
            if tmp.exists() {
                fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
            }
            log::info!("unpacking {}", p.id());
            run(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp),
                &format!("unpacking package {}", p.id()),
            )?;
            if root.exists() {
                fs::remove_dir_all(&root).map_err(io_err(&root))?;
            }
            fs::rename(&tmp, &root).map_err(io_err(&root))?;
            fs::write(root.join(".unpacked"), p.id()).map_err(io_err(&root))?;
        }
        self.pkgs.insert(p.name.clone(), (p.clone(), root.clone()));
        Ok(root)
    }

    pub(super) fn root(&self, name: &str) -> &Path {
        &self.pkgs[name].1
    }
}

/// Resolves `rel` inside the unpacked tree `root`, following symlinks (absolute targets are
/// taken relative to `root`). Returns the final path of a regular file, or `None`.
pub(super) fn resolve_in_tree(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut cur = PathBuf::from(rel.trim_start_matches('/'));
    for _ in 0..16 {
        let full = root.join(&cur);
        let md = fs::symlink_metadata(&full).ok()?;
        if md.file_type().is_symlink() {
            let target = fs::read_link(&full).ok()?;
            let next = if target.is_absolute() {
                target.strip_prefix("/").ok()?.to_path_buf()
            } else {
                cur.parent().unwrap_or(Path::new("")).join(target)
            };
            // Normalise `..` components lexically.
            let mut norm = PathBuf::new();
            for c in next.components() {
                match c {
                    std::path::Component::ParentDir => {
                        norm.pop();
                    }
                    std::path::Component::Normal(s) => norm.push(s),
                    _ => {}
                }
            }
            cur = norm;
            continue;
        }
        return md.is_file().then_some(full);
    }
    None
}

/// Finds `soname` in the library directories of the unpacked packages (plus `runpath`).
fn find_lib(store: &Store, soname: &str, runpath: &[String]) -> Option<(PathBuf, String)> {
    let mut dirs: Vec<String> = [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib64",
        "usr/lib64",
        "lib",
        "usr/lib",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    dirs.extend(
        runpath
            .iter()
            .filter(|r| r.starts_with('/'))
            .map(|r| r.trim_start_matches('/').to_string()),
    );
    for (name, (_, root)) in &store.pkgs {
        for d in &dirs {
            if let Some(p) = resolve_in_tree(root, &format!("{d}/{soname}")) {
                return Some((p, name.clone()));
            }
        }
    }
    None
}

/// Finds `soname`, downloading dependencies of `owner` level by level until it appears.
pub(super) fn find_lib_fetching(
    store: &mut Store,
    soname: &str,
    runpath: &[String],
    owner: &str,
) -> Result<Option<(PathBuf, String)>> {
    if let Some(hit) = find_lib(store, soname, runpath) {
        return Ok(Some(hit));
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut level: Vec<String> = vec![owner.to_string()];
    for _ in 0..MAX_DEP_DEPTH {
        let mut next: Vec<(String, Option<String>)> = Vec::new();
        for n in &level {
            if let Some((p, _)) = store.pkgs.get(n) {
                next.extend(p.depends.iter().cloned());
            }
        }
        next.retain(|(n, _)| seen.insert(n.clone()));
        if next.is_empty() {
            break;
        }
        let missing: Vec<String> = next
            .iter()
            .filter(|(n, _)| !store.pkgs.contains_key(n))
            .map(|(n, v)| match v {
                Some(v) => format!("{n}={v}"),
                None => n.clone(),
            })
            .collect();
        for p in apt_resolve(&missing)? {
            store.add(&p)?;
        }
        if let Some(hit) = find_lib(store, soname, runpath) {
            return Ok(Some(hit));
        }
        level = next.into_iter().map(|(n, _)| n).collect();
    }
    Ok(None)
}
