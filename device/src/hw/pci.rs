//! PCI configuration-space structures: capability chains, extended capabilities,
//! DVSECs (CXL uses vendor 0x1E98), BAR decoding.
//!
//! Config space is read through the [`ConfigSpace`] trait so the same walkers run
//! on ECAM in the kernel and on captured bytes in tests. A device's config space is
//! untrusted input: every chain walk is bounded and offsets are range-checked.

use heapless::Vec;

/// PCI SIG vendor id of the CXL consortium (used in CXL DVSECs).
pub const CXL_VENDOR: u16 = 0x1E98;
/// Extended capability id of a DVSEC.
pub const EXT_CAP_DVSEC: u16 = 0x0023;
/// Max capabilities kept per device.
pub const MAX_CAPS: usize = 24;

/// 4 KiB configuration space of one function.
pub trait ConfigSpace {
    /// Read the aligned dword at `offset` (< 4096, multiple of 4).
    fn read32(&self, offset: u16) -> u32;
    fn read16(&self, offset: u16) -> u16 {
        (self.read32(offset & !3) >> ((offset & 2) * 8)) as u16
    }
    fn read8(&self, offset: u16) -> u8 {
        (self.read32(offset & !3) >> ((offset & 3) * 8)) as u8
    }
}

impl ConfigSpace for [u8] {
    fn read32(&self, offset: u16) -> u32 {
        let o = offset as usize & !3;
        match self.get(o..o + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0xffff_ffff,
        }
    }
}

/// A classic (config offset < 0x100) capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub offset: u16,
    pub id: u8,
}

/// An extended (PCIe, offset ≥ 0x100) capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtCap {
    pub offset: u16,
    pub id: u16,
    pub version: u8,
    /// For DVSECs: (vendor, revision, length, dvsec id).
    pub dvsec: Option<Dvsec>,
}

/// Designated vendor-specific extended capability header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dvsec {
    pub vendor: u16,
    pub revision: u8,
    pub length: u16,
    pub id: u16,
}

/// Walk the classic capability list. Stops at a loop, a pointer below 0x40, or
/// after 48 entries.
pub fn capabilities<C: ConfigSpace + ?Sized>(cfg: &C) -> Vec<Cap, MAX_CAPS> {
    let mut out = Vec::new();
    let status = cfg.read16(0x06);
    if status & 0x10 == 0 {
        return out;
    }
    let mut ptr = cfg.read8(0x34) & 0xfc;
    let mut steps = 0;
    while ptr >= 0x40 && steps < 48 {
        let id = cfg.read8(ptr as u16);
        if out.iter().any(|c: &Cap| c.offset == ptr as u16)
            || out
                .push(Cap {
                    offset: ptr as u16,
                    id,
                })
                .is_err()
        {
            break;
        }
        ptr = cfg.read8(ptr as u16 + 1) & 0xfc;
        steps += 1;
    }
    out
}

/// Walk the extended capability list starting at 0x100.
pub fn ext_capabilities<C: ConfigSpace + ?Sized>(cfg: &C) -> Vec<ExtCap, MAX_CAPS> {
    let mut out: Vec<ExtCap, MAX_CAPS> = Vec::new();
    let mut off: u16 = 0x100;
    let mut steps = 0;
    while (0x100..=0xffc).contains(&off) && steps < 64 {
        let h = cfg.read32(off);
        if h == 0 || h == 0xffff_ffff {
            break;
        }
        let id = (h & 0xffff) as u16;
        let dvsec = if id == EXT_CAP_DVSEC && off <= 0xff4 {
            let h1 = cfg.read32(off + 4);
            let h2 = cfg.read32(off + 8);
            Some(Dvsec {
                vendor: (h1 & 0xffff) as u16,
                revision: ((h1 >> 16) & 0xf) as u8,
                length: (h1 >> 20) as u16,
                id: (h2 & 0xffff) as u16,
            })
        } else {
            None
        };
        if out.iter().any(|c| c.offset == off)
            || out
                .push(ExtCap {
                    offset: off,
                    id,
                    version: ((h >> 16) & 0xf) as u8,
                    dvsec,
                })
                .is_err()
        {
            break;
        }
        off = ((h >> 20) & 0xffc) as u16;
        steps += 1;
    }
    out
}

/// Find a DVSEC by vendor and id.
pub fn find_dvsec(caps: &[ExtCap], vendor: u16, id: u16) -> Option<(u16, Dvsec)> {
    caps.iter().find_map(|c| match c.dvsec {
        Some(d) if d.vendor == vendor && d.id == id => Some((c.offset, d)),
        _ => None,
    })
}

/// Human name of a CXL DVSEC id (CXL 2.0 table 124).
pub fn cxl_dvsec_name(id: u16) -> &'static str {
    match id {
        0 => "CXL device",
        2 => "non-CXL function map",
        3 => "CXL 2.0 extensions for ports",
        4 => "GPF for ports",
        5 => "GPF for devices",
        7 => "flex bus port",
        8 => "register locator",
        9 => "MLD",
        0xa => "test capability",
        _ => "unknown",
    }
}

/// CXL device DVSEC (id 0): the fields the device needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CxlDeviceDvsec {
    pub capability: u16,
    pub control: u16,
    pub status: u16,
    /// Range 1 size (bits 63:28 of the size registers).
    pub range1_size: u64,
    pub range1_base: u64,
    /// Memory info valid / memory active (range 1 size low bits 0 and 1).
    pub mem_info_valid: bool,
    pub mem_active: bool,
}

/// Offsets inside the CXL device DVSEC.
pub mod cxl_dvsec {
    pub const CAPABILITY: u16 = 0x0a;
    pub const CONTROL: u16 = 0x0c;
    pub const STATUS: u16 = 0x0e;
    pub const RANGE1_SIZE_HI: u16 = 0x18;
    pub const RANGE1_SIZE_LO: u16 = 0x1c;
    pub const RANGE1_BASE_HI: u16 = 0x20;
    pub const RANGE1_BASE_LO: u16 = 0x24;
    /// Control bit 2: Mem_Enable.
    pub const CTRL_MEM_ENABLE: u16 = 1 << 2;
    /// Capability bit 2: Mem_Capable.
    pub const CAP_MEM_CAPABLE: u16 = 1 << 2;
}

/// Decode the CXL device DVSEC at `off`.
pub fn cxl_device_dvsec<C: ConfigSpace + ?Sized>(cfg: &C, off: u16) -> Option<CxlDeviceDvsec> {
    use cxl_dvsec::*;
    if off > 0xfd8 {
        return None;
    }
    let slo = cfg.read32(off + RANGE1_SIZE_LO);
    let size = (u64::from(cfg.read32(off + RANGE1_SIZE_HI)) << 32) | u64::from(slo & 0xf000_0000);
    let base = (u64::from(cfg.read32(off + RANGE1_BASE_HI)) << 32)
        | u64::from(cfg.read32(off + RANGE1_BASE_LO) & 0xf000_0000);
    Some(CxlDeviceDvsec {
        capability: cfg.read16(off + CAPABILITY),
        control: cfg.read16(off + CONTROL),
        status: cfg.read16(off + STATUS),
        range1_size: size,
        range1_base: base,
        mem_info_valid: slo & 1 != 0,
        mem_active: slo & 2 != 0,
    })
}

/// One register block named by a register locator DVSEC (id 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterBlock {
    pub bar: u8,
    /// 1 = component registers, 2 = BAR virtualization ACL, 3 = device registers.
    pub block_id: u8,
    pub offset: u64,
}

/// Register locator block id of component registers.
pub const BLOCK_COMPONENT: u8 = 1;
/// Register locator block id of memory-device registers.
pub const BLOCK_DEVICE: u8 = 3;

/// Decode the register locator DVSEC at `off` with header length `len`.
pub fn register_locator<C: ConfigSpace + ?Sized>(
    cfg: &C,
    off: u16,
    len: u16,
) -> Vec<RegisterBlock, 8> {
    let mut out = Vec::new();
    let n = (len.saturating_sub(0x0c) / 8).min(8);
    for i in 0..n {
        let e = off as u32 + 0x0c + 8 * i as u32;
        if e + 8 > 0x1000 {
            break;
        }
        let lo = cfg.read32(e as u16);
        let hi = cfg.read32(e as u16 + 4);
        let _ = out.push(RegisterBlock {
            bar: (lo & 7) as u8,
            block_id: ((lo >> 8) & 0xff) as u8,
            offset: (u64::from(hi) << 32) | u64::from(lo & 0xffff_0000),
        });
    }
    out
}

/// A decoded base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub base: u64,
    pub size: u64,
    pub io: bool,
    pub is64: bool,
    pub prefetchable: bool,
}

/// Decode a BAR from its original value(s) and the value(s) read back after
/// writing all ones (`orig_hi`/`mask_hi` only for 64-bit memory BARs).
pub fn decode_bar(index: u8, orig: u32, mask: u32, orig_hi: u32, mask_hi: u32) -> Option<Bar> {
    if orig & 1 == 1 {
        let m = mask & 0xffff_fffc;
        if m == 0 {
            return None;
        }
        let size = u64::from((!m).wrapping_add(1) & 0xffff);
        // A mask with no writable bit below 64 KiB claims all of I/O space (or more):
        // no device decodes that; a size of 0 is not a BAR (found by fuzzing).
        if size == 0 {
            return None;
        }
        return Some(Bar {
            index,
            base: u64::from(orig & 0xffff_fffc),
            size,
            io: true,
            is64: false,
            prefetchable: false,
        });
    }
    let is64 = (orig >> 1) & 3 == 2;
    let prefetchable = orig & 8 != 0;
    let base = u64::from(orig & 0xffff_fff0) | if is64 { u64::from(orig_hi) << 32 } else { 0 };
    let m = u64::from(mask & 0xffff_fff0)
        | if is64 {
            u64::from(mask_hi) << 32
        } else {
            0xffff_ffff_0000_0000
        };
    if m & 0xffff_ffff == 0 && !is64 {
        return None;
    }
    if m == 0 || m == 0xffff_ffff_0000_0000 {
        return None;
    }
    let size = (!m).wrapping_add(1);
    Some(Bar {
        index,
        base,
        size,
        io: false,
        is64,
        prefetchable,
    })
}

/// Short description of a PCI class code.
pub fn class_name(class: u8, subclass: u8) -> &'static str {
    match (class, subclass) {
        (0x01, 0x00) => "SCSI controller",
        (0x01, 0x01) => "IDE controller",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x08) => "NVMe controller",
        (0x01, _) => "storage controller",
        (0x02, _) => "network controller",
        (0x03, _) => "display controller",
        (0x05, 0x02) => "CXL memory device",
        (0x05, _) => "memory controller",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, _) => "bridge",
        (0x0c, 0x05) => "SMBus controller",
        (0x0c, _) => "serial bus controller",
        (0xff, _) | (0x00, _) => "unclassified",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Config space shaped like QEMU's cxl-type3 (0d:00.0): PCIe cap, a DVSEC chain
    /// with the CXL device DVSEC (id 0) and the register locator (id 8).
    pub fn type3_config() -> std::vec::Vec<u8> {
        let mut c = vec![0u8; 4096];
        put32(&mut c, 0, 0x0d93_8086);
        put32(&mut c, 4, 0x0010_0000); // status: capabilities list
        c[0x34] = 0x40;
        c[0x40] = 0x10; // PCIe
        c[0x41] = 0x80;
        c[0x80] = 0x05; // MSI
        c[0x81] = 0x00;
        // ext caps: 0x100 DVSEC id 0 (len 0x3c) -> 0x140 DVSEC id 8 (len 0x24) -> end
        put32(&mut c, 0x100, (0x140 << 20) | (1 << 16) | 0x23);
        put32(&mut c, 0x104, (0x3c << 20) | (1 << 16) | 0x1e98);
        put32(&mut c, 0x108, 0);
        c[0x10a] = 0x04; // Mem_Capable
        put32(&mut c, 0x118, 0); // size hi
        put32(&mut c, 0x11c, 0x1000_0003); // 256 MiB, valid, active
        put32(&mut c, 0x140, (1 << 16) | 0x23);
        put32(&mut c, 0x144, (0x1c << 20) | 0x1e98);
        put32(&mut c, 0x148, 8);
        put32(&mut c, 0x14c, 0x0000_0100); // BAR0, block 1 (component), offset 0
        put32(&mut c, 0x150, 0);
        put32(&mut c, 0x154, 0x0000_0302); // BAR2, block 3 (device)
        put32(&mut c, 0x158, 0);
        c
    }

    #[test]
    fn walks_caps_and_dvsecs() {
        let c = type3_config();
        let caps = capabilities(&c[..]);
        assert_eq!(
            &caps[..],
            &[
                Cap {
                    offset: 0x40,
                    id: 0x10
                },
                Cap {
                    offset: 0x80,
                    id: 0x05
                }
            ]
        );
        let ext = ext_capabilities(&c[..]);
        assert_eq!(ext.len(), 2);
        let (off, d) = find_dvsec(&ext, CXL_VENDOR, 0).unwrap();
        assert_eq!((off, d.length), (0x100, 0x3c));
        let dev = cxl_device_dvsec(&c[..], off).unwrap();
        assert_eq!(dev.range1_size, 256 << 20);
        assert!(dev.mem_info_valid && dev.mem_active);
        assert_eq!(
            dev.capability & cxl_dvsec::CAP_MEM_CAPABLE,
            cxl_dvsec::CAP_MEM_CAPABLE
        );
        let (loff, l) = find_dvsec(&ext, CXL_VENDOR, 8).unwrap();
        let blocks = register_locator(&c[..], loff, l.length);
        assert_eq!(
            &blocks[..],
            &[
                RegisterBlock {
                    bar: 0,
                    block_id: BLOCK_COMPONENT,
                    offset: 0
                },
                RegisterBlock {
                    bar: 2,
                    block_id: BLOCK_DEVICE,
                    offset: 0
                }
            ]
        );
    }

    /// Config space of QEMU 10.0.2's cxl-type3 (0d:00.0), captured by the kernel.
    const CAPTURED: &[u8] = include_bytes!("fixtures/qemu10-cxl-type3-config.bin");

    #[test]
    fn captured_type3_config_space() {
        let c = CAPTURED;
        assert_eq!((c.read16(0), c.read16(2)), (0x8086, 0x0d93));
        let ext = ext_capabilities(c);
        let ids: std::vec::Vec<u16> = ext.iter().filter_map(|e| e.dvsec).map(|d| d.id).collect();
        assert_eq!(ids, [0, 8, 5, 7]);
        let (off, _) = find_dvsec(&ext, CXL_VENDOR, 0).unwrap();
        let dev = cxl_device_dvsec(c, off).unwrap();
        assert_eq!(dev.range1_size, 1 << 30);
        assert!(dev.mem_info_valid && dev.mem_active);
        let (loff, l) = find_dvsec(&ext, CXL_VENDOR, 8).unwrap();
        let blocks = register_locator(c, loff, l.length);
        assert!(blocks.contains(&RegisterBlock {
            bar: 0,
            block_id: BLOCK_COMPONENT,
            offset: 0
        }));
        assert!(
            blocks
                .iter()
                .any(|b| b.block_id == BLOCK_DEVICE && b.bar == 2)
        );
        // Every truncation of the captured space parses without panicking.
        for n in (0..c.len()).step_by(4) {
            let _ = ext_capabilities(&c[..n]);
            let _ = capabilities(&c[..n]);
        }
    }

    #[test]
    fn loops_and_garbage_terminate() {
        let mut c = type3_config();
        c[0x81] = 0x40; // classic loop 0x40 -> 0x80 -> 0x40
        assert_eq!(capabilities(&c[..]).len(), 2);
        put32(&mut c, 0x140, (0x100 << 20) | 0x23); // ext loop
        assert_eq!(ext_capabilities(&c[..]).len(), 2);
        // DVSEC claiming a huge length: locator entries are capped and bounded.
        put32(&mut c, 0x144, (0xfff << 20) | 0x1e98);
        assert!(register_locator(&c[..], 0xff0, 0xfff).len() <= 1);
        // Short buffers read as all-ones and never panic.
        let short = [0u8; 10];
        let _ = capabilities(&short[..]);
        let _ = ext_capabilities(&short[..]);
        let _ = cxl_device_dvsec(&short[..], 0xffc);
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut c = type3_config();
            for _ in 0..8 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x as usize >> 4) % c.len();
                c[i] = (x >> 24) as u8;
            }
            let e = ext_capabilities(&c[..]);
            for cap in &e {
                if let Some(d) = cap.dvsec {
                    let _ = register_locator(&c[..], cap.offset, d.length);
                    let _ = cxl_device_dvsec(&c[..], cap.offset);
                }
            }
            let _ = capabilities(&c[..]);
        }
    }

    #[test]
    fn bar_decoding() {
        // 64-bit prefetchable 2 GiB BAR at 0xE0_0000_0000.
        let b = decode_bar(2, 0x0000_000c, 0x8000_000c, 0xe0, 0xffff_ffff).unwrap();
        assert_eq!(
            (b.base, b.size, b.is64, b.prefetchable),
            (0xe0_0000_0000, 2 << 30, true, true)
        );
        // 32-bit 64 KiB memory BAR.
        let b = decode_bar(0, 0xfe80_0000, 0xffff_0000, 0, 0).unwrap();
        assert_eq!((b.base, b.size, b.is64), (0xfe80_0000, 0x10000, false));
        // I/O BAR of 32 ports.
        let b = decode_bar(4, 0xc001, 0xffff_ffe1, 0, 0).unwrap();
        assert_eq!((b.base, b.size, b.io), (0xc000, 32, true));
        // Unimplemented BAR.
        assert!(decode_bar(1, 0, 0, 0, 0).is_none());
        // An I/O BAR whose mask has no writable bit in the low 16 bits would be 64 KiB
        // of ports or more, i.e. size 0 after the 16-bit mask: not a BAR (fuzz `hw`).
        assert!(decode_bar(3, 0x6cff_ffff, 0x9b00_0000, 0, 0).is_none());
        assert!(decode_bar(3, 0x0000_c001, 0xffff_0001, 0, 0).is_none());
    }
}
