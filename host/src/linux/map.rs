//! Finding and mapping the shared transport: a devdax device (CXL region → pmem namespace in
//! devdax mode), the ivshmem PCI BAR, or a plain file (tests, or a shared file on the host).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::mem::{MappedMem, ReadOnlyMem};

/// devdax mappings must be 2 MiB aligned in offset and length.
pub const DAX_ALIGN: u64 = 2 << 20;
/// PCI BAR / file mappings: page aligned.
pub const PAGE: u64 = 4096;
/// ivshmem PCI IDs (Red Hat, Inc. / Inter-VM shared memory).
pub const IVSHMEM_VENDOR: u16 = 0x1af4;
pub const IVSHMEM_DEVICE: u16 = 0x1110;

/// Where the transport lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportSpec {
    /// `/dev/daxX.Y`.
    Dax(PathBuf),
    /// The ivshmem BAR2; `None` = the first ivshmem device, `Some("0000:00:03.0")` = that one.
    Ivshmem(Option<String>),
    /// A regular file (mapped whole).
    File(PathBuf),
}

impl TransportSpec {
    /// `ivshmem`, `ivshmem:<pci address>`, `/dev/daxX.Y`, or a file path.
    pub fn parse(s: &str) -> Result<TransportSpec, String> {
        if s == "ivshmem" {
            return Ok(TransportSpec::Ivshmem(None));
        }
        if let Some(addr) = s.strip_prefix("ivshmem:") {
            if addr.is_empty()
                || !addr
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || ":.".contains(c))
            {
                return Err(format!("bad PCI address {addr:?} in {s:?}"));
            }
            return Ok(TransportSpec::Ivshmem(Some(addr.to_string())));
        }
        if s.is_empty() {
            return Err("empty transport path".into());
        }
        let p = PathBuf::from(s);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("dax") && p.starts_with("/dev") {
            Ok(TransportSpec::Dax(p))
        } else {
            Ok(TransportSpec::File(p))
        }
    }
}

impl fmt::Display for TransportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportSpec::Dax(p) | TransportSpec::File(p) => write!(f, "{}", p.display()),
            TransportSpec::Ivshmem(None) => write!(f, "ivshmem"),
            TransportSpec::Ivshmem(Some(a)) => write!(f, "ivshmem:{a}"),
        }
    }
}

/// Mapping failures, each naming the device and what to check.
#[derive(Debug)]
pub enum MapError {
    Io { what: String, source: io::Error },
    NotFound(String),
    Align(String),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Io { what, source } => write!(f, "{what}: {source}"),
            MapError::NotFound(s) | MapError::Align(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for MapError {}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> MapError {
    let what = what.into();
    move |source| MapError::Io { what, source }
}

/// Size of `/dev/daxX.Y` from sysfs (the character device has no size of its own).
fn dax_size(dev: &Path) -> Result<u64, MapError> {
    let name = dev
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| MapError::NotFound(format!("bad dax path {}", dev.display())))?;
    let p = format!("/sys/bus/dax/devices/{name}/size");
    let s = std::fs::read_to_string(&p).map_err(ioe(format!(
        "{p} (is device_dax loaded and the namespace in devdax mode?)"
    )))?;
    s.trim()
        .parse()
        .map_err(|_| MapError::NotFound(format!("{p}: not a number: {s:?}")))
}

/// Opens a devdax device (read-write, or read-only when `!write`), retrying `ENXIO`: a
/// just-created `/dev/daxX.Y` refuses opens for a few hundred milliseconds.
fn open_dax(dev: &Path, write: bool) -> Result<File, MapError> {
    let mut tries = 0;
    loop {
        match OpenOptions::new().read(true).write(write).open(dev) {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(ioe(format!("opening {}", dev.display()))(e)),
        }
    }
}

/// `/sys/bus/pci/devices/<addr>` of the requested (or first) ivshmem device.
pub fn find_ivshmem(sysfs_pci: &Path, addr: Option<&str>) -> Result<PathBuf, MapError> {
    let hex = |p: &Path| -> Option<u16> {
        let s = std::fs::read_to_string(p).ok()?;
        u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
    };
    let mut found: Vec<PathBuf> = Vec::new();
    let rd = std::fs::read_dir(sysfs_pci).map_err(ioe(format!("{}", sysfs_pci.display())))?;
    for e in rd.flatten() {
        let d = e.path();
        if hex(&d.join("vendor")) == Some(IVSHMEM_VENDOR)
            && hex(&d.join("device")) == Some(IVSHMEM_DEVICE)
        {
            found.push(d);
        }
    }
    found.sort();
    match addr {
        None => found.into_iter().next().ok_or_else(|| {
            MapError::NotFound(format!(
                "no ivshmem PCI device ({IVSHMEM_VENDOR:04x}:{IVSHMEM_DEVICE:04x}) in {} \
                 (QEMU: -device ivshmem-plain,memdev=...)",
                sysfs_pci.display()
            ))
        }),
        Some(a) => found
            .into_iter()
            .find(|d| d.file_name().and_then(|n| n.to_str()) == Some(a))
            .ok_or_else(|| MapError::NotFound(format!("PCI device {a} is not an ivshmem device"))),
    }
}

/// Maps the transport: `offset` into the device, `size` bytes (default: the rest of it).
pub fn map_transport(
    spec: &TransportSpec,
    offset: u64,
    size: Option<u64>,
) -> Result<MappedMem, MapError> {
    let (file, len, what) = open_transport(spec, offset, size, true)?;
    log::info!("mapping {what}: offset {offset:#x}, {len:#x} bytes");
    MappedMem::map(file, offset, len as usize).map_err(ioe(format!("mmap of {what}")))
}

/// Maps the transport read-only (`cbd-host inspect`): the device or file is opened `O_RDONLY` and
/// mapped `PROT_READ`, so an inspector can never store into a live ring.
pub fn map_transport_read_only(
    spec: &TransportSpec,
    offset: u64,
    size: Option<u64>,
) -> Result<ReadOnlyMem, MapError> {
    let (file, len, what) = open_transport(spec, offset, size, false)?;
    log::info!("mapping {what} read-only: offset {offset:#x}, {len:#x} bytes");
    ReadOnlyMem::map_read_only(file, offset, len as usize)
        .map_err(ioe(format!("read-only mmap of {what}")))
}

/// Opens the transport's device or file (`write`: read-write, else read-only) and checks the
/// window: (file, length of the window, what to call it in messages).
fn open_transport(
    spec: &TransportSpec,
    offset: u64,
    size: Option<u64>,
    write: bool,
) -> Result<(File, u64, String), MapError> {
    let open = |p: &Path, what: &str| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(p)
            .map_err(ioe(format!("opening {what}{}", p.display())))
    };
    let (file, total, align, what) = match spec {
        TransportSpec::Dax(p) => {
            let total = dax_size(p)?;
            (
                open_dax(p, write)?,
                total,
                DAX_ALIGN,
                format!("{}", p.display()),
            )
        }
        TransportSpec::Ivshmem(addr) => {
            let dev = find_ivshmem(Path::new("/sys/bus/pci/devices"), addr.as_deref())?;
            // Memory decoding on: without it the BAR reads as all-ones. (A sysfs switch of the
            // PCI function, not a store into the ring; skipped when it is on already.)
            let enabled =
                std::fs::read_to_string(dev.join("enable")).is_ok_and(|s| s.trim() != "0");
            if !enabled {
                std::fs::write(dev.join("enable"), "1")
                    .map_err(ioe(format!("enabling {}", dev.display())))?;
            }
            let res = dev.join("resource2");
            let f = open(&res, "")?;
            let total = f.metadata().map_err(ioe(res.display().to_string()))?.len();
            (f, total, PAGE, format!("ivshmem BAR2 {}", res.display()))
        }
        TransportSpec::File(p) => {
            let f = open(p, "transport file ")?;
            let total = f.metadata().map_err(ioe(p.display().to_string()))?.len();
            (f, total, PAGE, format!("{}", p.display()))
        }
    };
    let len = check_window(&what, total, offset, size, align)?;
    Ok((file, len, what))
}

/// Validates `offset`/`size` against the device size and alignment; returns the length.
pub fn check_window(
    what: &str,
    total: u64,
    offset: u64,
    size: Option<u64>,
    align: u64,
) -> Result<u64, MapError> {
    if !offset.is_multiple_of(align) {
        return Err(MapError::Align(format!(
            "{what}: offset {offset:#x} is not a multiple of {align:#x}"
        )));
    }
    if offset >= total {
        return Err(MapError::Align(format!(
            "{what}: offset {offset:#x} is beyond the device size {total:#x}"
        )));
    }
    let len = size.unwrap_or(total - offset);
    if len == 0 || !len.is_multiple_of(align) {
        return Err(MapError::Align(format!(
            "{what}: size {len:#x} is not a non-zero multiple of {align:#x}"
        )));
    }
    if offset.checked_add(len).is_none_or(|e| e > total) {
        return Err(MapError::Align(format!(
            "{what}: {offset:#x}+{len:#x} exceeds the device size {total:#x}"
        )));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        assert_eq!(
            TransportSpec::parse("/dev/dax0.0").unwrap(),
            TransportSpec::Dax("/dev/dax0.0".into())
        );
        assert_eq!(
            TransportSpec::parse("ivshmem").unwrap(),
            TransportSpec::Ivshmem(None)
        );
        assert_eq!(
            TransportSpec::parse("ivshmem:0000:00:03.0").unwrap(),
            TransportSpec::Ivshmem(Some("0000:00:03.0".into()))
        );
        assert!(TransportSpec::parse("ivshmem:zz/..").is_err());
        assert!(TransportSpec::parse("").is_err());
        assert_eq!(
            TransportSpec::parse("/tmp/x.raw").unwrap(),
            TransportSpec::File("/tmp/x.raw".into())
        );
    }

    #[test]
    fn window_checks() {
        let m = 1 << 20;
        assert_eq!(
            check_window("d", 250 * m, 0, None, DAX_ALIGN).unwrap(),
            250 * m
        );
        assert_eq!(
            check_window("d", 250 * m, 2 * m, Some(4 * m), DAX_ALIGN).unwrap(),
            4 * m
        );
        assert!(check_window("d", 250 * m, 4096, None, DAX_ALIGN).is_err());
        assert!(check_window("d", 250 * m, 0, Some(m), DAX_ALIGN).is_err());
        assert!(check_window("d", 250 * m, 248 * m, Some(4 * m), DAX_ALIGN).is_err());
        assert!(check_window("d", 250 * m, 250 * m, None, DAX_ALIGN).is_err());
    }

    #[test]
    fn ivshmem_lookup_in_fake_sysfs() {
        let root = std::env::temp_dir().join(format!("cbd-host-pci-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (addr, v, d) in [
            ("0000:00:01.0", "0x8086", "0x29c0"),
            ("0000:00:03.0", "0x1af4", "0x1110"),
        ] {
            let dir = root.join(addr);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("vendor"), format!("{v}\n")).unwrap();
            std::fs::write(dir.join("device"), format!("{d}\n")).unwrap();
        }
        assert_eq!(
            find_ivshmem(&root, None).unwrap(),
            root.join("0000:00:03.0")
        );
        assert!(find_ivshmem(&root, Some("0000:00:01.0")).is_err());
        std::fs::remove_dir_all(root.join("0000:00:03.0")).unwrap();
        let e = find_ivshmem(&root, None).unwrap_err().to_string();
        assert!(e.contains("no ivshmem"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = map_transport(&TransportSpec::File("/nonexistent/cbd".into()), 0, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/cbd"), "{e}");
    }

    #[test]
    fn inspect_maps_read_only_and_decodes_a_live_transport() {
        use device::shm::{SharedMem, Shm};
        use device::trace::NoTrace;
        let len = device::layout::TransportInfo::region_for(1).next_multiple_of(DAX_ALIGN);
        let (f, p) = crate::linux::mem::tests::tmpfile(DAX_ALIGN + len);
        drop(f);
        let spec = TransportSpec::File(p.clone());
        // A transport formatted 2 MiB into the file, as after devdax metadata.
        let live = map_transport(&spec, DAX_ALIGN, Some(len)).unwrap();
        let now = device::native::now_ns();
        device::transport::Transport::format(
            Shm::new(&live, &NoTrace),
            device::transport::format_flags(false),
            false,
            now,
        )
        .unwrap();
        let ro = map_transport_read_only(&spec, DAX_ALIGN, Some(len)).unwrap();
        let r = device::inspect::inspect(Shm::new(&ro, &NoTrace), now);
        assert_ne!(
            r.worst(),
            Some(device::inspect::Severity::Error),
            "{}",
            r.text()
        );
        assert!(r.text().contains("transport"), "{}", r.text());
        // The inspector's view cannot store into the ring it shows.
        let before = {
            let mut b = vec![0u8; 4096];
            live.read(0, &mut b);
            b
        };
        let store = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ro.write(0, &[0; 8])));
        assert!(store.is_err());
        let mut after = vec![0u8; 4096];
        live.read(0, &mut after);
        assert_eq!(before, after);
        std::fs::remove_file(p).unwrap();
    }
}
