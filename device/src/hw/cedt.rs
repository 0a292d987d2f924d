//! ACPI CEDT (CXL Early Discovery Table) parser.
//!
//! Layout (CXL 2.0 §9.17.1): the 36-byte ACPI header, then subtables, each starting
//! with `type: u8, reserved: u8, length: u16`.
//!
//! ```text
//! CHBS (type 0, 32 bytes)            CFMWS (type 1, 36 + 4·N bytes)
//!  +4  UID            u32             +8  base HPA             u64
//!  +8  CXL version    u32             +16 window size          u64
//!  +16 register base  u64             +24 ENIW (ways = 2^ENIW) u8
//!  +24 register len   u64             +25 interleave arith.    u8
//!                                     +28 HBIG (256 B << HBIG) u32
//!                                     +32 restrictions         u16
//!                                     +34 QTG id               u16
//!                                     +36 target UIDs          u32 × N
//! ```

use heapless::Vec;

/// At most this many host bridges / windows are kept (QEMU topologies use 1–2).
pub const MAX_ENTRIES: usize = 8;
/// At most this many interleave targets per window (ENIW ≤ 3).
pub const MAX_TARGETS: usize = 8;

const HEADER_LEN: usize = 36;

/// CXL host bridge structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chbs {
    pub uid: u32,
    /// 0 = CXL 1.1 (RCRB), 1 = CXL 2.0 (component registers).
    pub cxl_version: u32,
    pub base: u64,
    pub length: u64,
}

/// CXL fixed memory window structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cfmws {
    pub base: u64,
    pub size: u64,
    pub eniw: u8,
    pub arithmetic: u8,
    pub hbig: u32,
    pub restrictions: u16,
    pub qtg_id: u16,
    pub targets: Vec<u32, MAX_TARGETS>,
}

impl Cfmws {
    /// Number of interleave ways (1, 2, 4, 8 for the power-of-two encodings).
    pub fn ways(&self) -> u32 {
        if self.eniw < 8 { 1 << self.eniw } else { 0 }
    }
}

/// A parsed CEDT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cedt {
    pub chbs: Vec<Chbs, MAX_ENTRIES>,
    pub cfmws: Vec<Cfmws, MAX_ENTRIES>,
    /// Subtables of other types (CXIMS, RDPAS, CSDS…) that were skipped.
    pub skipped: usize,
}

/// Why a CEDT could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CedtError {
    /// Fewer bytes than the ACPI header.
    Truncated {
        need: usize,
        have: usize,
    },
    BadSignature([u8; 4]),
    /// The header's length field exceeds the bytes provided or is below 36.
    BadLength {
        length: u32,
        have: usize,
    },
    BadChecksum(u8),
    /// A subtable's length is too small for its type or runs past the table end.
    BadSubtable {
        offset: usize,
        kind: u8,
        length: u16,
    },
    /// ENIW value this parser does not handle (only power-of-two ways 1..8).
    UnsupportedInterleave {
        offset: usize,
        eniw: u8,
    },
    TooManyEntries,
}

impl core::fmt::Display for CedtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CedtError::Truncated { need, have } => {
                write!(f, "CEDT truncated: need {need} bytes, have {have}")
            }
            CedtError::BadSignature(s) => write!(f, "not a CEDT (signature {s:02x?})"),
            CedtError::BadLength { length, have } => {
                write!(
                    f,
                    "CEDT length field {length} invalid ({have} bytes available)"
                )
            }
            CedtError::BadChecksum(s) => write!(f, "CEDT checksum wrong (byte sum {s:#04x})"),
            CedtError::BadSubtable {
                offset,
                kind,
                length,
            } => {
                write!(
                    f,
                    "CEDT subtable type {kind} at +{offset:#x} has bad length {length}"
                )
            }
            CedtError::UnsupportedInterleave { offset, eniw } => {
                write!(f, "CFMWS at +{offset:#x}: unsupported ENIW {eniw}")
            }
            CedtError::TooManyEntries => {
                write!(f, "CEDT has more than {MAX_ENTRIES} entries of one kind")
            }
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | (u64::from(u32_at(b, o + 4)) << 32)
}

/// Parse a CEDT from its raw bytes (header included). `bytes` may be longer than
/// the table; only `header.length` bytes are used.
pub fn parse(bytes: &[u8]) -> Result<Cedt, CedtError> {
    if bytes.len() < HEADER_LEN {
        return Err(CedtError::Truncated {
            need: HEADER_LEN,
            have: bytes.len(),
        });
    }
    let sig = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if &sig != b"CEDT" {
        return Err(CedtError::BadSignature(sig));
    }
    let length = u32_at(bytes, 4);
    let len = length as usize;
    if len < HEADER_LEN || len > bytes.len() {
        return Err(CedtError::BadLength {
            length,
            have: bytes.len(),
        });
    }
    let table = &bytes[..len];
    let sum = table.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    if sum != 0 {
        return Err(CedtError::BadChecksum(sum));
    }
    let mut out = Cedt::default();
    let mut off = HEADER_LEN;
    while off < len {
        if off + 4 > len {
            return Err(CedtError::BadSubtable {
                offset: off,
                kind: table[off],
                length: 0,
            });
        }
        let kind = table[off];
        let sublen = u16_at(table, off + 2);
        let sl = sublen as usize;
        let bad = CedtError::BadSubtable {
            offset: off,
            kind,
            length: sublen,
        };
        if sl < 4 || off + sl > len {
            return Err(bad);
        }
        let s = &table[off..off + sl];
        match kind {
            0 => {
                if sl < 32 {
                    return Err(bad);
                }
                let c = Chbs {
                    uid: u32_at(s, 4),
                    cxl_version: u32_at(s, 8),
                    base: u64_at(s, 16),
                    length: u64_at(s, 24),
                };
                out.chbs.push(c).map_err(|_| CedtError::TooManyEntries)?;
            }
            1 => {
                if sl < 36 {
                    return Err(bad);
                }
                let eniw = s[24];
                if eniw > 3 {
                    return Err(CedtError::UnsupportedInterleave { offset: off, eniw });
                }
                let n = 1usize << eniw;
                if sl < 36 + 4 * n {
                    return Err(bad);
                }
                let mut targets = Vec::new();
                for i in 0..n {
                    // n ≤ 8 = MAX_TARGETS, so this cannot fail.
                    let _ = targets.push(u32_at(s, 36 + 4 * i));
                }
                let w = Cfmws {
                    base: u64_at(s, 8),
                    size: u64_at(s, 16),
                    eniw,
                    arithmetic: s[25],
                    hbig: u32_at(s, 28),
                    restrictions: u16_at(s, 32),
                    qtg_id: u16_at(s, 34),
                    targets,
                };
                out.cfmws.push(w).map_err(|_| CedtError::TooManyEntries)?;
            }
            _ => out.skipped += 1,
        }
        off += sl;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The CEDT QEMU 10.0.2 builds for the `cxl` topology (one pxb-cxl with
    /// bus_nr=12, one 4 GiB window), as read from /sys/firmware/acpi/tables/CEDT.
    pub fn qemu_cedt() -> std::vec::Vec<u8> {
        let mut t = std::vec::Vec::new();
        t.extend_from_slice(b"CEDT");
        t.extend_from_slice(&0x6cu32.to_le_bytes());
        t.push(1); // revision
        t.push(0); // checksum, fixed below
        t.extend_from_slice(b"BOCHS ");
        t.extend_from_slice(b"BXPC    ");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(b"BXPC");
        t.extend_from_slice(&1u32.to_le_bytes());
        // CHBS
        t.extend_from_slice(&[0, 0]);
        t.extend_from_slice(&32u16.to_le_bytes());
        t.extend_from_slice(&0x0cu32.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&0x1_0000_0000u64.to_le_bytes());
        t.extend_from_slice(&0x10000u64.to_le_bytes());
        // CFMWS
        t.extend_from_slice(&[1, 0]);
        t.extend_from_slice(&40u16.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&0x1_1000_0000u64.to_le_bytes());
        t.extend_from_slice(&0x1_0000_0000u64.to_le_bytes());
        t.push(0);
        t.push(0);
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&0x000fu16.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&0x0cu32.to_le_bytes());
        assert_eq!(t.len(), 0x6c);
        fix_checksum(&mut t);
        t
    }

    pub fn fix_checksum(t: &mut [u8]) {
        t[9] = 0;
        let s = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        t[9] = 0u8.wrapping_sub(s);
    }

    #[test]
    fn parses_qemu_table() {
        let c = parse(&qemu_cedt()).unwrap();
        assert_eq!(c.chbs.len(), 1);
        assert_eq!(
            c.chbs[0],
            Chbs {
                uid: 0x0c,
                cxl_version: 1,
                base: 0x1_0000_0000,
                length: 0x10000
            }
        );
        assert_eq!(c.cfmws.len(), 1);
        let w = &c.cfmws[0];
        assert_eq!(
            (w.base, w.size, w.ways(), w.hbig, w.restrictions),
            (0x1_1000_0000, 4 << 30, 1, 0, 0xf)
        );
        assert_eq!(&w.targets[..], &[0x0c]);
    }

    /// Bytes captured from QEMU 10.0.2 (`cargo run -- --topology cxl --log trace`).
    const CAPTURED: &[u8] = include_bytes!("fixtures/qemu10-cxl-cedt.bin");

    #[test]
    fn parses_captured_qemu_table() {
        let c = parse(CAPTURED).unwrap();
        assert_eq!(
            &c.chbs[..],
            &[Chbs {
                uid: 0x0c,
                cxl_version: 1,
                base: 0x1_0000_0000,
                length: 0x10000
            }]
        );
        let w = &c.cfmws[0];
        assert_eq!(
            (w.base, w.size, w.ways(), w.hbig, w.restrictions),
            (0x1_1000_0000, 1 << 30, 1, 0, 0xf)
        );
        assert_eq!(&w.targets[..], &[0x0c]);
        // and the synthesized table used below differs only in the window size
        let mut synth = qemu_cedt();
        synth[68 + 16..68 + 24].copy_from_slice(&(1u64 << 30).to_le_bytes());
        synth[9] = CAPTURED[9];
        assert_eq!(&synth[10..], &CAPTURED[10..]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let t = qemu_cedt();
        for n in 0..t.len() {
            let mut cut = t[..n].to_vec();
            if n >= 36 {
                cut[4..8].copy_from_slice(&(n as u32).to_le_bytes());
                fix_checksum(&mut cut);
            }
            match n {
                // Cut exactly at a subtable boundary: a shorter but valid table.
                36 => assert_eq!(parse(&cut).map(|c| c.chbs.len() + c.cfmws.len()), Ok(0)),
                68 => assert_eq!(
                    parse(&cut).map(|c| (c.chbs.len(), c.cfmws.len())),
                    Ok((1, 0))
                ),
                _ => assert!(parse(&cut).is_err(), "truncated at {n} parsed"),
            }
        }
    }

    #[test]
    fn malformed_tables() {
        let good = qemu_cedt();
        let mut t = good.clone();
        t[0] = b'X';
        assert!(matches!(parse(&t), Err(CedtError::BadSignature(_))));
        let mut t = good.clone();
        t[20] ^= 1;
        assert!(matches!(parse(&t), Err(CedtError::BadChecksum(_))));
        let mut t = good.clone();
        t[4..8].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(matches!(parse(&t), Err(CedtError::BadLength { .. })));
        // CHBS claiming length 0 (would loop forever if not rejected).
        let mut t = good.clone();
        t[38..40].copy_from_slice(&0u16.to_le_bytes());
        fix_checksum(&mut t);
        assert!(matches!(parse(&t), Err(CedtError::BadSubtable { .. })));
        // CFMWS claiming 2 ways but carrying one target.
        let mut t = good.clone();
        t[68 + 24] = 1;
        fix_checksum(&mut t);
        assert!(matches!(parse(&t), Err(CedtError::BadSubtable { .. })));
        let mut t = good.clone();
        t[68 + 24] = 9;
        fix_checksum(&mut t);
        assert!(matches!(
            parse(&t),
            Err(CedtError::UnsupportedInterleave { .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::rng::SplitMix64::new(1);
        let good = qemu_cedt();
        for _ in 0..20_000 {
            let mut t = good.clone();
            for _ in 0..4 {
                let x = rng.next();
                let i = (x as usize) % t.len();
                t[i] = (x >> 32) as u8;
            }
            fix_checksum(&mut t);
            let _ = parse(&t);
        }
    }
}
