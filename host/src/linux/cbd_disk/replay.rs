//! The replay buffer: the host's copy of every modifying request (WRITE, WRITE_ZEROES,
//! DISCARD) from its submission until the backend has confirmed it durable, so that the
//! writes a restarting backend lost with its RAM can be sent again instead of failing the
//! next flush.
//!
//! * The buffer holds **disjoint pieces** of the disk, keyed by their start: a new request
//!   trims (or splits) the pieces it overlaps, so a piece always holds the newest data
//!   submitted for its bytes, and replaying pieces in any order gives the same disk.
//! * Each piece knows the channel and CBD tid that carry it now (the original request, or
//!   its replay). It leaves the buffer when that tid is durable (`HostQueue::is_durable`:
//!   below the watermark of the current incarnation, or a DURABLE completion).
//! * A piece whose tid is below its channel's `lost_below` (the channel saw a new backend
//!   incarnation after the tid was submitted) can never be confirmed: it **needs replay**.
//!   A queue thread takes such pieces, submits them again on its own channel and moves
//!   the piece to the new tid ([`Replay::replayed`]).
//! * `min_seq`: the submission sequence number of the oldest request whose bytes a piece
//!   now stands for (a piece that trims another inherits the older number). A flush that
//!   arrived when the sequence was `S` is done once no piece with `min_seq ≤ S` is left:
//!   everything submitted before it, or something newer over the same bytes, is durable.
//! * Bounded: `cap` bytes of data (DISCARD / WRITE_ZEROES pieces cost no data) and
//!   [`MAX_PIECES`] pieces. A write that does not fit waits before it is submitted
//!   ([`Replay::reserve`]) until confirmations free room.

use std::collections::{BTreeMap, BTreeSet};

/// Most pieces at once (bounds the bookkeeping of many small DISCARDs).
pub const MAX_PIECES: usize = 1 << 16;

/// What a piece holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// WRITE data (the piece's bytes).
    Data(Vec<u8>),
    /// WRITE_ZEROES.
    Zeroes,
    /// DISCARD (reads back as zeroes on this backend).
    Discard,
}

#[derive(Clone, Debug)]
struct Piece {
    end: u64,
    content: Content,
    /// Channel and tid that carry the piece now.
    chan: u16,
    tid: u64,
    /// A replay of it is in flight (not completed yet).
    replaying: bool,
    min_seq: u64,
    /// Unique among the live pieces: lets a late update find out that the piece changed.
    id: u64,
}

impl Piece {
    fn bytes(&self) -> usize {
        match &self.content {
            Content::Data(d) => d.len(),
            _ => 0,
        }
    }
}

/// A piece handed out for replay: submit `content` at `offset` and report the new tid.
#[derive(Clone, Debug)]
pub struct ReplayJob {
    pub id: u64,
    pub offset: u64,
    pub len: u32,
    pub content: Content,
}

/// The buffer (one per disk, behind a mutex; lock order: a channel's lock before this one).
#[derive(Debug)]
pub struct Replay {
    cap: usize,
    used: usize,
    /// Bytes promised to writes between [`Replay::reserve`] and [`Replay::insert`], and
    /// how many such writes there are (no replay is handed out while one is on its way).
    reserved: usize,
    admitting: u64,
    next_seq: u64,
    next_id: u64,
    pieces: BTreeMap<u64, Piece>,
    /// (chan, tid, start) of every piece.
    by_tid: BTreeSet<(u16, u64, u64)>,
    /// Multiset of the pieces' `min_seq`.
    owed: BTreeMap<u64, u32>,
    /// Replays in flight (submitted, not completed).
    pub in_flight: u64,
    /// Replays that failed: (the `min_seq` of the piece, the sequence at the failure).
    failures: Vec<(u64, u64)>,
    pub replayed_requests: u64,
    pub replayed_bytes: u64,
}

impl Replay {
    pub fn new(cap: usize) -> Replay {
        Replay {
            cap,
            used: 0,
            reserved: 0,
            admitting: 0,
            next_seq: 1,
            next_id: 1,
            pieces: BTreeMap::new(),
            by_tid: BTreeSet::new(),
            owed: BTreeMap::new(),
            in_flight: 0,
            failures: Vec::new(),
            replayed_requests: 0,
            replayed_bytes: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Data bytes held (without reservations).
    pub fn used(&self) -> usize {
        self.used
    }
    #[cfg(test)]
    fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// The sequence number the next request will get: a flush arriving now owes everything
    /// below it.
    pub fn seq(&self) -> u64 {
        self.next_seq
    }

    /// Admit a modifying request of `bytes` data: true if it may be submitted now; false
    /// if it must wait — for room (confirmations), or because a replay is in flight or
    /// due (channels' `lost_below`): a replay of older data landing after a newer write
    /// over the same bytes would undo it, so the two never overlap in time. A request
    /// larger than the whole buffer is admitted once the buffer is empty.
    pub fn reserve(&mut self, bytes: usize, lost_below: &[u64]) -> bool {
        let total = self.used + self.reserved;
        let fits = total + bytes <= self.cap || total == 0;
        if fits
            && self.pieces.len() < MAX_PIECES
            && self.in_flight == 0
            && !self.replay_due(lost_below)
        {
            self.reserved += bytes;
            self.admitting += 1;
            true
        } else {
            false
        }
    }

    /// Give back an admission whose request was not submitted.
    pub fn unreserve(&mut self, bytes: usize) {
        self.reserved = self.reserved.saturating_sub(bytes);
        self.admitting = self.admitting.saturating_sub(1);
    }

    fn lost(&self, p: &Piece, lost_below: &[u64]) -> bool {
        p.tid < lost_below.get(p.chan as usize).copied().unwrap_or(0)
    }

    fn replay_due(&self, lost_below: &[u64]) -> bool {
        lost_below
            .iter()
            .enumerate()
            .any(|(c, &lb)| self.needing_replay(c as u16, lb) > 0)
    }

    fn owe(&mut self, s: u64) {
        *self.owed.entry(s).or_default() += 1;
    }
    fn unowe(&mut self, s: u64) {
        if let Some(n) = self.owed.get_mut(&s) {
            *n -= 1;
            if *n == 0 {
                self.owed.remove(&s);
            }
        }
    }

    fn remove_piece(&mut self, start: u64) -> Option<Piece> {
        let p = self.pieces.remove(&start)?;
        self.by_tid.remove(&(p.chan, p.tid, start));
        self.unowe(p.min_seq);
        self.used -= p.bytes();
        Some(p)
    }

    fn add_piece(&mut self, start: u64, p: Piece) {
        self.by_tid.insert((p.chan, p.tid, start));
        self.owe(p.min_seq);
        self.used += p.bytes();
        self.pieces.insert(start, p);
    }

    /// Cut `[start, end)` out of every piece; returns the smallest `min_seq` cut.
    fn cut(&mut self, start: u64, end: u64) -> Option<u64> {
        let mut min = None::<u64>;
        let first = self
            .pieces
            .range(..start)
            .next_back()
            .filter(|(_, p)| p.end > start)
            .map(|(&s, _)| s);
        let mut hit: Vec<u64> = first.into_iter().collect();
        hit.extend(self.pieces.range(start..end).map(|(&s, _)| s));
        for s in hit {
            let Some(p) = self.remove_piece(s) else {
                continue;
            };
            min = Some(min.map_or(p.min_seq, |m| m.min(p.min_seq)));
            if s < start {
                self.add_piece(s, sub_piece(&p, s, s, start, self.next_id));
                self.next_id += 1;
            }
            if p.end > end {
                self.add_piece(end, sub_piece(&p, s, end, p.end, self.next_id));
                self.next_id += 1;
            }
        }
        min
    }

    /// A request was submitted on `chan` as `tid` (`bytes` of it reserved before): it becomes
    /// the piece for its bytes, trimming what it overlaps. Returns its sequence number.
    pub fn insert(&mut self, chan: u16, tid: u64, offset: u64, content: Content, len: u32) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let end = offset + len as u64;
        let p = Piece {
            end,
            content,
            chan,
            tid,
            replaying: false,
            min_seq: seq,
            id: self.next_id,
        };
        self.next_id += 1;
        self.reserved = self.reserved.saturating_sub(p.bytes());
        self.admitting = self.admitting.saturating_sub(1);
        if len == 0 {
            return seq;
        }
        let min = self.cut(offset, end).map_or(seq, |m| m.min(seq));
        self.add_piece(offset, Piece { min_seq: min, ..p });
        seq
    }

    /// The request `(chan, tid)` completed: with an error its pieces are dropped (nothing to
    /// make durable; what it covered is undefined, as for any failed write), durable ones
    /// (a DURABLE completion) are confirmed.
    pub fn completed(&mut self, chan: u16, tid: u64, ok: bool, durable: bool) {
        if ok && !durable {
            return;
        }
        for s in self.starts_of(chan, tid) {
            self.remove_piece(s);
        }
    }

    fn starts_of(&self, chan: u16, tid: u64) -> Vec<u64> {
        self.by_tid
            .range((chan, tid, 0)..=(chan, tid, u64::MAX))
            .map(|&(_, _, s)| s)
            .collect()
    }

    /// Drop every piece of `chan` whose tid (below `watermark`) `is_durable` says is durable.
    /// Returns how many pieces left.
    pub fn confirm(
        &mut self,
        chan: u16,
        watermark: u64,
        is_durable: impl Fn(u64) -> bool,
    ) -> usize {
        let done: Vec<u64> = self
            .by_tid
            .range((chan, 0, 0)..(chan, watermark, 0))
            .filter(|&&(_, t, _)| is_durable(t))
            .map(|&(_, _, s)| s)
            .collect();
        for &s in &done {
            self.remove_piece(s);
        }
        done.len()
    }

    /// How many pieces of `chan` need replay (tid below `lost_below`, no replay in flight).
    pub fn needing_replay(&self, chan: u16, lost_below: u64) -> usize {
        self.by_tid
            .range((chan, 0, 0)..(chan, lost_below, 0))
            .filter(|&&(_, _, s)| self.pieces.get(&s).is_some_and(|p| !p.replaying))
            .count()
    }

    /// Up to `max` pieces to replay, over the channels whose `lost_below` is given; each is
    /// marked as replaying (counted in [`Replay::in_flight`] until [`Replay::replayed`] or
    /// [`Replay::replay_done`]). `None` while an admitted request is on its way to its
    /// channel (try again: no request is admitted while a replay is due).
    pub fn take_jobs(&mut self, lost_below: &[u64], max: usize) -> Option<Vec<ReplayJob>> {
        if self.admitting > 0 {
            return None;
        }
        let mut jobs = Vec::new();
        for (c, &lb) in lost_below.iter().enumerate() {
            let c = c as u16;
            let starts: Vec<u64> = self
                .by_tid
                .range((c, 0, 0)..(c, lb, 0))
                .map(|&(_, _, s)| s)
                .collect();
            for s in starts {
                if jobs.len() >= max {
                    return Some(jobs);
                }
                let Some(p) = self.pieces.get_mut(&s) else {
                    continue;
                };
                if p.replaying {
                    continue;
                }
                p.replaying = true;
                self.in_flight += 1;
                jobs.push(ReplayJob {
                    id: p.id,
                    offset: s,
                    len: (p.end - s) as u32,
                    content: p.content.clone(),
                });
            }
        }
        Some(jobs)
    }

    fn find_id(&self, offset: u64, id: u64) -> Option<u64> {
        self.pieces
            .get(&offset)
            .filter(|p| p.id == id)
            .map(|_| offset)
    }

    /// The replay `job` was submitted on `chan` as `tid`: the piece (if no newer request
    /// trimmed it meanwhile) is carried by that tid from now on.
    pub fn replayed(&mut self, job: &ReplayJob, chan: u16, tid: u64) {
        self.replayed_requests += 1;
        self.replayed_bytes += job.len as u64;
        if let Some(s) = self.find_id(job.offset, job.id)
            && let Some(mut p) = self.remove_piece(s)
        {
            p.chan = chan;
            p.tid = tid;
            self.add_piece(s, p);
        }
    }

    /// The replay of `job` completed (or could not be submitted: `ok == false`). A failed
    /// replay fails the flushes that owe its bytes (they cannot be made durable).
    pub fn replay_done(&mut self, job: &ReplayJob, ok: bool, durable: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(s) = self.find_id(job.offset, job.id) else {
            return;
        };
        if !ok {
            if let Some(p) = self.remove_piece(s) {
                self.failures.push((p.min_seq, self.next_seq));
            }
            return;
        }
        if durable {
            self.remove_piece(s);
        } else if let Some(p) = self.pieces.get_mut(&s) {
            p.replaying = false;
        }
    }

    /// Did a replay fail that a flush which arrived at sequence `snap` was owed (it failed
    /// after the flush arrived)? Flushes that arrive after the failure are not failed by it.
    pub fn failed_for(&self, snap: u64) -> bool {
        self.failures.iter().any(|&(m, at)| m < snap && at >= snap)
    }

    /// Is anything owed to a flush that arrived at sequence `snap` still not durable?
    pub fn owes(&self, snap: u64) -> bool {
        self.owed.first_key_value().is_some_and(|(&s, _)| s < snap)
    }

    /// For a READ of `[offset, +len)` submitted now: the bytes the backend may have lost
    /// (pieces due for replay or being replayed, by the channels' `lost_below`), as
    /// (offset in the read, bytes), to lay over what it returns. Pieces the backend still
    /// has are left to it (the order of overlapping writes in flight on two channels at
    /// once is the backend's, not the buffer's).
    pub fn overlay(&self, offset: u64, len: u32, lost_below: &[u64]) -> Vec<(usize, Vec<u8>)> {
        let end = offset + len as u64;
        let first = self
            .pieces
            .range(..offset)
            .next_back()
            .filter(|(_, p)| p.end > offset);
        first
            .into_iter()
            .chain(self.pieces.range(offset..end))
            .filter(|(_, p)| p.replaying || self.lost(p, lost_below))
            .map(|(&s, p)| {
                let a = s.max(offset);
                let b = p.end.min(end);
                let bytes = match &p.content {
                    Content::Data(d) => d[(a - s) as usize..(b - s) as usize].to_vec(),
                    _ => vec![0; (b - a) as usize],
                };
                ((a - offset) as usize, bytes)
            })
            .collect()
    }
}

/// The part `[a, b)` of `p` (which starts at `s`), as a new piece with id `id`.
fn sub_piece(p: &Piece, s: u64, a: u64, b: u64, id: u64) -> Piece {
    let content = match &p.content {
        Content::Data(d) => Content::Data(d[(a - s) as usize..(b - s) as usize].to_vec()),
        c => c.clone(),
    };
    Piece {
        end: b,
        content,
        id,
        ..p.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: u8, n: usize) -> Content {
        Content::Data(vec![v; n])
    }

    #[test]
    fn a_newer_write_trims_and_splits_and_inherits_the_older_debt() {
        let mut r = Replay::new(1 << 20);
        assert!(r.reserve(8192, &[0, 0]));
        let s1 = r.insert(0, 10, 0, data(1, 8192), 8192);
        assert!(r.reserve(1024, &[0, 0]));
        let s2 = r.insert(1, 3, 2048, data(2, 1024), 1024);
        assert_eq!(r.pieces(), 3, "split into head, new, tail");
        assert_eq!(r.used(), 8192);
        // Nothing lost: reads are left to the backend. Lost (channel 0 restarted after tid
        // 10): its pieces are laid over, the newer piece of channel 1 is not.
        assert!(r.overlay(1024, 4096, &[0, 0]).is_empty());
        let ov = r.overlay(1024, 4096, &[11, 0]);
        assert_eq!(ov.len(), 2);
        let ov: Vec<_> = ov
            .into_iter()
            .chain(r.overlay(1024, 4096, &[11, 4]))
            .collect();
        let mut buf = vec![0u8; 4096];
        for (o, b) in ov {
            buf[o..o + b.len()].copy_from_slice(&b);
        }
        assert_eq!(&buf[..1024], &[1; 1024][..]);
        assert_eq!(&buf[1024..2048], &[2; 1024][..]);
        assert_eq!(&buf[2048..], &[1; 2048][..]);
        // A flush after both owes until the new piece (inheriting s1) and the rest are durable.
        let snap = r.seq();
        assert!(r.owes(snap));
        r.confirm(0, 11, |_| true);
        assert!(
            r.owes(snap),
            "the middle piece carries the first write's debt"
        );
        assert!(!r.owes(s1), "nothing older than the first write");
        r.confirm(1, 4, |_| true);
        assert!(!r.owes(snap));
        assert_eq!((r.pieces(), r.used()), (0, 0));
        assert!(s2 > s1);
    }

    #[test]
    fn lost_pieces_are_replayed_once_and_follow_their_new_tid() {
        let mut r = Replay::new(1 << 20);
        for (t, off, c) in [(5, 0, data(7, 4096)), (6, 8192, Content::Zeroes)] {
            assert!(r.reserve(4096, &[0]));
            r.insert(0, t, off, c, 4096);
        }
        assert!(r.reserve(4096, &[0]));
        assert_eq!(
            r.take_jobs(&[7], 16).map(|j| j.len()),
            None,
            "a write on its way"
        );
        r.insert(0, 9, 16384, data(8, 4096), 4096);
        assert_eq!(r.needing_replay(0, 7), 2);
        assert!(!r.reserve(512, &[7]), "no write while a replay is due");
        let jobs = r.take_jobs(&[7], 16).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            r.take_jobs(&[7], 16).map(|j| j.len()),
            Some(0),
            "not handed out twice"
        );
        assert_eq!(r.in_flight, 2);
        assert!(
            !r.reserve(512, &[7]),
            "no write while a replay is in flight"
        );
        r.replayed(&jobs[0], 1, 100);
        r.replayed(&jobs[1], 1, 101);
        r.replay_done(&jobs[0], true, false);
        r.replay_done(&jobs[1], true, true);
        assert_eq!(r.in_flight, 0);
        assert_eq!(r.needing_replay(0, 7), 0);
        assert!(r.reserve(512, &[7, 0]));
        r.unreserve(512);
        // The old tids no longer confirm it; the new one does.
        r.confirm(0, 7, |_| true);
        assert_eq!(r.pieces(), 2);
        r.confirm(1, 101, |_| true);
        assert_eq!(r.pieces(), 1, "only the write at tid 9 is left");
    }

    #[test]
    fn full_buffer_refuses_until_confirmed_and_a_failed_replay_fails_its_flushes() {
        let mut r = Replay::new(8192);
        assert!(r.reserve(8192, &[0]));
        r.insert(0, 1, 0, data(1, 8192), 8192);
        assert!(!r.reserve(512, &[0]), "full");
        r.confirm(0, 2, |_| true);
        assert!(r.reserve(8192, &[0]));
        r.insert(0, 2, 0, data(2, 8192), 8192);
        let snap = r.seq();
        let jobs = r.take_jobs(&[3], 4).unwrap();
        r.replay_done(&jobs[0], false, false);
        assert!(r.failed_for(snap), "the flush that was owed it fails");
        assert!(!r.owes(snap));
        assert!(!r.failed_for(r.seq() + 1), "a later flush does not");
    }
}
