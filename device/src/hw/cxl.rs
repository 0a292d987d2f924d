//! CXL 2.0 component-register layout: the capability array and the HDM decoder
//! capability (CXL 2.0 §8.2.5), declared by offset, plus the pure arithmetic of
//! decoder programming. The kernel does the register I/O.
//!
//! ```text
//! component block (64 KiB, BAR named by the register locator DVSEC)
//!  +0x0000  CXL.io registers (unused here)
//!  +0x1000  CXL.cache/CXL.mem registers:
//!           +0x0  capability header: id 1 [15:0], array size [31:24]
//!           +0x4·n capability n: id [15:0], version [19:16], pointer [31:20]
//!                 (pointer is relative to +0x1000); id 5 = HDM decoder
//! HDM decoder capability
//!  +0x00 capability (decoder count [3:0], target count [7:4])
//!  +0x04 global control (bit 1: HDM decoder enable)
//!  +0x10 + 0x20·n  decoder n:
//!        +0x00 base lo [31:28]  +0x04 base hi  +0x08 size lo [31:28]  +0x0c size hi
//!        +0x10 control          +0x14 target list lo / DPA skip lo  +0x18 … hi
//! ```

/// Offset of the CXL.cache/mem register area inside a component block.
pub const CACHEMEM_OFFSET: usize = 0x1000;
/// Capability id of the HDM decoder capability.
pub const CAP_ID_HDM: u16 = 5;
/// Capability id of the CXL capability header itself.
pub const CAP_ID_CXL: u16 = 1;

/// HDM decoder capability register offsets.
pub mod hdm {
    pub const CAPABILITY: usize = 0x00;
    pub const GLOBAL_CONTROL: usize = 0x04;
    pub const GLOBAL_ENABLE: u32 = 1 << 1;
    /// Offset of decoder `n`'s register block.
    pub const fn decoder(n: usize) -> usize {
        0x10 + 0x20 * n
    }
    pub const BASE_LO: usize = 0x00;
    pub const BASE_HI: usize = 0x04;
    pub const SIZE_LO: usize = 0x08;
    pub const SIZE_HI: usize = 0x0c;
    pub const CTRL: usize = 0x10;
    pub const TARGET_LO: usize = 0x14;
    pub const TARGET_HI: usize = 0x18;
    pub const DPA_SKIP_LO: usize = 0x14;
    pub const DPA_SKIP_HI: usize = 0x18;
    pub const CTRL_LOCK_ON_COMMIT: u32 = 1 << 8;
    pub const CTRL_COMMIT: u32 = 1 << 9;
    pub const CTRL_COMMITTED: u32 = 1 << 10;
    pub const CTRL_ERR: u32 = 1 << 11;
    /// Target type: 1 = host-only coherent (type 3 memory expander).
    pub const CTRL_TARGET_TYPE3: u32 = 1 << 12;
    const _: () = assert!(decoder(1) == 0x30 && CTRL == 0x10 && TARGET_HI == 0x18);
}

/// Decoder granularity: HDM decoders work in 256 MiB units.
pub const HDM_ALIGN: u64 = 256 << 20;

/// One entry of the CXL capability array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapEntry {
    pub id: u16,
    pub version: u8,
    /// Offset relative to the cache/mem area (+0x1000).
    pub pointer: u16,
}

/// Errors decoding component registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CxlRegError {
    /// The first dword is not a CXL capability header (id 1).
    NoCapabilityHeader(u32),
    /// An entry's pointer points into the capability array header itself.
    PointerOutOfRange(u16),
}

impl core::fmt::Display for CxlRegError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CxlRegError::NoCapabilityHeader(v) => {
                write!(f, "no CXL capability header (read {v:#010x})")
            }
            CxlRegError::PointerOutOfRange(p) => {
                write!(f, "capability pointer {p:#x} out of range")
            }
        }
    }
}

/// Decode the capability array from a reader of cache/mem dwords (offset relative
/// to +0x1000).
pub fn cap_array(
    read32: impl Fn(usize) -> u32,
) -> Result<heapless::Vec<CapEntry, 16>, CxlRegError> {
    let h = read32(0);
    if h & 0xffff != CAP_ID_CXL as u32 {
        return Err(CxlRegError::NoCapabilityHeader(h));
    }
    let n = ((h >> 24) as usize).min(16);
    let mut out = heapless::Vec::new();
    for i in 1..=n {
        let e = read32(4 * i);
        let pointer = (e >> 20) as u16;
        if e & 0xffff == 0 {
            // Empty slot (QEMU leaves the HDM slot of a passthrough host bridge zero).
            continue;
        }
        if pointer < 4 {
            return Err(CxlRegError::PointerOutOfRange(pointer));
        }
        let _ = out.push(CapEntry {
            id: (e & 0xffff) as u16,
            version: ((e >> 16) & 0xf) as u8,
            pointer,
        });
    }
    Ok(out)
}

/// Number of decoders from the HDM capability register's [3:0] encoding.
pub fn decoder_count(cap: u32) -> usize {
    match cap & 0xf {
        0 => 1,
        n @ 1..=8 => 2 * n as usize,
        9 => 32, // not used by QEMU; bounded anyway
        _ => 0,
    }
}

/// Encode interleave ways for the decoder control IW field (CFMWS ENIW is already
/// this encoding for power-of-two ways).
pub fn ctrl_value(eniw: u8, hbig: u32, type3: bool) -> u32 {
    (hbig & 0xf) | ((eniw as u32 & 0xf) << 4) | if type3 { hdm::CTRL_TARGET_TYPE3 } else { 0 }
}

/// Split a 256 MiB-aligned base/size into the (lo, hi) register values.
pub fn lo_hi(v: u64) -> (u32, u32) {
    ((v as u32) & 0xf000_0000, (v >> 32) as u32)
}

/// Why a window cannot be decoded as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowError {
    Misaligned { base: u64, size: u64 },
    TooSmall { window: u64, capacity: u64 },
    Empty,
}

impl core::fmt::Display for WindowError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WindowError::Misaligned { base, size } => {
                write!(
                    f,
                    "window base {base:#x} / size {size:#x} not 256 MiB aligned"
                )
            }
            WindowError::TooSmall { window, capacity } => {
                write!(
                    f,
                    "fixed memory window of {window:#x} bytes cannot hold device capacity {capacity:#x}"
                )
            }
            WindowError::Empty => write!(f, "device reports zero capacity"),
        }
    }
}

/// Check that a capacity can be decoded at the start of a fixed window.
pub fn check_window(base: u64, window: u64, capacity: u64) -> Result<(), WindowError> {
    if capacity == 0 {
        return Err(WindowError::Empty);
    }
    if !base.is_multiple_of(HDM_ALIGN) || !capacity.is_multiple_of(HDM_ALIGN) {
        return Err(WindowError::Misaligned {
            base,
            size: capacity,
        });
    }
    if capacity > window {
        return Err(WindowError::TooSmall { window, capacity });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_cap_array() {
        // QEMU 10.0.2 endpoint: header with 3 entries; HDM at pointer 0x128.
        let regs = [
            0x0300_0001u32 | (1 << 16),
            0x0040_0002,
            0x0100_0003,
            0x1281_0005,
        ];
        let caps = cap_array(|o| regs.get(o / 4).copied().unwrap_or(0)).unwrap();
        assert_eq!(caps.len(), 3);
        assert_eq!(
            caps.iter().find(|c| c.id == CAP_ID_HDM).map(|c| c.pointer),
            Some(0x128)
        );
    }

    #[test]
    fn bad_cap_arrays() {
        assert!(matches!(
            cap_array(|_| 0),
            Err(CxlRegError::NoCapabilityHeader(0))
        ));
        let passthrough = [0x0100_0001u32, 0];
        assert_eq!(cap_array(|o| passthrough[o / 4]).unwrap().len(), 0);
        assert!(matches!(
            cap_array(|_| u32::MAX),
            Err(CxlRegError::NoCapabilityHeader(_))
        ));
        let regs = [0x0200_0001u32, 0x0000_0000, 0x0000_0005];
        // the zero slot is skipped, the HDM entry pointing into the header is not
        assert!(matches!(
            cap_array(|o| regs[o / 4]),
            Err(CxlRegError::PointerOutOfRange(_))
        ));
    }

    #[test]
    fn decoder_math() {
        assert_eq!(decoder_count(0), 1);
        assert_eq!(decoder_count(1), 2);
        assert_eq!(decoder_count(4), 8);
        assert_eq!(ctrl_value(0, 0, true), 0x1000);
        assert_eq!(ctrl_value(1, 2, false), 0x12);
        assert_eq!(lo_hi(0x1_1000_0000), (0x1000_0000, 1));
        // Linux leaves CTRL 0x1600 on a committed type-3 decoder.
        assert_eq!(
            ctrl_value(0, 0, true) | hdm::CTRL_COMMIT | hdm::CTRL_COMMITTED,
            0x1600
        );
        assert!(check_window(0x1_1000_0000, 4 << 30, 1 << 30).is_ok());
        assert_eq!(
            check_window(0x1_1000_0000, 256 << 20, 1 << 30),
            Err(WindowError::TooSmall {
                window: 256 << 20,
                capacity: 1 << 30
            })
        );
        assert!(matches!(
            check_window(0x1_1100_0000, 4 << 30, 1 << 30),
            Err(WindowError::Misaligned { .. })
        ));
        assert_eq!(check_window(0, 1 << 30, 0), Err(WindowError::Empty));
    }
}
