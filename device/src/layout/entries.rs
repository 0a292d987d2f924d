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
        let any = se_crc || data_crc;
        Self {
            se_crc,
            data_crc,
            se_size: if any { 48 } else { 40 },
            ce_size: if any { 24 } else { 16 },
            se_flags_off: if !any {
                4
            } else if se_crc && data_crc {
                12
            } else {
                8
            },
        }
    }
    fn any(&self) -> bool {
        self.se_crc || self.data_crc
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
    /// (op, flags, req_tid, offset, len, data_off, data_len, se_crc?, data_crc?) offsets.
    fn se_offsets(&self) -> [usize; 7] {
        if !self.any() {
            [0, 4, 8, 16, 24, 28, 32]
        } else {
            [
                self.se_flags_off as usize - 4,
                self.se_flags_off as usize,
                16,
                24,
                32,
                36,
                40,
            ]
        }
    }
    fn crc_offsets(&self) -> (Option<usize>, Option<usize>) {
        match (self.se_crc, self.data_crc) {
            (true, true) => (Some(0), Some(4)),
            (true, false) => (Some(0), None),
            (false, true) => (None, Some(0)),
            (false, false) => (None, None),
        }
    }
    /// (req_tid, result, flags) offsets in a CE.
    fn ce_offsets(&self) -> [usize; 3] {
        if !self.any() { [0, 8, 12] } else { [8, 16, 20] }
    }

    pub fn decode_se(&self, b: &[u8]) -> Option<Se> {
        if b.len() < self.se_size as usize {
            return None;
        }
        let [o_op, o_fl, o_tid, o_off, o_len, o_doff, o_dlen] = self.se_offsets();
        let (c, d) = self.crc_offsets();
        Some(Se {
            se_crc: c.map_or(0, |o| get_u32(b, o)),
            data_crc: d.map_or(0, |o| get_u32(b, o)),
            op: get_u32(b, o_op),
            flags: get_u32(b, o_fl),
            req_tid: get_u64(b, o_tid),
            offset: get_u64(b, o_off),
            len: get_u32(b, o_len),
            data_off: get_u32(b, o_doff),
            data_len: get_u32(b, o_dlen),
        })
    }

    /// Encode into `b[..se_size]` (zeroing padding). CRC fields are written as given;
    /// use [`EntryLayout::seal_se`] to compute `se_crc`.
    pub fn encode_se(&self, se: &Se, b: &mut [u8]) {
        let b = &mut b[..self.se_size as usize];
        b.fill(0);
        let [o_op, o_fl, o_tid, o_off, o_len, o_doff, o_dlen] = self.se_offsets();
        let (c, d) = self.crc_offsets();
        if let Some(o) = c {
            put_u32(b, o, se.se_crc);
        }
        if let Some(o) = d {
            put_u32(b, o, se.data_crc);
        }
        put_u32(b, o_op, se.op);
        put_u32(b, o_fl, se.flags);
        put_u64(b, o_tid, se.req_tid);
        put_u64(b, o_off, se.offset);
        put_u32(b, o_len, se.len);
        put_u32(b, o_doff, se.data_off);
        put_u32(b, o_dlen, se.data_len);
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
        let [o_tid, o_res, o_fl] = self.ce_offsets();
        let (c, d) = self.crc_offsets();
        Some(Ce {
            ce_crc: c.map_or(0, |o| get_u32(b, o)),
            data_crc: d.map_or(0, |o| get_u32(b, o)),
            req_tid: get_u64(b, o_tid),
            result: get_u32(b, o_res) as i32,
            flags: get_u32(b, o_fl),
        })
    }

    pub fn encode_ce(&self, ce: &Ce, b: &mut [u8]) {
        let b = &mut b[..self.ce_size as usize];
        b.fill(0);
        let [o_tid, o_res, o_fl] = self.ce_offsets();
        let (c, d) = self.crc_offsets();
        if let Some(o) = c {
            put_u32(b, o, ce.ce_crc);
        }
        if let Some(o) = d {
            put_u32(b, o, ce.data_crc);
        }
        put_u64(b, o_tid, ce.req_tid);
        put_u32(b, o_res, ce.result as u32);
        put_u32(b, o_fl, ce.flags);
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

/// Maximum SE/CE size over all layouts.
pub const MAX_SE_SIZE: usize = 48;
pub const MAX_CE_SIZE: usize = 24;
