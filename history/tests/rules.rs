//! Every rule both ways: legal histories (including the tricky legal ones) are
//! accepted; illegal ones are rejected with a counter-example naming the rule and the
//! operations that show it.

#![allow(clippy::too_many_arguments)] // the builder spells out every field of an op

use history::*;

/// A small history builder. Positions are in 512 B sectors; a write of value `v`
/// writes `v` into every sector it covers (so `v` names the write).
struct B {
    h: History,
    id: OpId,
}

fn cbd() -> B {
    B {
        h: History::new(Header::default()),
        id: 0,
    }
}

fn linux() -> B {
    B {
        h: History::new(Header {
            level: Level::Linux,
            ..Header::default()
        }),
        id: 0,
    }
}

const Z: u64 = u64::MAX; // stands for "zeroes" in read values below

fn val(v: u64) -> Digest {
    if v == Z { zero_digest() } else { v }
}

impl B {
    fn op(
        &mut self,
        kind: OpKind,
        ch: u16,
        tid: u64,
        sec: u64,
        n: u64,
        inv: u64,
        done: Option<(u64, Outcome)>,
    ) -> OpId {
        let id = self.id;
        self.id += 1;
        self.h.ops.push(Op {
            id,
            chan: ch,
            tid,
            kind,
            offset: sec * SECTOR,
            len: (n * SECTOR) as u32,
            written: Vec::new(),
            read: Vec::new(),
            invoke: inv,
            complete: done,
            durable: false,
        });
        id
    }
    /// Write of value `v` over sectors [sec, sec+n), ok.
    fn w(&mut self, ch: u16, tid: u64, sec: u64, n: u64, v: u64, inv: u64, done: u64) -> OpId {
        let id = self.op(
            OpKind::Write,
            ch,
            tid,
            sec,
            n,
            inv,
            Some((done, Outcome::Ok)),
        );
        self.last().written = vec![val(v); n as usize];
        id
    }
    /// Write that failed / never completed.
    fn w_with(
        &mut self,
        ch: u16,
        tid: u64,
        sec: u64,
        n: u64,
        v: u64,
        inv: u64,
        done: Option<(u64, Outcome)>,
    ) -> OpId {
        let id = self.op(OpKind::Write, ch, tid, sec, n, inv, done);
        self.last().written = vec![val(v); n as usize];
        id
    }
    /// Read of sectors [sec, sec+vals.len()) returning `vals`.
    fn r(&mut self, ch: u16, tid: u64, sec: u64, vals: &[u64], inv: u64, done: u64) -> OpId {
        let id = self.op(
            OpKind::Read,
            ch,
            tid,
            sec,
            vals.len() as u64,
            inv,
            Some((done, Outcome::Ok)),
        );
        self.last().read = vals.iter().map(|&v| val(v)).collect();
        id
    }
    fn flush(&mut self, ch: u16, tid: u64, inv: u64, done: u64) -> OpId {
        let id = self.op(OpKind::Flush, ch, tid, 0, 0, inv, Some((done, Outcome::Ok)));
        self.last().len = 0;
        id
    }
    fn last(&mut self) -> &mut Op {
        self.h.ops.last_mut().unwrap()
    }
    fn crash(&mut self, t: u64, media: &[(u64, &[u64])]) {
        self.h.crashes.push(Crash {
            t,
            media: media
                .iter()
                .map(|(sec, vals)| MediaRange {
                    offset: sec * SECTOR,
                    digests: vals.iter().map(|&v| val(v)).collect(),
                })
                .collect(),
        });
    }
    fn ok(&self) -> Summary {
        // the text format must carry everything the checker needs
        let back = parse(&to_text(&self.h)).expect("round trip");
        assert_eq!(back, self.h);
        match check(&self.h) {
            Ok(s) => s,
            Err(e) => panic!("legal history rejected:\n{e}\n{}", to_text(&self.h)),
        }
    }
    fn bad(&self, rule: Rule) -> Violation {
        match check(&self.h) {
            Ok(s) => panic!("illegal history accepted ({s}):\n{}", to_text(&self.h)),
            Err(CheckError::Violation(v)) => {
                assert_eq!(
                    v.rule,
                    rule,
                    "rejected for another reason:\n{v}\n{}",
                    to_text(&self.h)
                );
                // the message names the rule
                assert!(v.to_string().contains(rule.name()));
                *v
            }
            Err(e) => panic!("not a violation: {e}"),
        }
    }
}

fn rep(v: u64, n: usize) -> Vec<u64> {
    vec![v; n]
}

// ---------------------------------------------------------------- legal

#[test]
fn sequential_write_then_read() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 7, 1, 2);
    b.r(0, 1, 0, &rep(7, 8), 3, 4);
    b.r(0, 2, 8, &rep(Z, 8), 5, 6);
    b.ok();
}

#[test]
fn concurrent_overlapping_writes_either_order() {
    for winner in [1, 2] {
        let mut b = cbd();
        b.w(0, 0, 0, 8, 1, 1, 10);
        b.w(1, 0, 0, 8, 2, 2, 11);
        b.r(0, 1, 0, &rep(winner, 8), 12, 13);
        b.r(1, 1, 0, &rep(winner, 8), 14, 15);
        b.ok();
    }
}

#[test]
fn read_concurrent_with_write_sees_old_or_new() {
    for seen in [Z, 5] {
        let mut b = cbd();
        b.w(0, 0, 0, 8, 5, 1, 10);
        b.r(1, 0, 0, &rep(seen, 8), 2, 9);
        b.ok();
    }
}

#[test]
fn reads_may_see_new_then_the_same() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 5, 1, 20);
    b.r(1, 0, 0, &rep(Z, 8), 2, 3);
    b.r(1, 1, 0, &rep(5, 8), 4, 5);
    b.r(1, 2, 0, &rep(5, 8), 6, 7);
    b.ok();
}

#[test]
fn multi_block_request_is_not_atomic_across_blocks() {
    // a 2-block write concurrent with a 2-block read: new in block 0, old in block 1
    let mut b = cbd();
    b.w(0, 0, 0, 16, 3, 1, 10);
    let mut seen = rep(3, 8);
    seen.extend(rep(Z, 8));
    b.r(1, 0, 0, &seen, 2, 9);
    b.ok();
}

#[test]
fn sector_writes_compose_within_a_block() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    b.w(0, 1, 3, 1, 2, 3, 4);
    b.r(0, 2, 0, &[1, 1, 1, 2, 1, 1, 1, 1], 5, 6);
    b.ok();
}

#[test]
fn failed_write_may_or_may_not_have_taken_effect() {
    for seen in [Z, 9] {
        let mut b = cbd();
        b.w_with(0, 0, 0, 16, 9, 1, Some((2, Outcome::Err(5))));
        // a failed write may have changed any subset of its blocks
        b.r(
            0,
            1,
            0,
            &[rep(seen, 8), rep(if seen == Z { 9 } else { Z }, 8)].concat(),
            3,
            4,
        );
        b.ok();
    }
}

#[test]
fn same_channel_overlapping_writes_take_effect_in_submission_order() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 10);
    b.w(0, 1, 0, 8, 2, 2, 11);
    b.r(1, 0, 0, &rep(2, 8), 12, 13);
    b.ok();
}

#[test]
fn linux_level_gives_no_order_within_a_queue() {
    let mut b = linux();
    b.w(0, 0, 0, 8, 1, 1, 10);
    b.w(0, 1, 0, 8, 2, 2, 11);
    b.r(1, 0, 0, &rep(1, 8), 12, 13);
    b.ok();
}

#[test]
fn unknown_initial_content_is_fixed_by_the_first_read() {
    let mut b = cbd();
    b.h.header.initial = Initial::Unknown;
    b.r(0, 0, 0, &rep(42, 8), 1, 2);
    b.r(0, 1, 0, &rep(42, 8), 3, 4);
    b.ok();
    b.r(0, 2, 0, &rep(43, 8), 5, 6);
    b.bad(Rule::NotLinearizable);
}

#[test]
fn write_zeroes_and_discard() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    b.op(OpKind::WriteZeroes, 0, 1, 0, 4, 3, Some((4, Outcome::Ok)));
    b.r(0, 2, 0, &[Z, Z, Z, Z, 1, 1, 1, 1], 5, 6);
    b.op(OpKind::Discard, 0, 3, 4, 4, 7, Some((8, Outcome::Ok)));
    b.r(0, 4, 0, &rep(Z, 8), 9, 10);
    b.ok();
    // undefined discard: anything may be read until the next write
    let mut b = cbd();
    b.h.header.discard = DiscardMode::Undefined;
    b.w(0, 0, 0, 8, 1, 1, 2);
    b.op(OpKind::Discard, 0, 1, 0, 8, 3, Some((4, Outcome::Ok)));
    b.r(0, 2, 0, &rep(77, 8), 5, 6);
    b.r(0, 3, 0, &rep(1, 8), 7, 8);
    b.ok();
}

#[test]
fn crash_may_lose_completed_unconfirmed_writes() {
    for media in [Z, 4] {
        let mut b = cbd();
        b.w(0, 0, 0, 8, 4, 1, 2);
        b.crash(5, &[(0, &rep(media, 8))]);
        b.r(0, 0, 0, &rep(media, 8), 6, 7);
        b.ok();
    }
}

#[test]
fn crash_keeps_one_version_per_block_not_a_prefix() {
    // two unconfirmed writes to two blocks: the later may survive while the earlier is lost
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    b.w(0, 1, 8, 8, 2, 3, 4);
    b.crash(5, &[(0, &[rep(Z, 8), rep(2, 8)].concat())]);
    b.ok();
}

#[test]
fn write_in_flight_at_a_crash_may_land_after_it() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    b.flush(0, 1, 3, 4);
    // in flight at the crash, executed by the restarted device
    b.w(0, 2, 0, 8, 2, 5, 20);
    b.crash(6, &[(0, &rep(1, 8))]);
    b.r(0, 3, 0, &rep(2, 8), 21, 22);
    b.ok();
}

/// A CRITICAL write in flight at a crash, run by the restarted device: its DURABLE
/// completion comes after the crash and says nothing about the media at the crash
/// (found by the device-VM crash runs' histories).
#[test]
fn durable_completion_after_a_crash_does_not_vouch_for_the_media_at_it() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    b.flush(0, 1, 3, 4);
    b.w(0, 2, 0, 8, 2, 5, 20);
    b.last().durable = true;
    b.crash(6, &[(0, &rep(1, 8))]);
    b.r(0, 3, 0, &rep(2, 8), 21, 22);
    b.ok();
}

#[test]
fn durable_write_survives_and_newer_unconfirmed_may_too() {
    for media in [1, 2] {
        let mut b = cbd();
        b.w(0, 0, 0, 8, 1, 1, 2);
        b.last().durable = true;
        b.w(0, 1, 0, 8, 2, 3, 4);
        b.crash(5, &[(0, &rep(media, 8))]);
        b.ok();
    }
}

#[test]
fn watermark_and_token_confirm_durability() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    b.w(1, 7, 8, 8, 2, 3, 4);
    b.h.watermarks.push(Watermark {
        t: 5,
        chan: 0,
        tid: 1,
    });
    b.h.confirms.push(Confirm {
        t: 6,
        chan: 1,
        tid: 7,
    });
    b.crash(7, &[(0, &[rep(1, 8), rep(2, 8)].concat())]);
    let s = b.ok();
    assert_eq!(s.durable_writes, 2);
}

// ---------------------------------------------------------------- illegal

#[test]
fn stale_read_after_a_completed_write() {
    let mut b = cbd();
    let w1 = b.w(0, 0, 0, 8, 1, 1, 2);
    let w2 = b.w(1, 0, 0, 8, 2, 3, 4);
    let r = b.r(0, 1, 0, &rep(1, 8), 5, 6);
    let v = b.bad(Rule::StaleRead);
    assert_eq!(v.ops, vec![r, w1, w2]);
    assert_eq!(v.block, Some(0));
}

#[test]
fn stale_read_of_the_initial_content() {
    let mut b = cbd();
    let w = b.w(0, 0, 8, 8, 1, 1, 2);
    let r = b.r(1, 0, 8, &rep(Z, 8), 3, 4);
    let v = b.bad(Rule::StaleRead);
    assert_eq!(v.ops, vec![r, w]);
    assert_eq!(v.block, Some(1));
    assert_eq!(v.sector, Some(8));
}

#[test]
fn read_of_a_value_never_written() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    let r = b.r(0, 1, 0, &[1, 1, 1, 1, 1, 99, 1, 1], 3, 4);
    let v = b.bad(Rule::NeverWritten);
    assert_eq!(v.ops, vec![r]);
    assert_eq!(v.sector, Some(5));
}

#[test]
fn read_of_a_value_from_the_future() {
    let mut b = cbd();
    let r = b.r(0, 0, 0, &rep(3, 8), 1, 2);
    let w = b.w(0, 1, 0, 8, 3, 3, 4);
    let v = b.bad(Rule::FutureRead);
    assert_eq!(v.ops, vec![r, w]);
}

#[test]
fn overlapping_writes_mixed_within_a_block() {
    let mut b = cbd();
    let w1 = b.w(0, 0, 0, 8, 1, 1, 10);
    let w2 = b.w(1, 0, 0, 8, 2, 2, 11);
    let r = b.r(0, 1, 0, &[1, 1, 1, 1, 2, 2, 2, 2], 12, 13);
    let v = b.bad(Rule::TornBlock);
    assert_eq!(v.ops, vec![r, w1, w2]);
}

#[test]
fn read_concurrent_with_a_write_sees_no_mix_either() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 10);
    b.r(1, 0, 0, &[Z, Z, 1, 1, 1, 1, 1, 1], 2, 9);
    b.bad(Rule::TornBlock);
}

#[test]
fn new_then_old_inversion_between_two_reads() {
    let mut b = cbd();
    let w = b.w(0, 0, 0, 8, 5, 1, 20);
    b.w(2, 0, 64, 8, 6, 2, 3); // unrelated block: must not be in the counter-example
    let r1 = b.r(1, 0, 0, &rep(5, 8), 4, 5);
    let r2 = b.r(1, 1, 0, &rep(Z, 8), 6, 7);
    b.r(1, 2, 0, &rep(5, 8), 8, 9); // irrelevant read, shrunk away
    let v = b.bad(Rule::NotLinearizable);
    assert_eq!(v.ops, vec![w, r1, r2], "{v}");
}

#[test]
fn completions_reordered_on_one_channel() {
    let mut b = cbd();
    let a = b.w(0, 0, 0, 8, 1, 1, 10);
    let c = b.w(0, 1, 8, 8, 2, 2, 5);
    let v = b.bad(Rule::ChannelOrder);
    assert_eq!(v.ops, vec![a, c]);
    // not a promise at the Linux level
    b.h.header.level = Level::Linux;
    b.ok();
}

#[test]
fn same_channel_writes_applied_out_of_order() {
    let mut b = cbd();
    let w1 = b.w(0, 0, 0, 8, 1, 1, 10);
    let w2 = b.w(0, 1, 0, 8, 2, 2, 11);
    let r = b.r(1, 0, 0, &rep(1, 8), 12, 13);
    let v = b.bad(Rule::ChannelOrder);
    assert_eq!(v.ops, vec![w1, w2, r]);
}

#[test]
fn failed_write_cannot_take_effect_after_its_completion() {
    let mut b = cbd();
    let f = b.w_with(0, 0, 0, 8, 1, 1, Some((2, Outcome::Err(5))));
    let w = b.w(0, 1, 0, 8, 2, 3, 4);
    let r = b.r(0, 2, 0, &rep(1, 8), 5, 6);
    let v = b.bad(Rule::StaleRead);
    assert_eq!(v.ops, vec![r, f, w]);
}

#[test]
fn durable_completion_lost_in_a_crash() {
    let mut b = cbd();
    let w = b.w(0, 0, 0, 8, 1, 1, 2);
    b.last().durable = true;
    b.crash(3, &[(0, &rep(Z, 8))]);
    let v = b.bad(Rule::LostDurable);
    assert_eq!(v.ops, vec![w]);
    assert_eq!(v.crash, Some(3));
    assert!(v.explanation.contains("DURABLE"), "{v}");
}

#[test]
fn watermark_that_lied() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    let w = b.w(0, 1, 0, 8, 2, 3, 4);
    b.h.watermarks.push(Watermark {
        t: 5,
        chan: 0,
        tid: 2,
    });
    b.crash(6, &[(0, &rep(1, 8))]);
    let v = b.bad(Rule::LostDurable);
    assert!(v.ops.contains(&w));
    assert!(v.explanation.contains("watermark"), "{v}");
}

#[test]
fn flush_that_lied() {
    let mut b = cbd();
    let w = b.w(0, 0, 0, 8, 1, 1, 2);
    let f = b.flush(1, 0, 3, 4); // another channel: a FLUSH covers every queue
    b.crash(5, &[(0, &rep(Z, 8))]);
    let v = b.bad(Rule::LostDurable);
    assert_eq!(v.ops, vec![w, f]);
    assert!(v.explanation.contains(&format!("FLUSH #{f}")), "{v}");
}

#[test]
fn flush_covers_only_writes_completed_before_it_was_invoked() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 5);
    b.flush(1, 0, 3, 4); // invoked while the write was in flight
    b.crash(6, &[(0, &rep(Z, 8))]);
    b.ok();
}

#[test]
fn flush_after_a_crash_does_not_vouch_for_a_write_of_the_dead_incarnation() {
    // The write's CE was posted before the crash and seen after it; the FLUSH of the
    // next incarnation cannot bring back what the crash lost.
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 3);
    b.crash(2, &[(0, &rep(Z, 8))]);
    b.flush(1, 0, 4, 5);
    b.ok();
}

#[test]
fn concurrent_durable_write_may_be_ordered_first() {
    // W2 durable, W1 concurrent and unconfirmed: media = W1 is legal (W2 then W1)
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 10);
    b.w(1, 0, 0, 8, 2, 2, 3);
    b.last().durable = true;
    b.crash(11, &[(0, &rep(1, 8))]);
    b.ok();
}

#[test]
fn durable_floor_needs_the_search() {
    // W1 is still in flight when the durable W2 runs, so no real-time order puts W1
    // first; but a read saw W1's value before W2 was invoked, so W1 took effect first,
    // and the media may not hold it after the crash. Only the search sees that.
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 10);
    b.r(1, 0, 0, &rep(1, 8), 2, 3);
    b.w(1, 1, 0, 8, 2, 4, 5);
    b.last().durable = true;
    b.crash(11, &[(0, &rep(1, 8))]);
    let v = b.bad(Rule::LostDurable);
    assert_eq!(
        v.sector, None,
        "found by the search, not a single observation: {v}"
    );
}

#[test]
fn media_after_a_crash_never_written() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    b.crash(3, &[(0, &[1, 1, 1, 1, 1, 1, 1, 66])]);
    let v = b.bad(Rule::NeverWritten);
    assert_eq!(v.crash, Some(3));
}

#[test]
fn media_after_a_crash_torn_within_a_block() {
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 1, 2);
    b.crash(3, &[(0, &[1, 1, 1, 1, Z, Z, Z, Z])]);
    b.bad(Rule::TornBlock);
}

#[test]
fn read_after_a_crash_must_see_the_media() {
    let mut b = cbd();
    let w = b.w(0, 0, 0, 8, 1, 1, 2);
    b.crash(3, &[(0, &rep(Z, 8))]);
    let r = b.r(0, 0, 0, &rep(1, 8), 4, 5);
    let v = b.bad(Rule::StaleRead);
    assert_eq!(v.ops, vec![r, w]);
}

#[test]
fn invalid_histories_are_errors_not_violations() {
    let mut b = cbd();
    b.w(0, 0, 1, 8, 1, 1, 2);
    b.last().offset = 100;
    assert!(matches!(check(&b.h), Err(CheckError::Invalid(_))));
    let mut b = cbd();
    b.w(0, 0, 0, 8, 1, 5, 2);
    let e = check(&b.h).unwrap_err();
    assert!(
        e.to_string().contains("completed before it was invoked"),
        "{e}"
    );
}

// ---------------------------------------------------------------- text format

#[test]
fn parse_errors_name_the_line() {
    let cases = [
        ("", "no header"),
        ("cbd-history 2\n", "version"),
        (
            "cbd-history 1\ninv 0 t=1 ch=0 tid=0 write off=0 len=512\n",
            "missing d=",
        ),
        (
            "cbd-history 1\ninv 0 t=1 ch=0 tid=0 write off=0 len=512 d=xyz\n",
            "bad digest",
        ),
        ("cbd-history 1\nret 3 t=1 ok\n", "before its inv"),
        (
            "cbd-history 1\ninv 0 t=1 ch=0 tid=0 read off=0 len=512\nret 0 t=2\n",
            "exactly one",
        ),
        ("cbd-history 1\nmedia off=0 d=z\n", "before any crash"),
        ("cbd-history 1\nbogus\n", "unknown line"),
        (
            "cbd-history 1\ninv 0 t=1 ch=0 tid=0 write off=0 len=1024 d=z\n",
            "carries 1 digests",
        ),
    ];
    for (text, want) in cases {
        let e = parse(text).unwrap_err();
        assert!(e.to_string().contains(want), "{text:?}: {e}");
    }
    let e = parse("cbd-history 1\n# c\n\ncrash t=x\n").unwrap_err();
    assert_eq!(e.line, Some(4));
}

#[test]
fn text_round_trip_and_compact_digests() {
    let mut b = cbd();
    b.w(0, 0, 0, 16, Z, 1, 2);
    b.w_with(1, 3, 8, 8, 0xabc, 3, None);
    b.r(0, 1, 0, &rep(Z, 8), 4, 5);
    b.op(OpKind::Flush, 0, 2, 0, 0, 6, Some((7, Outcome::Err(5))));
    b.last().len = 0;
    b.h.watermarks.push(Watermark {
        t: 8,
        chan: 0,
        tid: 2,
    });
    b.crash(9, &[(0, &rep(Z, 16))]);
    let text = to_text(&b.h);
    assert!(text.contains("d=z*16"), "{text}");
    assert_eq!(parse(&text).unwrap(), b.h);
}

#[test]
fn recorder_records_a_checkable_history() {
    let rec = Recorder::new(Header::default());
    let data = vec![7u8; 8192];
    let w = rec.invoke(0, 0, OpKind::Write, 4096, 8192, Some(&data));
    rec.complete(w, Outcome::Ok, None, false);
    let r = rec.invoke(1, 0, OpKind::Read, 4096, 4096, None);
    rec.complete(r, Outcome::Ok, Some(&data[..4096]), false);
    let f = rec.invoke(0, 1, OpKind::Flush, 0, 0, None);
    rec.complete(f, Outcome::Ok, None, true);
    rec.crash();
    rec.media(4096, &data);
    let h = rec.into_history();
    let s = check(&h).unwrap();
    assert_eq!((s.ops, s.durable_writes, s.crashes), (3, 1, 1));
    // and the media losing that flushed write is caught
    let mut bad = h.clone();
    bad.crashes[0].media[0].digests = digests(&[0u8; 8192]);
    assert_eq!(check(&bad).unwrap_err().rule(), Some(Rule::LostDurable));
}
