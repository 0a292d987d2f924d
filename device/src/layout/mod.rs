//! The CBD v3 on-memory format, declared once by explicit offsets.
//!
//! Every structure is encoded/decoded little-endian from byte slices; nothing
//! here depends on Rust struct layout. Each offset table is followed by
//! compile-time checks (size, ordering, fits-in-slot), so a typo fails the build.
//! `docs/protocol.md` draws the same tables.
//!
//! Decoders take untrusted bytes: they return `None` when the slice is too short
//! and otherwise accept any bit pattern (validation of values is the caller's job).

/// Page / record-copy size.
pub const PAGE: usize = 4096;
/// One 64-byte cache line: the unit of write-back in non-coherent mode.
pub const LINE: usize = 64;
const MIB: u64 = 1024 * 1024;

mod entries;
mod records;
mod segment;
mod transport_info;

pub use entries::*;
pub use records::*;
pub use segment::*;
pub use transport_info::*;

// --------------------------------------------------------------------------------------
// little-endian helpers (callers guarantee the bounds; all uses are on checked slices)

#[inline]
pub(crate) fn get_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
#[inline]
pub(crate) fn get_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
#[inline]
pub(crate) fn get_u64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
#[inline]
pub(crate) fn put_u16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub(crate) fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub(crate) fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}
