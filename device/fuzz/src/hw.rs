//! The platform parsers (`device::hw`): what the kernel reads at boot from firmware
//! and from devices, all untrusted. The first byte picks the parser; for the CEDT, the
//! QEMU table (`device/src/hw/fixtures/`) edited by the input with its checksum fixed
//! gets past the checksum, as the parser's own random test does.
//!
//! Properties: no panic, no endless walk, and what a parser returns is what it
//! promises: CEDT windows with one target per interleave way, capability offsets in
//! range, aligned and unique, at most the documented number of entries, DVSEC register
//! blocks inside config space, HDM capability pointers past the array header, BAR sizes
//! that are not zero, decoder counts and windows that satisfy their own checks.

use device::hw::{cedt, cxl, pci};
use pci::ConfigSpace;

/// Captured from QEMU 10.0.2 (the same bytes device/src/hw's tests parse).
const QEMU_CEDT: &[u8] = include_bytes!("../../src/hw/fixtures/qemu10-cxl-cedt.bin");
const QEMU_TYPE3: &[u8] = include_bytes!("../../src/hw/fixtures/qemu10-cxl-type3-config.bin");

pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 6 {
        0 => check_cedt(rest),
        1 => {
            // The captured table with edits `(offset, value)`, the checksum fixed, and
            // maybe a new length (truncated or extended with the input's tail).
            let mut t = QEMU_CEDT.to_vec();
            let (edits, tail) = rest.split_at(rest.len().min(32) & !1);
            for e in edits.chunks_exact(2) {
                let i = e[0] as usize % t.len();
                t[i] = e[1];
            }
            t.extend_from_slice(tail);
            if edits.first().is_some_and(|b| b & 1 == 1) {
                let len = t.len() as u32;
                t[4..8].copy_from_slice(&len.to_le_bytes());
            }
            let len = (u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize).min(t.len());
            if len >= 10 {
                t[9] = 0;
                let s = t[..len].iter().fold(0u8, |a, &b| a.wrapping_add(b));
                t[9] = 0u8.wrapping_sub(s);
            }
            check_cedt(&t);
        }
        2 => check_config(rest),
        3 => {
            // The captured type-3 config space with edits (u16 offset, u8 value).
            let mut c = QEMU_TYPE3.to_vec();
            for e in rest.chunks_exact(3) {
                let i = u16::from_le_bytes([e[0], e[1]]) as usize % c.len();
                c[i] = e[2];
            }
            check_config(&c);
        }
        4 => check_component_regs(rest),
        _ => check_bars_and_math(rest),
    }
}

fn check_cedt(bytes: &[u8]) {
    let Ok(t) = cedt::parse(bytes) else {
        return;
    };
    let len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert!((36..=bytes.len()).contains(&len));
    assert!(t.chbs.len() <= cedt::MAX_ENTRIES && t.cfmws.len() <= cedt::MAX_ENTRIES);
    for w in &t.cfmws {
        assert!(w.eniw <= 3, "ENIW {} accepted", w.eniw);
        assert_eq!(w.targets.len() as u32, w.ways(), "one target per way");
    }
    // Only the table's own bytes count: trailing bytes change nothing.
    let mut longer = bytes[..len].to_vec();
    longer.extend_from_slice(&[0xA5; 7]);
    assert_eq!(cedt::parse(&longer), Ok(t.clone()));
    assert_eq!(cedt::parse(&bytes[..len]), Ok(t));
}

fn check_config(bytes: &[u8]) {
    let cfg: &[u8] = bytes;
    let caps = pci::capabilities(cfg);
    assert!(caps.len() <= pci::MAX_CAPS);
    for (i, c) in caps.iter().enumerate() {
        assert!(
            (0x40..0x100).contains(&c.offset) && c.offset % 4 == 0,
            "{c:?}"
        );
        assert!(
            caps[..i].iter().all(|d| d.offset != c.offset),
            "cap listed twice"
        );
    }
    let ext = pci::ext_capabilities(cfg);
    assert!(ext.len() <= pci::MAX_CAPS);
    for (i, c) in ext.iter().enumerate() {
        assert!(
            (0x100..=0xffc).contains(&c.offset) && c.offset % 4 == 0,
            "{c:?}"
        );
        assert!(
            ext[..i].iter().all(|d| d.offset != c.offset),
            "ext cap listed twice"
        );
        if let Some(d) = c.dvsec {
            assert_eq!(c.id, pci::EXT_CAP_DVSEC);
            let blocks = pci::register_locator(cfg, c.offset, d.length);
            assert!(blocks.len() <= 8);
            // Every entry read lies inside config space.
            assert!(c.offset as usize + 0x0c + 8 * blocks.len() <= 0x1000);
            for b in &blocks {
                assert!(b.bar < 8 && b.offset & 0xffff == 0);
            }
            if let Some(dev) = pci::cxl_device_dvsec(cfg, c.offset) {
                assert!(dev.range1_size & 0x0fff_ffff == 0 && dev.range1_base & 0x0fff_ffff == 0);
            }
            let _ = pci::cxl_dvsec_name(d.id);
        }
    }
    if let Some((off, d)) = pci::find_dvsec(&ext, pci::CXL_VENDOR, 0) {
        assert!(ext.iter().any(|c| c.offset == off && c.dvsec == Some(d)));
    }
    for off in [0u16, 0x3e, 0xfd8, 0xfd9, 0xffc, 0xfff] {
        let _ = pci::cxl_device_dvsec(cfg, off);
        let _ = pci::register_locator(cfg, off, 0xfff);
    }
    let _ = pci::class_name(cfg.read8(0x0b), cfg.read8(0x0a));
}

fn check_component_regs(bytes: &[u8]) {
    let read32 = |o: usize| {
        bytes
            .get(o..o + 4)
            .map_or(0xffff_ffff, |b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    if let Ok(caps) = cxl::cap_array(read32) {
        assert!(caps.len() <= 16);
        for c in &caps {
            assert!(c.id != 0 && c.pointer >= 4 && c.version < 16, "{c:?}");
        }
        if let Some(h) = caps.iter().find(|c| c.id == cxl::CAP_ID_HDM) {
            let n = cxl::decoder_count(read32(h.pointer as usize + cxl::hdm::CAPABILITY));
            assert!(n <= 32);
            for d in 0..n {
                // The registers of every decoder lie inside a 64 KiB component block.
                let top = cxl::CACHEMEM_OFFSET
                    + h.pointer as usize
                    + cxl::hdm::decoder(d)
                    + cxl::hdm::TARGET_HI;
                assert!(top + 4 <= 0x1_0000, "decoder {d} at {top:#x}");
            }
        }
    }
}

fn check_bars_and_math(bytes: &[u8]) {
    let mut w = [0u32; 8];
    for (i, c) in bytes.chunks(4).take(8).enumerate() {
        let mut b = [0u8; 4];
        b[..c.len()].copy_from_slice(c);
        w[i] = u32::from_le_bytes(b);
    }
    if let Some(bar) = pci::decode_bar(w[0] as u8 % 6, w[1], w[2], w[3], w[4]) {
        assert!(bar.size > 0, "{bar:?}");
        if !bar.io {
            assert!(bar.size >= 16 && bar.base & 0xf == 0, "{bar:?}");
        }
    }
    let n = cxl::decoder_count(w[5]);
    assert!(n <= 32);
    let v = (w[6] as u64) << 32 | w[7] as u64;
    let (lo, hi) = cxl::lo_hi(v);
    assert_eq!(lo & 0x0fff_ffff, 0);
    assert_eq!(((hi as u64) << 32) | lo as u64, v & !0x0fff_ffff);
    let _ = cxl::ctrl_value(w[5] as u8, w[6], w[7] & 1 == 1);
    let (base, window, capacity) = (v, (w[5] as u64) << 28, (w[1] as u64) << 20);
    if cxl::check_window(base, window, capacity).is_ok() {
        assert!(capacity > 0 && capacity <= window);
        assert!(base % cxl::HDM_ALIGN == 0 && capacity % cxl::HDM_ALIGN == 0);
    }
}
