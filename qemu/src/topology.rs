//! QEMU topologies: data files in `qemu/topologies/NAME.args`, one option per line
//! (`-option value`), with `${VAR}` placeholders for the shared backing file and sizes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::vm::QemuCmd;

/// A topology with its variables resolved.
#[derive(Clone, Debug)]
pub struct Topology {
    pub name: String,
    /// Replacement for the default `-machine` value, if the topology sets one.
    pub machine: Option<String>,
    pub args: Vec<String>,
    /// The shared backing file (created sparse if missing).
    pub shm: PathBuf,
    pub size_mib: u64,
}

/// Settings a topology is instantiated with.
#[derive(Clone, Debug)]
pub struct SharedFile {
    pub path: PathBuf,
    pub size_mib: u64,
}

impl SharedFile {
    /// Default backing file for a topology: `/dev/shm/cbdfw-NAME.raw`, 1 GiB
    /// (a CBD transport needs at least 512 MiB).
    pub fn default_for(name: &str) -> SharedFile {
        SharedFile {
            path: PathBuf::from(format!("/dev/shm/cbdfw-{name}.raw")),
            size_mib: 1024,
        }
    }
}

/// `qemu/topologies`.
pub fn dir() -> PathBuf {
    crate::data_dir().join("topologies")
}

/// Names of the available topologies.
pub fn available() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".args")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn substitute(line: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {line:?}"))?;
        let key = &after[..j];
        let v = vars
            .get(key)
            .ok_or_else(|| format!("unknown variable ${{{key}}} in {line:?}"))?;
        out.push_str(v);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parse topology text (separate from file access for tests).
pub fn parse(name: &str, text: &str, shared: &SharedFile) -> Result<Topology, String> {
    if shared.size_mib == 0 || !shared.size_mib.is_multiple_of(256) {
        return Err(format!(
            "shared size {} MiB must be a non-zero multiple of 256 MiB (CXL memdev rule)",
            shared.size_mib
        ));
    }
    let mut vars = BTreeMap::new();
    vars.insert("SHM", shared.path.display().to_string());
    vars.insert("LSA", format!("{}.lsa", shared.path.display()));
    vars.insert("SIZE_MIB", shared.size_mib.to_string());
    // Fixed memory window: a multiple of 256 MiB at least as large as the memdev.
    vars.insert(
        "WINDOW_GIB",
        shared
            .size_mib
            .div_ceil(1024)
            .max(1)
            .next_power_of_two()
            .to_string(),
    );
    let mut t = Topology {
        name: name.into(),
        machine: None,
        args: Vec::new(),
        shm: shared.path.clone(),
        size_mib: shared.size_mib,
    };
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = substitute(line, &vars).map_err(|e| format!("{name}.args:{}: {e}", n + 1))?;
        let (opt, val) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        if !opt.starts_with('-') {
            return Err(format!(
                "{name}.args:{}: expected \"-option value\", got {line:?}",
                n + 1
            ));
        }
        if opt == "-machine" {
            t.machine = Some(val.trim().to_string());
            continue;
        }
        t.args.push(opt.to_string());
        if !val.trim().is_empty() {
            t.args.push(val.trim().to_string());
        }
    }
    Ok(t)
}

/// Load `qemu/topologies/NAME.args`.
pub fn load(name: &str, shared: &SharedFile) -> Result<Topology, String> {
    let path = dir().join(format!("{name}.args"));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        format!(
            "unknown topology {name:?} (available: {})",
            available().join(", ")
        )
    })?;
    parse(name, &text, shared)
}

impl Topology {
    /// Create the backing file(s) sparse at the right size if needed.
    pub fn prepare_files(&self) -> Result<(), String> {
        let size = self.size_mib << 20;
        ensure_file(&self.shm, size)?;
        if self.args.iter().any(|a| a.contains(".lsa")) {
            ensure_file(Path::new(&format!("{}.lsa", self.shm.display())), 1 << 20)?;
        }
        Ok(())
    }

    /// Append to a QEMU command line (the caller sets `-machine` from `machine`).
    pub fn apply(&self, q: &mut QemuCmd) {
        q.args(self.args.iter().cloned());
    }
}

/// Create `p` sparse with at least `size` bytes (never shrinks it).
pub fn ensure_file(p: &Path, size: u64) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(p)
        .map_err(|e| format!("cannot create shared file {}: {e}", p.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len < size {
        f.set_len(size)
            .map_err(|e| format!("cannot size {}: {e}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_topologies_parse() {
        let s = SharedFile {
            path: "/dev/shm/x.raw".into(),
            size_mib: 1024,
        };
        for name in ["cxl", "cxl2rp", "ivshmem"] {
            let t = load(name, &s).unwrap();
            assert!(
                t.args
                    .iter()
                    .any(|a| a.contains("mem-path=/dev/shm/x.raw,size=1024M")),
                "{name}: {:?}",
                t.args
            );
            assert!(t.args.iter().all(|a| !a.contains("${")));
        }
        assert_eq!(
            load("cxl", &s).unwrap().machine.as_deref(),
            Some("q35,cxl=on")
        );
        assert!(
            load("cxl2rp", &s)
                .unwrap()
                .args
                .iter()
                .filter(|a| a.starts_with("cxl-rp,"))
                .count()
                == 2
        );
        assert!(
            load("cxl", &s)
                .unwrap()
                .args
                .iter()
                .any(|a| a.ends_with("size=1G"))
        );
    }

    #[test]
    fn errors_are_clear() {
        let s = SharedFile {
            path: "/x".into(),
            size_mib: 1024,
        };
        assert!(load("nope", &s).unwrap_err().contains("available: "));
        assert!(
            parse("t", "-object ${NOPE}", &s)
                .unwrap_err()
                .contains("unknown variable")
        );
        assert!(
            parse("t", "object x", &s)
                .unwrap_err()
                .contains("-option value")
        );
        let bad = SharedFile {
            path: "/x".into(),
            size_mib: 100,
        };
        assert!(
            parse("t", "", &bad)
                .unwrap_err()
                .contains("multiple of 256")
        );
    }
}
