//! Recorded histories of block operations, and a checker for the consistency and
//! durability model of a CBD device (`docs/consistency.md`).
//!
//! A workload records what it submitted and what completed ([`Recorder`], or its own
//! log in the [text format](#text-format)); [`check`] then says `Ok(Summary)` or gives a
//! minimal counter-example in words ([`Violation`]: which operations, which block, which
//! [`Rule`]).
//!
//! # The model checked
//!
//! * **Each 4 KiB block is a linearizable register** (Herlihy & Wing; checked per block,
//!   which is sound and complete because linearizability is local — "P-compositionality"):
//!   every operation on the block takes effect at one instant between its invocation and
//!   its completion, and each read returns, sector by sector, what the last write before
//!   it left there (or the initial content). A request spanning several blocks is a
//!   separate operation on each: whole-request atomicity is *not* part of the model.
//! * **Block atomicity**: a write takes effect on a block whole (all its sectors of that
//!   block at once), so no read sees two overlapping writes mixed inside one block.
//!   Values are recorded per 512 B sector because requests are 512 B multiples: a 512 B
//!   write changes one sector of its block, and only per-sector digests let a later
//!   read of the whole block be checked.
//! * **Failed and unfinished writes** (errno, never completed) may have taken effect on
//!   any subset of their blocks, or none, but only before their completion.
//! * **Channel order** (histories recorded at the CBD ring, [`Level::Cbd`]): a channel
//!   completes its requests in submission order, and they take effect in that order.
//!   Linux through ublk promises no order among requests in flight ([`Level::Linux`]).
//! * **Durability after a crash**: the media read back after a crash holds, per block,
//!   one of the values the block had since the newest write confirmed durable before the
//!   crash — so never a value that was not written, and never older than a confirmed
//!   write. Confirmed = DURABLE completion, a watermark above its tid, its token, or a
//!   FLUSH (any channel) that completed ok and was invoked after the write completed.
//!   Completed but unconfirmed writes may be lost; requests in flight may take effect
//!   before the crash, after it (the restarted device runs them, and their completion
//!   is then recorded), or never; one whose completion is never recorded took effect
//!   before the crash or not at all.
//!
//! # The algorithm
//!
//! First, cheap direct checks that each name a rule precisely from one observation
//! (stale read, value never written, value from the future, torn block, confirmed write
//! lost); then, per block, the Wing & Gong search with Lowe's memoisation of
//! (set of operations done, register state), as in Porcupine: operations are call and
//! return entries in time order in a linked list; the search linearizes the earliest
//! possible call whose effect is consistent, backtracks at a return entry that was not
//! linearized, and never revisits a (done set, state) pair. A crash point is an
//! operation at an instant whose effect is to roll the block back to one of the versions
//! since its durable floor (the one the read-back shows). Failures are shrunk (shortest
//! failing prefix, then one operation at a time) to a minimal set and classified by
//! which promise removes the failure (channel order, durability, else linearizability).
//!
//! Why not a crate: `stateright`'s `LinearizabilityTester` (also published alone as
//! `consistency_model`) refuses a second operation in flight on one thread
//! (`on_invoke`: "Thread already has an operation in flight"), takes real time only
//! from the order of its calls, searches every interleaving without memoisation, and
//! answers yes/no — it is built to run inside its model checker on small histories;
//! `todc-utils`' `WGLChecker` is a bare Wing–Gong–Lowe search that answers a bool,
//! panics on malformed histories and has no notion of operations that may not have
//! happened; `lincheck` runs its own scenarios under `loom` rather than checking a
//! recorded history. None handles queue depth 64 per channel, optional (failed or
//! unfinished) writes, crash rollbacks bounded by durability, or counter-examples in
//! words, so the search is written here (~300 lines).
//!
//! # Text format
//!
//! One event per line, `#` starts a comment, numbers decimal or `0x` hex, times are
//! logical (u64, strictly increasing per recorder):
//!
//! ```text
//! cbd-history 1 level=cbd initial=zero discard=zeroes     # header (first line)
//! inv ID t=T ch=C tid=TID write off=OFF len=LEN d=DIGESTS # submitted (write carries data)
//! inv ID t=T ch=C tid=TID read|discard|wzeroes off=OFF len=LEN
//! inv ID t=T ch=C tid=TID flush
//! ret ID t=T ok [durable] [d=DIGESTS]                     # completed (read carries data)
//! ret ID t=T err=ERRNO
//! watermark t=T ch=C tid=TID                              # durable watermark (exclusive)
//! confirm t=T ch=C tid=TID                                # one token confirmed
//! crash t=T                                               # the device died
//! media off=OFF d=DIGESTS                                 # media read back after it
//! ```
//!
//! `DIGESTS` = comma-separated 64-bit hex sector digests ([`sector_digest`]), `z` for a
//! sector of zeroes, `X*N` for N equal ones: `d=z*8` is a zeroed 4 KiB block, a 1 MiB
//! write of distinct content is 2048 digests (~34 KiB of text, 3 % of the data).
//! Header keys: `level=cbd|linux`, `initial=zero|unknown`, `discard=zeroes|undefined`.
//! Lines need not be in time order (a [`Log`] written while a program runs puts an
//! invocation after its submission, with the earlier stamp); an operation's `inv` comes
//! before its `ret`, and `media` lines follow their `crash`.
//! An `inv` may be the last word about an operation (still in flight, or lost in a
//! crash). [`parse`] reports the line of any problem; it never panics.

mod check;
mod log;
mod model;
mod text;

pub use check::{CheckError, CheckOptions, Rule, Summary, Violation, check, check_with};
pub use log::Log;
pub use model::{
    BLOCK, Confirm, Crash, Digest, DiscardMode, Header, History, HistoryError, Initial, Level,
    MAX_REQUEST, MediaRange, Op, OpId, OpKind, Outcome, Recorder, SECTOR, SECTORS_PER_BLOCK,
    Watermark, digests, sector_digest, zero_digest,
};
pub use text::{parse, to_text};
