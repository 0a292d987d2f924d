//! How a layout is declared: the `wire!` macro, the field tables it produces
//! ([`Field`], [`Table`]) and the little-endian accessors the codecs use.
//!
//! Every layout of the format (transport info, records, control page, lines,
//! entries) is written once as a list of `NAME: type = offset` in its module.
//! The macro turns that list into
//! * one `pub const NAME` per field (its offset, the type the engines index with),
//!   and `SIZE`;
//! * `TABLE`, the same list as data (name, offset, size), which the
//!   documentation test compares with the tables of `docs/protocol.md`;
//! * a `#[repr(C)]` mirror struct with the same fields in the same order and
//!   compile-time checks that every declared offset equals
//!   `core::mem::offset_of!` of the mirror and that `SIZE` equals its
//!   `size_of`. C's layout rules are what the Linux CBD v3 driver's structs
//!   follow, so a typo in an offset, a field that overlaps its neighbour or a
//!   wrong total size fails the build. Implicit C padding is left out of the
//!   list (it is zero on the wire); reserved fields the C structs name are
//!   listed.
//!
//! The mirror struct is never instantiated: codecs still read and write byte
//! slices with explicit little-endian accessors, so nothing depends on the
//! host's endianness or on Rust's layout of the types the engines use.

/// One named field of a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name as declared (upper case).
    pub name: &'static str,
    /// Offset from the start of the layout.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// A layout as data: its name, total size and fields in offset order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// The module name (`tinfo`, `se_both_crc`, …).
    pub name: &'static str,
    /// Total size in bytes (`SIZE` of the module).
    pub size: usize,
    pub fields: &'static [Field],
}

/// Declare a layout module. Syntax:
///
/// ```text
/// wire! {
///     /// docs
///     pub mod name: SIZE bytes [at BASE] as OffsetType {
///         /// docs
///         FIELD: type = offset,
///         ...
///     }
///     // further items of the module (constants, ...)
/// }
/// ```
/// `at BASE` (a literal or the name of a constant of the module) adds `BASE` to every generated
/// offset constant, for layouts embedded at a fixed place of a larger one; the
/// checks and the table stay relative to the layout's start.
macro_rules! wire {
    (
        $(#[$meta:meta])*
        pub mod $name:ident : $size:literal bytes at $base:tt as $oty:ty { $($body:tt)* }
        $($item:item)*
    ) => {
        wire! { @impl [$(#[$meta])*] $name $size $base $oty { $($body)* } $($item)* }
    };
    (
        $(#[$meta:meta])*
        pub mod $name:ident : $size:literal bytes as $oty:ty { $($body:tt)* }
        $($item:item)*
    ) => {
        wire! { @impl [$(#[$meta])*] $name $size 0 $oty { $($body)* } $($item)* }
    };
    (
        @impl [$(#[$meta:meta])*] $name:ident $size:literal $base:tt $oty:ty {
            $( $(#[$fmeta:meta])* $field:ident : $fty:ty = $off:literal, )+
        }
        $($item:item)*
    ) => {
        $(#[$meta])*
        pub mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$fmeta])*
                pub const $field: $oty = $base + $off;
            )+
            /// Size of this layout in bytes.
            pub const SIZE: usize = $size;
            /// This layout as data (for the documentation test and tools).
            pub const TABLE: $crate::layout::Table = $crate::layout::Table {
                name: stringify!($name),
                size: SIZE,
                fields: &[$(
                    $crate::layout::Field {
                        name: stringify!($field),
                        offset: $off,
                        size: ::core::mem::size_of::<$fty>(),
                    },
                )+],
            };
            /// The C view of this layout (never instantiated; see `layout::wire`).
            #[repr(C)]
            #[allow(non_snake_case, dead_code)]
            struct CLayout {
                $( $field: $fty, )+
            }
            const _: () = {
                $(
                    assert!(
                        ::core::mem::offset_of!(CLayout, $field) == $off,
                        concat!(
                            stringify!($name), "::", stringify!($field),
                            ": declared offset differs from the C layout"
                        )
                    );
                )+
                assert!(
                    ::core::mem::size_of::<CLayout>() == SIZE,
                    concat!(stringify!($name), ": SIZE differs from the C layout")
                );
            };
            $($item)*
        }
    };
}

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
