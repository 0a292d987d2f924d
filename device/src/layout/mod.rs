//! The CBD v3 on-memory format, declared once.
//!
//! Every layout (transport info, records, control page, non-coherent and
//! durability lines, the four SE and four CE formats) is a `wire!` module: a
//! list of `NAME: type = offset` that yields the offset constants the engines
//! index with, a [`Table`] of the same fields (the one `docs/protocol.md` is
//! tested against, see `device/tests/doc_tables.rs`) and compile-time checks
//! that each offset and the size agree with C's layout of the same fields (the
//! Linux CBD v3 driver's structs). Region-level constants (areas, segment map,
//! line positions) follow with their own `const` assertions.
//!
//! Rooms: `wire` (the macro, tables, little-endian accessors),
//! `transport_info` (transport info, region constants), `records` (meta header,
//! records, extension area, features), `segment` (channel segment map, control
//! page, lines), `entries` (SE/CE formats, ops, flags, errno).
//!
//! Every structure is encoded/decoded little-endian from byte slices; nothing
//! here depends on Rust struct layout at run time. Decoders take untrusted bytes:
//! they return `None` when the slice is too short and otherwise accept any bit
//! pattern (validation of values is the caller's job).

/// Page / record-copy size.
pub const PAGE: usize = 4096;
/// One 64-byte cache line: the unit of write-back in non-coherent mode.
pub const LINE: usize = 64;
/// The sector: unit of device offsets and lengths.
pub const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;

#[macro_use]
mod wire;

mod entries;
mod records;
mod segment;
mod transport_info;

pub use entries::*;
pub use records::*;
pub use segment::*;
pub use transport_info::*;
pub use wire::{Field, Table};
pub(crate) use wire::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

/// Every layout declared with `wire!`, in the order `docs/protocol.md` draws them.
pub const TABLES: &[Table] = &[
    tinfo::TABLE,
    meta::TABLE,
    host_rec::TABLE,
    backend_rec::TABLE,
    blkdev_rec::TABLE,
    segment_rec::TABLE,
    mgmt_rec::TABLE,
    ext::TABLE,
    ctrl::TABLE,
    nc_host::TABLE,
    nc_dev::TABLE,
    dur_dev::TABLE,
    dur_host::TABLE,
    se_plain::TABLE,
    se_crc::TABLE,
    se_data_crc::TABLE,
    se_both_crc::TABLE,
    ce_plain::TABLE,
    ce_crc::TABLE,
    ce_data_crc::TABLE,
    ce_both_crc::TABLE,
];
