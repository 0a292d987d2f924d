//! CXL memory bring-up, the way firmware does it (see docs/cxl-bringup.md):
//!
//! 1. CEDT: the fixed memory window (CFMWS) and its host bridge (CHBS).
//! 2. PCI: the type-3 device (class 0502, CXL device DVSEC id 0), its root port.
//! 3. Register locator DVSEC (id 8) → component registers → HDM decoder capability.
//! 4. Program and commit decoders top-down: host bridge (if it has decoders), then
//!    the endpoint; set Mem_Enable; check COMMITTED and ERR.
//! 5. Map the window write-back.

use device::hw::cedt::{self, CedtError, Cfmws, Chbs};
use device::hw::cxl::{self as regs, CxlRegError, WindowError, hdm};
use device::hw::pci::{self as hwpci, CXL_VENDOR, ConfigSpace, cxl_dvsec};

use crate::acpi::Acpi;
use crate::exit::ExitCode;
use crate::memory::MapError;
use crate::mmio::Mmio;
use crate::pci::{self, PciDevice};
use crate::region::{SharedRegion, Source};

/// Everything that can stop CXL bring-up, each with one clear message.
#[derive(Debug)]
pub enum CxlError {
    NoAcpi,
    NoCedt,
    Cedt(CedtError),
    NoWindow,
    NoHostBridge(u32),
    NoDevice,
    NoRegisterLocator,
    NoComponentBlock,
    BarUnassigned(u8),
    Regs(&'static str, CxlRegError),
    NoHdm,
    Window(WindowError),
    DecoderCommit { which: &'static str, ctrl: u32 },
    Map(MapError),
}

impl core::fmt::Display for CxlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CxlError::NoAcpi => write!(f, "no ACPI tables"),
            CxlError::NoCedt => write!(
                f,
                "no CEDT table (start QEMU with -M q35,cxl=on and a pxb-cxl host bridge)"
            ),
            CxlError::Cedt(e) => write!(f, "{e}"),
            CxlError::NoWindow => write!(
                f,
                "CEDT has no CXL fixed memory window (add -M cxl-fmw.0...)"
            ),
            CxlError::NoHostBridge(uid) => write!(
                f,
                "no CHBS for the window's target host bridge UID {uid:#x}"
            ),
            CxlError::NoDevice => write!(
                f,
                "no CXL type-3 memory device (class 0502 with CXL DVSEC 0) found"
            ),
            CxlError::NoRegisterLocator => write!(f, "type-3 device has no register locator DVSEC"),
            CxlError::NoComponentBlock => {
                write!(f, "register locator names no component register block")
            }
            CxlError::BarUnassigned(b) => write!(
                f,
                "component registers are in BAR{b}, which is not assigned"
            ),
            CxlError::Regs(who, e) => write!(f, "{who} component registers: {e}"),
            CxlError::NoHdm => write!(f, "endpoint has no HDM decoder capability"),
            CxlError::Window(e) => write!(f, "{e}"),
            CxlError::DecoderCommit { which, ctrl } => {
                write!(
                    f,
                    "{which} HDM decoder 0 did not commit (control {ctrl:#x})"
                )
            }
            CxlError::Map(e) => write!(f, "mapping failed: {e}"),
        }
    }
}

impl CxlError {
    /// The distinct exit status for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CxlError::DecoderCommit { .. } => ExitCode::DecoderCommit,
            CxlError::Window(WindowError::TooSmall { .. }) => ExitCode::RegionTooSmall,
            _ => ExitCode::NoCxl,
        }
    }
}

/// The enabled CXL memory.
pub struct CxlMemory {
    pub window: Cfmws,
    pub host_bridge: Chbs,
    pub capacity: u64,
    pub hb_has_decoders: bool,
    pub region: SharedRegion,
}

/// HDM decoder capability of one component (host bridge or endpoint).
struct Hdm {
    regs: Mmio,
    count: usize,
}

fn find_hdm(component: &Mmio, who: &'static str) -> Result<Option<Hdm>, CxlError> {
    let cm = component.slice(regs::CACHEMEM_OFFSET, 0x1000);
    let caps = regs::cap_array(|o| cm.read32(o)).map_err(|e| CxlError::Regs(who, e))?;
    for c in &caps {
        log::debug!(
            "cxl: {who} capability id {} v{} at +{:#x}",
            c.id,
            c.version,
            c.pointer
        );
    }
    Ok(caps.iter().find(|c| c.id == regs::CAP_ID_HDM).map(|c| {
        let r = cm.slice(c.pointer as usize, 0x1000 - c.pointer as usize);
        let count = regs::decoder_count(r.read32(hdm::CAPABILITY));
        Hdm { regs: r, count }
    }))
}

/// Program decoder 0 of `h` to decode `[base, base+size)` and commit it.
fn commit_decoder(
    h: &Hdm,
    which: &'static str,
    base: u64,
    size: u64,
    ctrl: u32,
    target_or_skip: u32,
) -> Result<(), CxlError> {
    let g = h.regs.read32(hdm::GLOBAL_CONTROL);
    h.regs.write32(hdm::GLOBAL_CONTROL, g | hdm::GLOBAL_ENABLE);
    let d = h.regs.slice(hdm::decoder(0), 0x20);
    let old = d.read32(hdm::CTRL);
    if old & hdm::CTRL_COMMITTED != 0 {
        // Un-commit first so the new values take effect.
        d.write32(hdm::CTRL, old & !hdm::CTRL_COMMIT);
    }
    let (blo, bhi) = regs::lo_hi(base);
    let (slo, shi) = regs::lo_hi(size);
    d.write32(hdm::BASE_LO, blo);
    d.write32(hdm::BASE_HI, bhi);
    d.write32(hdm::SIZE_LO, slo);
    d.write32(hdm::SIZE_HI, shi);
    d.write32(hdm::TARGET_LO, target_or_skip);
    d.write32(hdm::TARGET_HI, 0);
    d.write32(hdm::CTRL, ctrl);
    d.write32(hdm::CTRL, ctrl | hdm::CTRL_COMMIT);
    let start = crate::arch::time::rdtsc();
    loop {
        let c = d.read32(hdm::CTRL);
        if c & hdm::CTRL_ERR != 0 {
            return Err(CxlError::DecoderCommit { which, ctrl: c });
        }
        if c & hdm::CTRL_COMMITTED != 0 {
            log::info!(
                "cxl: {which} decoder 0 committed: base {base:#x} size {size:#x} ctrl {c:#x} (of {} decoders)",
                h.count
            );
            return Ok(());
        }
        if crate::arch::time::nanos_since(start) > 10_000_000 {
            return Err(CxlError::DecoderCommit { which, ctrl: c });
        }
        core::hint::spin_loop();
    }
}

/// The PCIe port number of a root port (Link Capabilities [31:24]).
fn port_number(rp: &PciDevice) -> Option<u8> {
    let cap = rp.caps.iter().find(|c| c.id == 0x10)?;
    Some((rp.f.read32(cap.offset + 0x0c) >> 24) as u8)
}

/// Find, program and map the CXL memory.
pub fn bring_up(acpi: Option<&Acpi>) -> Result<CxlMemory, CxlError> {
    let acpi = acpi.ok_or(CxlError::NoAcpi)?;
    // 1. CEDT
    let bytes = acpi.cedt_bytes().ok_or(CxlError::NoCedt)?;
    crate::trace_hexdump("CEDT", bytes);
    let cedt = cedt::parse(bytes).map_err(CxlError::Cedt)?;
    let window = cedt.cfmws.first().cloned().ok_or(CxlError::NoWindow)?;
    let target = window.targets.first().copied().unwrap_or(u32::MAX);
    let hb = cedt
        .chbs
        .iter()
        .find(|c| c.uid == target)
        .copied()
        .ok_or(CxlError::NoHostBridge(target))?;
    log::info!(
        "cxl: CEDT window {:#x}+{:#x} ({} way(s), restrictions {:#x}) -> host bridge UID {:#x}, CHBCR {:#x}+{:#x}",
        window.base,
        window.size,
        window.ways(),
        window.restrictions,
        hb.uid,
        hb.base,
        hb.length
    );

    // 2. The type-3 device and its root port.
    let dev = pci::with_devices(|l| {
        l.iter()
            .find(|d| d.class == 0x05 && d.subclass == 0x02 && d.dvsec(CXL_VENDOR, 0).is_some())
            .cloned()
    })
    .ok_or(CxlError::NoDevice)?;
    let rp = pci::with_devices(|l| {
        l.iter()
            .find(|d| d.header_type & 0x7f == 1 && d.secondary_bus == dev.f.bus)
            .cloned()
    });
    if log::max_level() >= log::LevelFilter::Trace {
        let mut cfg = [0u8; 4096];
        for (i, c) in cfg.chunks_mut(4).enumerate() {
            c.copy_from_slice(&dev.f.read32(4 * i as u16).to_le_bytes());
        }
        crate::trace_hexdump("type3-config", &cfg);
    }
    let (dvsec_off, _) = dev.dvsec(CXL_VENDOR, 0).ok_or(CxlError::NoDevice)?;
    let info = hwpci::cxl_device_dvsec(&dev.f, dvsec_off).ok_or(CxlError::NoDevice)?;
    log::info!(
        "cxl: type-3 device {:02x}:{:02x}.{} {:04x}:{:04x}: capacity {:#x} (range 1, info valid {}, active {})",
        dev.f.bus,
        dev.f.dev,
        dev.f.func,
        dev.vendor,
        dev.device,
        info.range1_size,
        info.mem_info_valid,
        info.mem_active
    );

    // 3. Component registers.
    let (loc_off, loc) = dev
        .dvsec(CXL_VENDOR, 8)
        .ok_or(CxlError::NoRegisterLocator)?;
    let blocks = hwpci::register_locator(&dev.f, loc_off, loc.length);
    let comp = blocks
        .iter()
        .find(|b| b.block_id == hwpci::BLOCK_COMPONENT)
        .ok_or(CxlError::NoComponentBlock)?;
    let bar = dev
        .bar(comp.bar)
        .filter(|b| b.base != 0)
        .ok_or(CxlError::BarUnassigned(comp.bar))?;
    if let Some(rp) = &rp {
        rp.f.enable_memory();
    }
    dev.f.enable_memory();
    let comp_regs = Mmio::map(bar.base + comp.offset, 0x10000).map_err(CxlError::Map)?;
    let ep = find_hdm(&comp_regs, "endpoint")?.ok_or(CxlError::NoHdm)?;
    let hb_regs = Mmio::map(hb.base, hb.length.clamp(0x2000, 0x10000)).map_err(CxlError::Map)?;
    let hb_hdm = find_hdm(&hb_regs, "host bridge").unwrap_or_else(|e| {
        log::warn!("cxl: {e}; treating the host bridge as passthrough");
        None
    });

    // 4. Decoders, top-down.
    let capacity = info.range1_size;
    regs::check_window(window.base, window.size, capacity).map_err(CxlError::Window)?;
    let ctrl = regs::ctrl_value(window.eniw, window.hbig, true);
    match &hb_hdm {
        Some(h) => {
            let port = rp.as_ref().and_then(port_number).unwrap_or(0);
            log::info!(
                "cxl: host bridge has {} HDM decoder(s); target = root port {port}",
                h.count
            );
            commit_decoder(h, "host bridge", window.base, capacity, ctrl, port as u32)?;
        }
        None => log::info!("cxl: host bridge has no HDM decoders (single root port: passthrough)"),
    }
    commit_decoder(
        &ep,
        "endpoint",
        window.base,
        capacity,
        regs::ctrl_value(0, 0, true),
        0,
    )?;
    let dctrl = dev.f.read16(dvsec_off + cxl_dvsec::CONTROL);
    dev.f.write16(
        dvsec_off + cxl_dvsec::CONTROL,
        dctrl | cxl_dvsec::CTRL_MEM_ENABLE,
    );
    log::info!(
        "cxl: DVSEC control {:#x} -> {:#x} (Mem_Enable)",
        dctrl,
        dev.f.read16(dvsec_off + cxl_dvsec::CONTROL)
    );

    // 5. Map the window.
    let region = SharedRegion::map(window.base, capacity, Source::Cxl).map_err(CxlError::Map)?;
    log::info!(
        "cxl: window {:#x}+{:#x} mapped write-back ({:?} for write-back)",
        window.base,
        capacity,
        region.write_back_insn()
    );
    Ok(CxlMemory {
        window,
        host_bridge: hb,
        capacity,
        hb_has_decoders: hb_hdm.is_some(),
        region,
    })
}

/// ivshmem-plain (1af4:1110): BAR2 is the shared memory.
pub fn ivshmem() -> Option<Result<SharedRegion, MapError>> {
    let d = pci::find(0x1af4, 0x1110)?;
    let bar = d.bar(2).filter(|b| b.base != 0)?;
    d.f.enable_memory();
    log::info!(
        "ivshmem: {:02x}:{:02x}.{} BAR2 {:#x}+{:#x}",
        d.f.bus,
        d.f.dev,
        d.f.func,
        bar.base,
        bar.size
    );
    Some(SharedRegion::map(bar.base, bar.size, Source::Ivshmem))
}
