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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
            "etc/mke2fs.conf",
        ],
    ),
];

/// Directory (in the guest) where every resolved shared library is placed.
const GUEST_LIBDIR: &str = "lib/x86_64-linux-gnu";
/// How many dependency levels below a binary's package are searched for a missing library.
const MAX_DEP_DEPTH: usize = 4;

/// Errors of the guest image tooling; each says which package, command or file failed.
#[derive(Debug)]
pub enum GuestError {
    /// An external command could not be started or exited unsuccessfully.
    Command {
        what: String,
        cmd: String,
        detail: String,
    },
    /// A file system operation failed.
    Io { path: PathBuf, source: io::Error },
    /// A package could not be resolved, downloaded or unpacked, or lacks an expected file.
    Package { package: String, detail: String },
    /// A shared library needed by a binary was not found in its package's dependencies.
    MissingLibrary {
        binary: String,
        soname: String,
        package: String,
    },
    /// A kernel module could not be found or read.
    Module { module: String, detail: String },
    /// A file that should be ELF could not be parsed.
    Elf { path: PathBuf, detail: String },
    /// Bad input (a layer path, an input data file).
    Input { detail: String },
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::Command { what, cmd, detail } => {
                write!(f, "{what}: command `{cmd}` failed: {detail}")
            }
            GuestError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            GuestError::Package { package, detail } => write!(f, "package {package}: {detail}"),
            GuestError::MissingLibrary {
                binary,
                soname,
                package,
            } => write!(
                f,
                "{binary} (package {package}) needs {soname}, which is in none of the packages \
                 it depends on (searched {MAX_DEP_DEPTH} levels)"
            ),
            GuestError::Module { module, detail } => write!(f, "kernel module {module}: {detail}"),
            GuestError::Elf { path, detail } => write!(f, "{}: bad ELF: {detail}", path.display()),
            GuestError::Input { detail } => write!(f, "{detail}"),
        }
    }
}

impl std::error::Error for GuestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GuestError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, GuestError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GuestError + '_ {
    move |source| GuestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

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

// ---------------------------------------------------------------------------------------------
// Commands and apt
// ---------------------------------------------------------------------------------------------

fn cmd_string(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd`, capturing its output; a start failure or non-zero exit is an error naming `what`.
fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| GuestError::Command {
            what: what.to_string(),
            cmd: cmd_string(cmd),
            detail: if e.kind() == io::ErrorKind::NotFound {
                format!("{e} (is the program installed? see docs/guest.md for the host packages)")
            } else {
                e.to_string()
            },
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(GuestError::Command {
            what: what.to_string(),
            cmd: cmd_string(cmd),
            detail: format!("{}; stderr: {}", out.status, tail.join(" | ")),
        });
    }
    Ok(out)
}

/// One package version as apt sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    /// Depends + Pre-Depends: first alternative of each, with its `(= version)` if exact.
    pub depends: Vec<(String, Option<String>)>,
}

impl Pkg {
    fn id(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// Parses a Debian dependency field: first alternative of each clause, arch qualifier removed,
/// exact `(= v)` versions kept.
pub fn parse_depends(field: &str) -> Vec<(String, Option<String>)> {
    field
        .split(',')
        .filter_map(|clause| {
            let alt = clause.split('|').next()?.trim();
            if alt.is_empty() {
                return None;
            }
            let (name, rest) = match alt.find([' ', '(']) {
                Some(i) => (&alt[..i], alt[i..].trim()),
                None => (alt, ""),
            };
            let name = name.split(':').next().unwrap_or(name).to_string();
            let exact = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.trim().strip_prefix('='))
                .map(|v| v.trim().to_string());
            Some((name, exact))
        })
        .collect()
}

/// Parses `apt-cache show` output (RFC822-like stanzas).
pub fn parse_apt_show(text: &str) -> Vec<Pkg> {
    let mut pkgs = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: HashMap<&str, String> = HashMap::new();
        let mut last: Option<&str> = None;
        for line in stanza.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(v) = last.and_then(|k| fields.get_mut(k)) {
                    v.push_str(line);
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k, v.trim().to_string());
                last = Some(k);
            }
        }
        let (Some(name), Some(version)) = (fields.get("Package"), fields.get("Version")) else {
            continue;
        };
        let mut depends = Vec::new();
        for k in ["Pre-Depends", "Depends"] {
            if let Some(v) = fields.get(k) {
                depends.extend(parse_depends(v));
            }
        }
        pkgs.push(Pkg {
            name: name.clone(),
            version: version.clone(),
            depends,
        });
    }
    pkgs
}

/// Resolves each spec (`name`, `name=version` or `name/suite`) to the version apt would install.
/// Specs that apt cannot resolve (virtual packages) are missing from the result.
fn apt_resolve(specs: &[String]) -> Result<Vec<Pkg>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = Command::new("apt-cache");
    cmd.arg("show").arg("--no-all-versions").args(specs);
    // apt-cache exits non-zero if *any* spec is unknown; keep what it did print.
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| GuestError::Command {
            what: "resolving package versions".into(),
            cmd: cmd_string(&cmd),
            detail: e.to_string(),
        })?;
    Ok(parse_apt_show(&String::from_utf8_lossy(&out.stdout)))
}

fn apt_resolve_one(spec: &str) -> Result<Pkg> {
    let name = spec.split(['=', '/']).next().unwrap_or(spec);
    apt_resolve(&[spec.to_string()])?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| GuestError::Package {
            package: spec.to_string(),
            detail: "apt-cache knows no such package/version (run `apt-get update`; the kernel \
                     needs bookworm-backports in the apt sources)"
                .into(),
        })
}

/// The root packages: the kernel image (from [`KERNEL_SUITE`]), [`TOOLS`], and libc6 (ld.so).
pub fn resolve_root_packages() -> Result<Vec<Pkg>> {
    let meta = apt_resolve_one(&format!("{KERNEL_META}/{KERNEL_SUITE}"))?;
    let (kname, kver) = meta
        .depends
        .iter()
        .find(|(n, _)| n.starts_with("linux-image-"))
        .ok_or_else(|| GuestError::Package {
            package: meta.id(),
            detail: "metapackage does not depend on a linux-image-* package".into(),
        })?;
    let kspec = match kver {
        Some(v) => format!("{kname}={v}"),
        None => format!("{kname}/{KERNEL_SUITE}"),
    };
    let mut roots = vec![apt_resolve_one(&kspec)?];
    for name in TOOLS
        .iter()
        .map(|(n, _)| *n)
        .chain(std::iter::once("libc6"))
    {
        roots.push(apt_resolve_one(name)?);
    }
    Ok(roots)
}

// ---------------------------------------------------------------------------------------------
// Package store: downloaded .debs and their unpacked trees under the cache directory
// ---------------------------------------------------------------------------------------------

struct Store {
    debs: PathBuf,
    trees: PathBuf,
    /// name -> (package, unpacked root)
    pkgs: BTreeMap<String, (Pkg, PathBuf)>,
}

fn deb_version_in_filename(v: &str) -> String {
    v.replace(':', "%3a")
}

impl Store {
    fn new(cache: &Path) -> Result<Store> {
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
    fn add(&mut self, p: &Pkg) -> Result<PathBuf> {
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

    fn root(&self, name: &str) -> &Path {
        &self.pkgs[name].1
    }
}

/// Resolves `rel` inside the unpacked tree `root`, following symlinks (absolute targets are
/// taken relative to `root`). Returns the final path of a regular file, or `None`.
fn resolve_in_tree(root: &Path, rel: &str) -> Option<PathBuf> {
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

// ---------------------------------------------------------------------------------------------
// ELF (just enough: interpreter, DT_NEEDED, DT_RUNPATH, a section by name)
// ---------------------------------------------------------------------------------------------

/// What the image builder needs to know about an ELF file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// PT_INTERP (e.g. `/lib64/ld-linux-x86-64.so.2`); `None` for static binaries.
    pub interp: Option<String>,
    /// DT_NEEDED sonames.
    pub needed: Vec<String>,
    /// DT_RUNPATH / DT_RPATH entries.
    pub runpath: Vec<String>,
}

fn rd<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}
fn u16at(b: &[u8], off: usize) -> Option<u64> {
    rd::<2>(b, off).map(|x| u16::from_le_bytes(x) as u64)
}
fn u32at(b: &[u8], off: usize) -> Option<u64> {
    rd::<4>(b, off).map(|x| u32::from_le_bytes(x) as u64)
}
fn u64at(b: &[u8], off: usize) -> Option<u64> {
    rd::<8>(b, off).map(u64::from_le_bytes)
}
fn cstr(b: &[u8], off: usize) -> Option<String> {
    let s = b.get(off..)?;
    let end = s.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&s[..end]).into_owned())
}

/// Is this an ELF64 little-endian file?
pub fn is_elf(b: &[u8]) -> bool {
    b.len() >= 64 && &b[..4] == b"\x7fELF" && b[4] == 2 && b[5] == 1
}

struct Section {
    name_off: u64,
    kind: u64,
    offset: u64,
    size: u64,
    link: u64,
}

fn sections(b: &[u8]) -> Option<Vec<Section>> {
    let shoff = u64at(b, 0x28)? as usize;
    let shentsize = u16at(b, 0x3a)? as usize;
    let shnum = u16at(b, 0x3c)? as usize;
    let mut v = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let s = shoff.checked_add(i.checked_mul(shentsize)?)?;
        v.push(Section {
            name_off: u32at(b, s)?,
            kind: u32at(b, s + 4)?,
            offset: u64at(b, s + 0x18)?,
            size: u64at(b, s + 0x20)?,
            link: u32at(b, s + 0x28)?,
        });
    }
    Some(v)
}

/// Parses interpreter and dynamic entries of an ELF64 LE file.
pub fn elf_info(b: &[u8]) -> Option<ElfInfo> {
    if !is_elf(b) {
        return None;
    }
    let mut info = ElfInfo::default();
    let phoff = u64at(b, 0x20)? as usize;
    let phentsize = u16at(b, 0x36)? as usize;
    let phnum = u16at(b, 0x38)? as usize;
    for i in 0..phnum {
        let p = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32at(b, p)? == 3 {
            // PT_INTERP
            let off = u64at(b, p + 8)? as usize;
            info.interp = Some(cstr(b, off)?);
        }
    }
    let secs = sections(b)?;
    for s in secs.iter().filter(|s| s.kind == 6) {
        // SHT_DYNAMIC; sh_link = its string table
        let strtab = secs.get(s.link as usize)?.offset as usize;
        let mut off = s.offset as usize;
        let end = off.checked_add(s.size as usize)?;
        while off + 16 <= end {
            let tag = u64at(b, off)?;
            let val = u64at(b, off + 8)? as usize;
            match tag {
                0 => break,
                1 => info.needed.push(cstr(b, strtab + val)?),
                15 | 29 => info.runpath.extend(
                    cstr(b, strtab + val)?
                        .split(':')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                ),
                _ => {}
            }
            off += 16;
        }
    }
    Some(info)
}

/// The bytes of the named section (e.g. `.modinfo`).
pub fn elf_section<'a>(b: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if !is_elf(b) {
        return None;
    }
    let shstrndx = u16at(b, 0x3e)? as usize;
    let secs = sections(b)?;
    let names = secs.get(shstrndx)?.offset as usize;
    let s = secs
        .iter()
        .find(|s| cstr(b, names + s.name_off as usize).as_deref() == Some(name))?;
    b.get(s.offset as usize..(s.offset + s.size) as usize)
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

// ---------------------------------------------------------------------------------------------
// Initramfs entries and the newc cpio writer
// ---------------------------------------------------------------------------------------------

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

    fn contains(&self, path: &str) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Cache key
// ---------------------------------------------------------------------------------------------

/// FNV-1a 64: stable across toolchains (unlike `DefaultHasher`); collisions don't matter here.
#[derive(Clone, Copy)]
struct Fnv(u64);
impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn feed(&mut self, b: &[u8]) {
        for &c in b.iter().chain(&(b.len() as u64).to_le_bytes()) {
            self.0 ^= c as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The cache key of an image: tool version, `init`, `modules`, and the root package versions.
pub fn cache_key(roots: &[Pkg], init: &[u8], modules: &[u8]) -> String {
    let mut h = Fnv::new();
    h.feed(TOOL_VERSION.as_bytes());
    h.feed(init);
    h.feed(modules);
    for p in roots {
        h.feed(p.id().as_bytes());
    }
    // A second, differently seeded pass widens the key to 128 bits.
    let mut h2 = Fnv(h.0 ^ 0x9e37_79b9_7f4a_7c15);
    h2.feed(TOOL_VERSION.as_bytes());
    for p in roots {
        h2.feed(p.name.as_bytes());
    }
    format!("{:016x}{:016x}", h.0, h2.0)
}

// ---------------------------------------------------------------------------------------------
// Image assembly
// ---------------------------------------------------------------------------------------------

fn read_input(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io_err(path))
}

/// Parses the `modules` data file: one module name per line, `#` comments.
pub fn parse_module_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.replace('-', "_"))
        .collect()
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
fn find_lib_fetching(
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

/// Assembles the image into `out`: `vmlinuz`, `initrd.img`. Returns the kernel release and the
/// packages used.
fn assemble(
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
    let mut queue: VecDeque<(String, PathBuf, String)> = VecDeque::new();
    for (pkg, files) in TOOLS {
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
            let (path, pkg) = find_lib_fetching(&mut store, &soname, &info.runpath, &owner)?
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

/// Decompresses `wanted` modules and their dependencies from the kernel package tree into
/// `modroot/lib/modules/<release>/…`, then runs `depmod -b modroot`.
fn add_modules(
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

// ---------------------------------------------------------------------------------------------
// The host program (crate `host`) as a static binary
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// QEMU arguments (minimal; the project's QEMU runner will own this)
// ---------------------------------------------------------------------------------------------

/// Base QEMU arguments for the guest under TCG. `-cpu max,-hypervisor`: with the CPUID hypervisor
/// bit set, Linux refuses to commit a CXL region (no cache invalidation under a hypervisor).
pub fn qemu_args(kernel: &Path, initrd: &Path, append: &str, cxl: bool) -> Vec<String> {
    let machine = if cxl { "q35,cxl=on" } else { "q35" };
    let mut v: Vec<String> = [
        "-M",
        machine,
        "-accel",
        "tcg",
        "-cpu",
        "max,-hypervisor",
        "-m",
        "1G",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-net",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("-kernel".into());
    v.push(kernel.display().to_string());
    v.push("-initrd".into());
    v.push(initrd.display().to_string());
    v.push("-append".into());
    v.push(format!("console=ttyS0 panic=-1 {append}"));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_parsing() {
        let d = parse_depends(
            "libc6 (>= 2.34), linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1), \
             initramfs-tools (>= 0.120) | linux-initramfs-tool, python3:any",
        );
        assert_eq!(
            d,
            vec![
                ("libc6".to_string(), None),
                (
                    "linux-image-6.12.95+deb12-amd64".to_string(),
                    Some("6.12.95-1~bpo12+1".to_string())
                ),
                ("initramfs-tools".to_string(), None),
                ("python3".to_string(), None),
            ]
        );
    }

    #[test]
    fn apt_show_parsing() {
        let text = "Package: ndctl\nVersion: 76.1-1\nDepends: libc6 (>= 2.34),\n libcxl1 (>= 75)\n\
                    Pre-Depends: init-system-helpers\nDescription: x\n more\n\n\
                    Package: fio\nVersion: 3.33-3\n";
        let p = parse_apt_show(text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].id(), "ndctl=76.1-1");
        let names: Vec<&str> = p[0].depends.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["init-system-helpers", "libc6", "libcxl1"]);
        assert!(p[1].depends.is_empty());
    }

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

    #[test]
    fn module_list_parsing() {
        assert_eq!(
            parse_module_list("# c\nublk_drv\n\n virtio-blk # x\n"),
            ["ublk_drv", "virtio_blk"]
        );
    }

    #[test]
    fn elf_of_this_test_binary() {
        let me = std::env::current_exe().unwrap();
        let b = fs::read(me).unwrap();
        let info = elf_info(&b).expect("test binary is ELF");
        assert!(info.needed.iter().any(|n| n.starts_with("libc.so")));
        assert!(elf_info(b"#!/bin/sh\n").is_none());
    }

    #[test]
    fn key_changes_with_inputs() {
        let p = |v: &str| Pkg {
            name: "fio".into(),
            version: v.into(),
            depends: vec![],
        };
        let a = cache_key(&[p("1")], b"init", b"m");
        assert_eq!(a, cache_key(&[p("1")], b"init", b"m"));
        assert_ne!(a, cache_key(&[p("2")], b"init", b"m"));
        assert_ne!(a, cache_key(&[p("1")], b"init2", b"m"));
        assert_ne!(a, cache_key(&[p("1")], b"init", b"m2"));
    }
}
