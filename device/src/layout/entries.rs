//! Submission and completion entries (SE/CE): opcodes, flags, the wire
//! formats selected by the transport CRC flags, and CE errno values.

use super::*;

/// SE/CE opcodes. 0..=2 are CBD v3; 3 and 4 are our extension.
pub mod op {
    pub const WRITE: u32 = 0;
    pub const READ: u32 = 1;
    pub const FLUSH: u32 = 2;
    pub const DISCARD: u32 = 3;
    pub const WRITE_ZEROES: u32 = 4;
}
/// SE flag: set by the host once it consumed the completion.
pub const SE_FLAG_DONE: u32 = 1;
/// SE intent bits (durability tokens; ignored unless DURABLE_TOKENS was accepted).
/// Neither bit = STANDARD (what a plain v3 host sends).
pub const SE_FLAG_EPHEMERAL: u32 = 1 << 1;
/// CRITICAL (= FUA): complete only once durable.
pub const SE_FLAG_CRITICAL: u32 = 1 << 2;
/// CE flag: the request was durable when it completed (CRITICAL writes, FLUSH).
pub const CE_FLAG_DURABLE: u32 = 1;
const _: () = assert!(
    SE_FLAG_DONE & (SE_FLAG_EPHEMERAL | SE_FLAG_CRITICAL) == 0
        && SE_FLAG_EPHEMERAL & SE_FLAG_CRITICAL == 0
);

// The SE and CE wire formats. CBD v3 compiles its `struct cbd_se` / `struct cbd_ce`
// with `se_crc` (CHANNEL_CRC) and `data_crc` (CHANNEL_DATA_CRC) as optional leading
// fields; the transport flags say which were compiled in, so there are four of each.

wire! {
    /// SE without CRCs (no CRC flag): 40 bytes.
    pub mod se_plain: 40 bytes as usize {
        OP: u32 = 0,
        /// [`super::SE_FLAG_DONE`], intent bits.
        FLAGS: u32 = 4,
        REQ_TID: u64 = 8,
        OFFSET: u64 = 16,
        LEN: u32 = 24,
        DATA_OFF: u32 = 28,
        DATA_LEN: u32 = 32,
    }
}
wire! {
    /// SE with the entry CRC only (CHANNEL_CRC): 48 bytes.
    pub mod se_crc: 48 bytes as usize {
        SE_CRC: u32 = 0,
        OP: u32 = 4,
        FLAGS: u32 = 8,
        REQ_TID: u64 = 16,
        OFFSET: u64 = 24,
        LEN: u32 = 32,
        DATA_OFF: u32 = 36,
        DATA_LEN: u32 = 40,
    }
}
wire! {
    /// SE with the payload CRC only (CHANNEL_DATA_CRC): 48 bytes.
    pub mod se_data_crc: 48 bytes as usize {
        DATA_CRC: u32 = 0,
        OP: u32 = 4,
        FLAGS: u32 = 8,
        REQ_TID: u64 = 16,
        OFFSET: u64 = 24,
        LEN: u32 = 32,
        DATA_OFF: u32 = 36,
        DATA_LEN: u32 = 40,
    }
}
wire! {
    /// SE with both CRCs (CHANNEL_CRC | CHANNEL_DATA_CRC, the non-coherent mode): 48 bytes.
    pub mod se_both_crc: 48 bytes as usize {
        /// crc32 over bytes 4..48.
        SE_CRC: u32 = 0,
        /// crc32 of the WRITE payload.
        DATA_CRC: u32 = 4,
        OP: u32 = 8,
        FLAGS: u32 = 12,
        REQ_TID: u64 = 16,
        OFFSET: u64 = 24,
        LEN: u32 = 32,
        DATA_OFF: u32 = 36,
        DATA_LEN: u32 = 40,
    }
}
wire! {
    /// CE without CRCs: 16 bytes.
    pub mod ce_plain: 16 bytes as usize {
        REQ_TID: u64 = 0,
        /// 0 or a negative errno ([`super::errno`]).
        RESULT: u32 = 8,
        /// [`super::CE_FLAG_DURABLE`].
        FLAGS: u32 = 12,
    }
}
wire! {
    /// CE with the entry CRC only: 24 bytes.
    pub mod ce_crc: 24 bytes as usize {
        CE_CRC: u32 = 0,
        REQ_TID: u64 = 8,
        RESULT: u32 = 16,
        FLAGS: u32 = 20,
    }
}
wire! {
    /// CE with the payload CRC only: 24 bytes.
    pub mod ce_data_crc: 24 bytes as usize {
        DATA_CRC: u32 = 0,
        REQ_TID: u64 = 8,
        RESULT: u32 = 16,
        FLAGS: u32 = 20,
    }
}
wire! {
    /// CE with both CRCs: 24 bytes.
    pub mod ce_both_crc: 24 bytes as usize {
        /// crc32 over bytes 4..24.
        CE_CRC: u32 = 0,
        /// crc32 of the READ payload.
        DATA_CRC: u32 = 4,
        REQ_TID: u64 = 8,
        RESULT: u32 = 16,
        FLAGS: u32 = 20,
    }
}

/// Where each SE field is in one of the four SE formats (from its `wire!` module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeFields {
    pub size: usize,
    pub se_crc: Option<usize>,
    pub data_crc: Option<usize>,
    pub op: usize,
    pub flags: usize,
    pub req_tid: usize,
    pub offset: usize,
    pub len: usize,
    pub data_off: usize,
    pub data_len: usize,
}

/// Where each CE field is in one of the four CE formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CeFields {
    pub size: usize,
    pub ce_crc: Option<usize>,
    pub data_crc: Option<usize>,
    pub req_tid: usize,
    pub result: usize,
    pub flags: usize,
}

macro_rules! se_fields {
    ($m:ident, $crc:expr, $dcrc:expr) => {
        SeFields {
            size: $m::SIZE,
            se_crc: $crc,
            data_crc: $dcrc,
            op: $m::OP,
            flags: $m::FLAGS,
            req_tid: $m::REQ_TID,
            offset: $m::OFFSET,
            len: $m::LEN,
            data_off: $m::DATA_OFF,
            data_len: $m::DATA_LEN,
        }
    };
}
macro_rules! ce_fields {
    ($m:ident, $crc:expr, $dcrc:expr) => {
        CeFields {
            size: $m::SIZE,
            ce_crc: $crc,
            data_crc: $dcrc,
            req_tid: $m::REQ_TID,
            result: $m::RESULT,
            flags: $m::FLAGS,
        }
    };
}

impl SeFields {
    pub const PLAIN: Self = se_fields!(se_plain, None, None);
    pub const CRC: Self = se_fields!(se_crc, Some(se_crc::SE_CRC), None);
    pub const DATA_CRC: Self = se_fields!(se_data_crc, None, Some(se_data_crc::DATA_CRC));
    pub const BOTH_CRC: Self = se_fields!(
        se_both_crc,
        Some(se_both_crc::SE_CRC),
        Some(se_both_crc::DATA_CRC)
    );
    /// The format for the transport's CRC flags.
    pub const fn select(se_crc: bool, data_crc: bool) -> &'static Self {
        match (se_crc, data_crc) {
            (false, false) => &Self::PLAIN,
            (true, false) => &Self::CRC,
            (false, true) => &Self::DATA_CRC,
            (true, true) => &Self::BOTH_CRC,
        }
    }
}
impl CeFields {
    pub const PLAIN: Self = ce_fields!(ce_plain, None, None);
    pub const CRC: Self = ce_fields!(ce_crc, Some(ce_crc::CE_CRC), None);
    pub const DATA_CRC: Self = ce_fields!(ce_data_crc, None, Some(ce_data_crc::DATA_CRC));
    pub const BOTH_CRC: Self = ce_fields!(
        ce_both_crc,
        Some(ce_both_crc::CE_CRC),
        Some(ce_both_crc::DATA_CRC)
    );
    /// The format for the transport's CRC flags.
    pub const fn select(ce_crc: bool, data_crc: bool) -> &'static Self {
        match (ce_crc, data_crc) {
            (false, false) => &Self::PLAIN,
            (true, false) => &Self::CRC,
            (false, true) => &Self::DATA_CRC,
            (true, true) => &Self::BOTH_CRC,
        }
    }
}

/// Maximum SE/CE size over all formats.
pub const MAX_SE_SIZE: usize = se_both_crc::SIZE;
pub const MAX_CE_SIZE: usize = ce_both_crc::SIZE;

const _: () = {
    // The entry CRC, when present, is the first word and covers the rest (`seal`).
    let all_se = [
        SeFields::PLAIN,
        SeFields::CRC,
        SeFields::DATA_CRC,
        SeFields::BOTH_CRC,
    ];
    let all_ce = [
        CeFields::PLAIN,
        CeFields::CRC,
        CeFields::DATA_CRC,
        CeFields::BOTH_CRC,
    ];
    let mut i = 0;
    while i < 4 {
        assert!(all_se[i].size <= MAX_SE_SIZE && all_ce[i].size <= MAX_CE_SIZE);
        assert!(matches!(all_se[i].se_crc, None | Some(0)));
        assert!(matches!(all_ce[i].ce_crc, None | Some(0)));
        i += 1;
    }
};

/// Geometry of SE and CE for one set of transport CRC flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLayout {
    pub se_crc: bool,
    pub data_crc: bool,
    pub se_size: u32,
    pub ce_size: u32,
    /// Offset of the DONE-bearing `flags` field inside an SE.
    pub se_flags_off: u32,
}

impl EntryLayout {
    pub const fn from_flags(flags: u16) -> Self {
        let se_crc = flags & tflags::CHANNEL_CRC != 0;
        let data_crc = flags & tflags::CHANNEL_DATA_CRC != 0;
        let se = SeFields::select(se_crc, data_crc);
        let ce = CeFields::select(se_crc, data_crc);
        Self {
            se_crc,
            data_crc,
            se_size: se.size as u32,
            ce_size: ce.size as u32,
            se_flags_off: se.flags as u32,
        }
    }
    /// Field positions of this layout's SE.
    pub const fn se_fields(&self) -> &'static SeFields {
        SeFields::select(self.se_crc, self.data_crc)
    }
    /// Field positions of this layout's CE.
    pub const fn ce_fields(&self) -> &'static CeFields {
        CeFields::select(self.se_crc, self.data_crc)
    }
    pub const fn compr_size(&self) -> u64 {
        chan::COMPR_ENTRIES * self.ce_size as u64
    }
    pub const fn submr_off(&self) -> u64 {
        chan::COMPR_OFF + self.compr_size()
    }
    pub const fn submr_size(&self) -> u64 {
        let room = chan::DATA_OFF - self.submr_off();
        room / self.se_size as u64 * self.se_size as u64
    }

    pub fn decode_se(&self, b: &[u8]) -> Option<Se> {
        if b.len() < self.se_size as usize {
            return None;
        }
        let f = self.se_fields();
        Some(Se {
            se_crc: f.se_crc.map_or(0, |o| get_u32(b, o)),
            data_crc: f.data_crc.map_or(0, |o| get_u32(b, o)),
            op: get_u32(b, f.op),
            flags: get_u32(b, f.flags),
            req_tid: get_u64(b, f.req_tid),
            offset: get_u64(b, f.offset),
            len: get_u32(b, f.len),
            data_off: get_u32(b, f.data_off),
            data_len: get_u32(b, f.data_len),
        })
    }

    /// Encode into `b[..se_size]` (zeroing padding). CRC fields are written as given;
    /// use [`EntryLayout::seal_se`] to compute `se_crc`.
    pub fn encode_se(&self, se: &Se, b: &mut [u8]) {
        let b = &mut b[..self.se_size as usize];
        b.fill(0);
        let f = self.se_fields();
        if let Some(o) = f.se_crc {
            put_u32(b, o, se.se_crc);
        }
        if let Some(o) = f.data_crc {
            put_u32(b, o, se.data_crc);
        }
        put_u32(b, f.op, se.op);
        put_u32(b, f.flags, se.flags);
        put_u64(b, f.req_tid, se.req_tid);
        put_u64(b, f.offset, se.offset);
        put_u32(b, f.len, se.len);
        put_u32(b, f.data_off, se.data_off);
        put_u32(b, f.data_len, se.data_len);
    }

    /// Compute and store the entry CRC (if this layout has one) over bytes 4..size.
    pub fn seal(&self, b: &mut [u8], size: u32) {
        if self.se_crc {
            let c = crate::crc::crc32(&b[4..size as usize]);
            put_u32(b, 0, c);
        }
    }
    pub fn seal_se(&self, b: &mut [u8]) {
        self.seal(b, self.se_size)
    }
    pub fn seal_ce(&self, b: &mut [u8]) {
        self.seal(b, self.ce_size)
    }
    /// True if the entry CRC verifies (or the layout has none).
    pub fn entry_crc_ok(&self, b: &[u8], size: u32) -> bool {
        !self.se_crc
            || (b.len() >= size as usize
                && get_u32(b, 0) == crate::crc::crc32(&b[4..size as usize]))
    }

    pub fn decode_ce(&self, b: &[u8]) -> Option<Ce> {
        if b.len() < self.ce_size as usize {
            return None;
        }
        let f = self.ce_fields();
        Some(Ce {
            ce_crc: f.ce_crc.map_or(0, |o| get_u32(b, o)),
            data_crc: f.data_crc.map_or(0, |o| get_u32(b, o)),
            req_tid: get_u64(b, f.req_tid),
            result: get_u32(b, f.result) as i32,
            flags: get_u32(b, f.flags),
        })
    }

    pub fn encode_ce(&self, ce: &Ce, b: &mut [u8]) {
        let b = &mut b[..self.ce_size as usize];
        b.fill(0);
        let f = self.ce_fields();
        if let Some(o) = f.ce_crc {
            put_u32(b, o, ce.ce_crc);
        }
        if let Some(o) = f.data_crc {
            put_u32(b, o, ce.data_crc);
        }
        put_u64(b, f.req_tid, ce.req_tid);
        put_u32(b, f.result, ce.result as u32);
        put_u32(b, f.flags, ce.flags);
    }
}

const _: () = {
    let none = EntryLayout::from_flags(0);
    let both = EntryLayout::from_flags(tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC);
    assert!(none.se_size == 40 && none.ce_size == 16 && both.se_size == 48 && both.ce_size == 24);
    assert!(none.submr_off() == 0x7000 && none.submr_size() == 4_165_600);
    assert!(both.submr_off() == 0x9000 && both.submr_size() == 4_157_424);
    assert!(both.submr_off() + both.submr_size() <= chan::DATA_OFF);
};

/// Submission entry (all fields; CRC fields are 0 when the layout lacks them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Se {
    pub se_crc: u32,
    pub data_crc: u32,
    pub op: u32,
    pub flags: u32,
    pub req_tid: u64,
    pub offset: u64,
    pub len: u32,
    pub data_off: u32,
    pub data_len: u32,
}

/// Completion entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ce {
    pub ce_crc: u32,
    pub data_crc: u32,
    pub req_tid: u64,
    /// 0 or a negative errno.
    pub result: i32,
    pub flags: u32,
}

/// Negative errno values used in CE results.
pub mod errno {
    pub const EIO: i32 = -5;
    pub const EINVAL: i32 = -22;
    pub const ENOSPC: i32 = -28;
    pub const EOPNOTSUPP: i32 = -95;
    pub const EBADMSG: i32 = -74;
}
