//! The checker's speed on big histories (thousands of operations at queue depth 64).

mod sim;

use std::time::Instant;

use history::*;
use sim::{Params, run};

fn timed(p: &Params) -> (Summary, f64) {
    let r = run(p);
    let t = Instant::now();
    let s = match check(&r.h) {
        Ok(s) => s,
        Err(e) => panic!("{p:?}: {e}"),
    };
    (s, t.elapsed().as_secs_f64())
}

/// 20 000 requests at QD 64 over 256 blocks (1 MiB), requests of 512 B .. 64 KiB, with
/// FLUSHes, watermarks, failed writes and crashes: 4 channels at the CBD level (channel
/// order bounds the search), 1 queue at the Linux level (no order at all: 64 requests
/// in flight on 256 blocks; 4 such queues can exceed the search budget, see the docs).
#[test]
fn big_history_at_qd64_checks_fast() {
    for (level, chans) in [(Level::Cbd, 4), (Level::Linux, 1)] {
        let p = Params {
            seed: 7,
            level,
            chans,
            qd: 64,
            blocks: 256,
            ops: 20_000,
            max_sectors: 128,
            crash_percent: 2,
            fail_percent: 1,
        };
        let (s, secs) = timed(&p);
        eprintln!("{level:?}: {s} — check took {secs:.3} s");
        assert!(s.ops == 20_000 && s.crashes > 0);
        // generous bound for a loaded 2-core machine; typically well under a second
        assert!(secs < 10.0, "{secs} s");
    }
}

/// Hot spot: 2 000 requests at QD 64 on 2 channels, all on 2 blocks.
#[test]
fn hot_blocks_at_qd64() {
    let p = Params {
        seed: 11,
        level: Level::Cbd,
        chans: 2,
        qd: 64,
        blocks: 2,
        ops: 2_000,
        max_sectors: 16,
        crash_percent: 0,
        fail_percent: 1,
    };
    let (s, secs) = timed(&p);
    eprintln!("hot: {s} — check took {secs:.3} s");
    assert!(secs < 20.0, "{secs} s");
}
