//! PCIe enumeration through ECAM (from the MCFG): every bus, device and function;
//! BAR sizing; capability and extended-capability walks; DVSEC report.

use device::hw::pci::{self as hw, Bar, ConfigSpace, ExtCap};
use heapless::Vec;
use spin::Mutex;

use crate::acpi::Ecam;
use crate::mmio::Mmio;

/// Config space of one function, through ECAM.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
    cfg: Mmio,
}

impl ConfigSpace for Function {
    fn read32(&self, offset: u16) -> u32 {
        self.cfg.read32(offset as usize & 0xffc)
    }
}

impl Function {
    /// Read a dword at any offset (rounded down to 4).
    pub fn read32_raw(&self, offset: u16) -> u32 {
        self.cfg.read32(offset as usize & 0xffc)
    }
    pub fn write32(&self, offset: u16, v: u32) {
        self.cfg.write32(offset as usize & 0xffc, v)
    }
    pub fn write16(&self, offset: u16, v: u16) {
        self.cfg.write16(offset as usize & 0xffe, v)
    }
    pub fn vendor(&self) -> u16 {
        self.read16(0)
    }
    pub fn device_id(&self) -> u16 {
        self.read16(2)
    }
    pub fn command(&self) -> u16 {
        self.read16(4)
    }
    /// Enable memory space decoding and bus mastering.
    pub fn enable_memory(&self) {
        let cmd = self.command();
        self.write16(4, cmd | 0x6);
    }
}

/// Everything recorded about one function.
#[derive(Clone, Debug)]
pub struct PciDevice {
    pub f: Function,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub header_type: u8,
    pub bars: Vec<Bar, 6>,
    pub caps: Vec<hw::Cap, { hw::MAX_CAPS }>,
    pub ext_caps: Vec<ExtCap, { hw::MAX_CAPS }>,
    /// For bridges: secondary and subordinate bus numbers.
    pub secondary_bus: u8,
    pub subordinate_bus: u8,
}

impl PciDevice {
    pub fn bar(&self, index: u8) -> Option<&Bar> {
        self.bars.iter().find(|b| b.index == index)
    }

    /// Find a DVSEC (offset, header).
    pub fn dvsec(&self, vendor: u16, id: u16) -> Option<(u16, hw::Dvsec)> {
        hw::find_dvsec(&self.ext_caps, vendor, id)
    }
}

/// Maximum functions remembered.
pub const MAX_DEVICES: usize = 64;

static DEVICES: Mutex<Vec<PciDevice, MAX_DEVICES>> = Mutex::new(Vec::new());

/// ECAM windows mapped by [`enumerate`]: (first bus, last bus, mapping).
static ECAMS: Mutex<Vec<(u8, u8, Mmio), 4>> = Mutex::new(Vec::new());

/// Config space of any function (present or not) through the mapped ECAM.
pub fn config(bus: u8, dev: u8, func: u8) -> Option<Function> {
    if dev >= 32 || func >= 8 {
        return None;
    }
    ECAMS
        .lock()
        .iter()
        .find(|(s, e, _)| (*s..=*e).contains(&bus))
        .map(|&(s, _, w)| {
            let off =
                (((bus - s) as usize) << 20) | ((dev as usize) << 15) | ((func as usize) << 12);
            Function {
                bus,
                dev,
                func,
                cfg: w.slice(off, 4096),
            }
        })
}

fn size_bars(f: &Function, count: u8) -> Vec<Bar, 6> {
    let mut out = Vec::new();
    let cmd = f.command();
    // Stop decoding while the BARs hold all-ones.
    f.write16(4, cmd & !0x3);
    let mut i = 0u8;
    while i < count {
        let off = 0x10 + 4 * i as u16;
        let orig = f.read32(off);
        f.write32(off, 0xffff_ffff);
        let mask = f.read32(off);
        f.write32(off, orig);
        let is64 = orig & 1 == 0 && (orig >> 1) & 3 == 2 && i + 1 < count;
        let (orig_hi, mask_hi) = if is64 {
            let o = f.read32(off + 4);
            f.write32(off + 4, 0xffff_ffff);
            let m = f.read32(off + 4);
            f.write32(off + 4, o);
            (o, m)
        } else {
            (0, 0)
        };
        if let Some(b) = hw::decode_bar(i, orig, mask, orig_hi, mask_hi) {
            let _ = out.push(b);
        }
        i += if is64 { 2 } else { 1 };
    }
    f.write16(4, cmd);
    out
}

fn probe(f: Function) -> PciDevice {
    let class_reg = f.read32(0x08);
    let header_type = f.read8(0x0e);
    let kind = header_type & 0x7f;
    let bars = match kind {
        0 => size_bars(&f, 6),
        1 => size_bars(&f, 2),
        _ => Vec::new(),
    };
    let (secondary_bus, subordinate_bus) = if kind == 1 {
        (f.read8(0x19), f.read8(0x1a))
    } else {
        (0, 0)
    };
    PciDevice {
        f,
        vendor: f.vendor(),
        device: f.device_id(),
        class: (class_reg >> 24) as u8,
        subclass: (class_reg >> 16) as u8,
        prog_if: (class_reg >> 8) as u8,
        header_type,
        bars,
        caps: hw::capabilities(&f),
        ext_caps: hw::ext_capabilities(&f),
        secondary_bus,
        subordinate_bus,
    }
}

/// Enumerate all functions behind the given ECAM windows.
pub fn enumerate(ecams: &[Ecam]) -> usize {
    let mut list = DEVICES.lock();
    list.clear();
    for e in ecams {
        let buses = e.bus_end as u64 - e.bus_start as u64 + 1;
        let phys = e.base + ((e.bus_start as u64) << 20);
        let window = match Mmio::map(phys, buses << 20) {
            Ok(w) => w,
            Err(err) => {
                log::error!("pci: cannot map ECAM {phys:#x}: {err}");
                continue;
            }
        };
        let _ = ECAMS.lock().push((e.bus_start, e.bus_end, window));
        for bus in e.bus_start..=e.bus_end {
            for dev in 0..32u8 {
                for func in 0..8u8 {
                    let off = (((bus - e.bus_start) as usize) << 20)
                        | ((dev as usize) << 15)
                        | ((func as usize) << 12);
                    let f = Function {
                        bus,
                        dev,
                        func,
                        cfg: window.slice(off, 4096),
                    };
                    if f.vendor() == 0xffff {
                        if func == 0 {
                            break;
                        }
                        continue;
                    }
                    let d = probe(f);
                    let multi = d.header_type & 0x80 != 0;
                    if list.push(d).is_err() {
                        log::warn!(
                            "pci: more than {MAX_DEVICES} functions; the rest are not recorded"
                        );
                        return list.len();
                    }
                    if func == 0 && !multi {
                        break;
                    }
                }
            }
        }
    }
    list.len()
}

/// Run `f` over the recorded devices.
pub fn with_devices<R>(f: impl FnOnce(&[PciDevice]) -> R) -> R {
    f(&DEVICES.lock())
}

/// Find the first function with this vendor/device id.
pub fn find(vendor: u16, device: u16) -> Option<PciDevice> {
    find_nth(vendor, &[device], 0)
}

/// The `n`-th function (in bus order) whose vendor is `vendor` and device id one of `devices`.
pub fn find_nth(vendor: u16, devices: &[u16], n: usize) -> Option<PciDevice> {
    DEVICES
        .lock()
        .iter()
        .filter(|d| d.vendor == vendor && devices.contains(&d.device))
        .nth(n)
        .cloned()
}

/// Log the device list.
pub fn report() {
    with_devices(|list| {
        log::info!("pci: {} function(s)", list.len());
        for d in list {
            log::info!(
                "pci: {:02x}:{:02x}.{} {:04x}:{:04x} class {:02x}{:02x}{:02x} {}",
                d.f.bus,
                d.f.dev,
                d.f.func,
                d.vendor,
                d.device,
                d.class,
                d.subclass,
                d.prog_if,
                hw::class_name(d.class, d.subclass)
            );
            if d.header_type & 0x7f == 1 {
                log::info!(
                    "pci:     bridge to buses {:#x}-{:#x}",
                    d.secondary_bus,
                    d.subordinate_bus
                );
            }
            for b in &d.bars {
                log::info!(
                    "pci:     BAR{} {} {:#x} size {:#x}{}{}",
                    b.index,
                    if b.io { "io " } else { "mem" },
                    b.base,
                    b.size,
                    if b.is64 { " 64-bit" } else { "" },
                    if b.prefetchable { " prefetchable" } else { "" }
                );
            }
            if !d.caps.is_empty() {
                let mut s: heapless::String<128> = heapless::String::new();
                for c in &d.caps {
                    let _ = core::fmt::write(&mut s, format_args!("{:02x}@{:#x} ", c.id, c.offset));
                }
                log::debug!("pci:     caps {s}");
            }
            for c in &d.ext_caps {
                match c.dvsec {
                    Some(v) if v.vendor == hw::CXL_VENDOR => log::info!(
                        "pci:     DVSEC @{:#x} vendor {:#06x} (CXL) id {} ({}) rev {} len {:#x}",
                        c.offset,
                        v.vendor,
                        v.id,
                        hw::cxl_dvsec_name(v.id),
                        v.revision,
                        v.length
                    ),
                    Some(v) => log::info!(
                        "pci:     DVSEC @{:#x} vendor {:#06x} id {} rev {} len {:#x}",
                        c.offset,
                        v.vendor,
                        v.id,
                        v.revision,
                        v.length
                    ),
                    None => log::debug!(
                        "pci:     ext cap {:#06x} v{} @{:#x}",
                        c.id,
                        c.version,
                        c.offset
                    ),
                }
            }
        }
    });
}
