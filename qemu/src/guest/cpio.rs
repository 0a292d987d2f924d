//! Initramfs layers and the newc cpio writer.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::command::cmd_string;
use super::error::{GuestError, Result, io_err};

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { src: Src, mode: u32 },
    Symlink(String),
}

#[derive(Debug, Clone)]
enum Src {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// A set of files for an initramfs archive (the base image, or a per-test layer on top of it).
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: BTreeMap<String, Entry>,
}

fn guest_rel(path: &str) -> Result<String> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(GuestError::Input {
            detail: format!("invalid guest path {path:?}"),
        });
    }
    Ok(rel.to_string())
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    fn insert(&mut self, path: &str, e: Entry) -> Result<()> {
        let rel = guest_rel(path)?;
        let mut parent = Path::new(&rel).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(rel, e);
        Ok(())
    }

    /// Adds a directory (and its parents).
    pub fn add_dir(&mut self, path: &str) -> Result<()> {
        self.insert(path, Entry::Dir)
    }

    /// Adds a file with the given contents and permission bits.
    pub fn add_bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Result<()> {
        self.insert(
            path,
            Entry::File {
                src: Src::Bytes(data.into()),
                mode: mode & 0o7777,
            },
        )
    }

    /// Adds a copy of the host file `src` (read when the layer is written).
    pub fn add_file(&mut self, path: &str, src: &Path, mode: u32) -> Result<()> {
        if !src.is_file() {
            return Err(GuestError::Input {
                detail: format!("{} is not a file (for guest path {path})", src.display()),
            });
        }
        self.insert(
            path,
            Entry::File {
                src: Src::Host(src.to_path_buf()),
                mode: mode & 0o7777,
            },
        )
    }

    /// Adds a symlink.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.insert(path, Entry::Symlink(target.to_string()))
    }

    /// Adds `/tests/NAME.sh`, which `/init` runs when the kernel command line has `test=NAME`.
    pub fn add_test_script(&mut self, name: &str, script: &str) -> Result<()> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(GuestError::Input {
                detail: format!("invalid test name {name:?} (use [A-Za-z0-9_-])"),
            });
        }
        self.add_bytes(&format!("tests/{name}.sh"), script, 0o755)
    }

    pub(super) fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// Writes the layer as a gzip'd newc cpio archive. Output is deterministic (sorted names,
    /// mtime 0, uid/gid 0, `gzip -n`).
    pub fn write(&self, out: &Path) -> Result<()> {
        let tmp = out.with_extension("partial");
        let f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut cmd = Command::new("gzip");
        cmd.args(["-n", "-6", "-c"]).stdin(Stdio::piped()).stdout(f);
        let mut child = cmd.spawn().map_err(|e| GuestError::Command {
            what: "compressing the initramfs".into(),
            cmd: cmd_string(&cmd),
            detail: e.to_string(),
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let res = self.write_cpio(BufWriter::with_capacity(1 << 20, stdin));
        let status = child.wait().map_err(io_err(&tmp))?;
        res?;
        if !status.success() {
            return Err(GuestError::Command {
                what: "compressing the initramfs".into(),
                cmd: cmd_string(&cmd),
                detail: status.to_string(),
            });
        }
        fs::rename(&tmp, out).map_err(io_err(out))
    }

    /// Writes the uncompressed newc archive to `w`.
    pub fn write_cpio<W: Write>(&self, mut w: W) -> Result<()> {
        let werr = |e: io::Error| GuestError::Io {
            path: PathBuf::from("<cpio stream>"),
            source: e,
        };
        for (ino, (name, e)) in (1u32..).zip(self.entries.iter()) {
            let (mode, data): (u32, Vec<u8>) = match e {
                Entry::Dir => (0o040755, Vec::new()),
                Entry::Symlink(t) => (0o120777, t.as_bytes().to_vec()),
                Entry::File { src, mode } => {
                    let data = match src {
                        Src::Bytes(b) => b.clone(),
                        Src::Host(p) => fs::read(p).map_err(io_err(p))?,
                    };
                    (0o100000 | mode, data)
                }
            };
            let nlink = if matches!(e, Entry::Dir) { 2 } else { 1 };
            cpio_entry(&mut w, ino, mode, nlink, name, &data).map_err(werr)?;
        }
        cpio_entry(&mut w, 0, 0, 1, "TRAILER!!!", &[]).map_err(werr)?;
        w.flush().map_err(werr)
    }
}

fn cpio_entry<W: Write>(
    w: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let hdr = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0,
        0,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        0
    );
    w.write_all(hdr.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    let pad = |n: usize| (4 - n % 4) % 4;
    w.write_all(&[0u8; 3][..pad(110 + namesize)])?;
    w.write_all(data)?;
    w.write_all(&[0u8; 3][..pad(data.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_newc_layout() {
        let mut l = Layer::new();
        l.add_bytes("/tests/a.sh", "echo hi\n", 0o755).unwrap();
        let mut v = Vec::new();
        l.write_cpio(&mut v).unwrap();
        // tests (dir), tests/a.sh, trailer; every header is 4-byte aligned.
        assert!(v.starts_with(b"070701"));
        let s = String::from_utf8_lossy(&v);
        let first = s.find("tests\0").unwrap();
        let second = s.find("tests/a.sh\0").unwrap();
        assert!(first < second);
        assert_eq!((second - 110) % 4, 0);
        assert!(s.contains("echo hi\n"));
        assert!(s.contains("TRAILER!!!"));
        assert_eq!(v.len() % 4, 0);
        // mode of a.sh: regular file 0755
        let hdr = &s[second - 110..second];
        assert_eq!(&hdr[14..22], "000081ed");
    }

    #[test]
    fn bad_guest_paths_rejected() {
        let mut l = Layer::new();
        assert!(l.add_bytes("../etc/x", "", 0o644).is_err());
        assert!(l.add_bytes("", "", 0o644).is_err());
        assert!(l.add_test_script("a b", "").is_err());
    }
}
