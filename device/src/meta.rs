//! The v3 "meta header + two copies + seq + CRC" record codec.
//!
//! Pure functions on byte slices (used by tests, tools and the golden check) and
//! region-level helpers over [`Shm`] used by both engines.

use crate::crc::crc32;
use crate::layout::{Record, get_u32, meta, put_u32};
use crate::shm::{SharedMem, Shm, ShmResult};
use crate::trace::{RecordKind, TraceEvent};

/// `(s8)(a - b) > 0`: is seq `a` newer than seq `b`?
#[inline]
pub fn seq_after(a: u8, b: u8) -> bool {
    (a.wrapping_sub(b) as i8) > 0
}

/// Verify one copy's CRC (over bytes 4..copy.len()) and return its seq if valid.
pub fn copy_valid(copy: &[u8]) -> Option<u8> {
    if copy.len() < meta::SIZE {
        return None;
    }
    (get_u32(copy, meta::CRC) == crc32(&copy[4..])).then_some(copy[meta::SEQ])
}

/// Decode one copy: `Some((seq, record))` if its CRC verifies.
pub fn decode_copy<R: Record>(copy: &[u8]) -> Option<(u8, R)> {
    if copy.len() != R::COPY_SIZE {
        return None;
    }
    copy_valid(copy).map(|s| (s, R::decode_body(copy)))
}

/// Encode `rec` with meta `seq` into a full copy buffer (`R::COPY_SIZE` bytes):
/// header, body, zero padding, CRC over bytes 4.. .
pub fn encode_copy<R: Record>(rec: &R, seq: u8, out: &mut [u8]) {
    let out = &mut out[..R::COPY_SIZE];
    out.fill(0);
    rec.encode_body(out);
    out[meta::SEQ] = seq;
    out[meta::VERSION] = 0;
    let c = crc32(&out[4..]);
    put_u32(out, meta::CRC, c);
}

/// Index of the latest valid copy (ties keep the first copy).
pub fn pick_latest(seqs: [Option<u8>; 2]) -> Option<usize> {
    match seqs {
        [Some(a), Some(b)] => Some(if seq_after(b, a) { 1 } else { 0 }),
        [Some(_), None] => Some(0),
        [None, Some(_)] => Some(1),
        [None, None] => None,
    }
}

/// Index of the copy to overwrite: the first invalid one, else the older one
/// (ties pick copy 0, as v3 does — so a fresh object gets its first write in copy 0).
pub fn pick_target(seqs: [Option<u8>; 2]) -> usize {
    match seqs {
        [None, _] => 0,
        [_, None] => 1,
        [Some(a), Some(b)] => {
            if seq_after(a, b) {
                1
            } else {
                0
            }
        }
    }
}

/// The latest valid copy of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latest<R> {
    pub rec: R,
    pub seq: u8,
    pub copy: usize,
}

const MAX_COPY: usize = crate::layout::PAGE;

/// Read both copies at `base` (copy i at `base + i*COPY_SIZE`), each copied into
/// private memory before its CRC is checked. `invalidate`: drop cached lines first
/// (non-coherent mode). A corrupt object reads as absent (`None`).
pub fn read_latest<R: Record, M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    base: u64,
    invalidate: bool,
) -> ShmResult<Option<Latest<R>>> {
    let mut buf = [0u8; MAX_COPY];
    let buf = &mut buf[..R::COPY_SIZE];
    let mut best: Option<Latest<R>> = None;
    for i in 0..2 {
        let off = base + (i * R::COPY_SIZE) as u64;
        if invalidate {
            shm.invalidate(off, R::COPY_SIZE as u64)?;
            shm.full_fence();
        }
        shm.read(off, buf)?;
        if let Some((seq, rec)) = decode_copy::<R>(buf) {
            let newer = match &best {
                None => true,
                Some(b) => seq_after(seq, b.seq),
            };
            if newer {
                best = Some(Latest { rec, seq, copy: i });
            }
        }
    }
    Ok(best)
}

/// Seqs of both copies (None = CRC fails).
pub fn read_seqs<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    base: u64,
    copy_size: usize,
    invalidate: bool,
) -> ShmResult<[Option<u8>; 2]> {
    let mut buf = [0u8; MAX_COPY];
    let buf = &mut buf[..copy_size];
    let mut out = [None; 2];
    for (i, o) in out.iter_mut().enumerate() {
        let off = base + (i * copy_size) as u64;
        if invalidate {
            shm.invalidate(off, copy_size as u64)?;
            shm.full_fence();
        }
        shm.read(off, buf)?;
        *o = copy_valid(buf);
    }
    Ok(out)
}

/// Write `rec` into the older/invalid copy with seq = latest valid seq + 1.
/// The body goes first and the CRC word last; `write_back` (non-coherent mode, and
/// always harmless): the seqs are read from memory (invalidated, full fence: the
/// writer's cache may hold copies an earlier incarnation of it left there, and the
/// fence also orders everything the writer wrote back before this record), and the
/// copy is written back. No fence after it: whatever the writer publishes next that
/// must follow the record fences first itself (the next record's reads, the reads
/// before a RESET's host line), and a fence makes nothing land sooner. Returns
/// (copy, seq).
pub fn write_record<R: Record, M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    base: u64,
    rec: &R,
    kind: RecordKind,
    id: u32,
    write_back: bool,
) -> ShmResult<(usize, u8)> {
    let seqs = read_seqs(shm, base, R::COPY_SIZE, write_back)?;
    let latest = pick_latest(seqs).and_then(|i| seqs[i]).unwrap_or(0);
    let seq = latest.wrapping_add(1);
    let target = pick_target(seqs);
    let mut buf = [0u8; MAX_COPY];
    let buf = &mut buf[..R::COPY_SIZE];
    encode_copy(rec, seq, buf);
    let off = base + (target * R::COPY_SIZE) as u64;
    shm.check(off, R::COPY_SIZE as u64, 1)?;
    shm.write(off + 4, &buf[4..])?;
    shm.write(off, &buf[..4])?;
    if write_back {
        shm.write_back(off, R::COPY_SIZE as u64)?;
    }
    shm.tracer.event(&TraceEvent::RecordWritten {
        kind,
        id,
        copy: target as u8,
        seq,
    });
    Ok((target, seq))
}

/// Clear an object: zero both copies (then write back).
pub fn clear_record<M: SharedMem + ?Sized>(
    shm: Shm<'_, M>,
    base: u64,
    copy_size: usize,
    kind: RecordKind,
    id: u32,
) -> ShmResult<()> {
    shm.fill(base, 2 * copy_size as u64, 0)?;
    shm.write_back(base, 2 * copy_size as u64)?;
    shm.store_fence();
    shm.tracer.event(&TraceEvent::RecordCleared { kind, id });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn seq_order_wraps() {
        assert!(seq_after(1, 0));
        assert!(seq_after(0, 255));
        assert!(!seq_after(0, 0));
        assert!(!seq_after(0, 1));
        assert_eq!(pick_latest([Some(1), Some(1)]), Some(0));
        assert_eq!(pick_latest([Some(1), Some(2)]), Some(1));
        assert_eq!(pick_latest([Some(255), Some(0)]), Some(1));
        assert_eq!(pick_target([Some(0), Some(0)]), 0);
        assert_eq!(pick_target([Some(1), Some(0)]), 1);
        assert_eq!(pick_target([Some(1), None]), 1);
        assert_eq!(pick_target([None, Some(3)]), 0);
    }
}
