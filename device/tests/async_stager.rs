//! The stager's asynchronous write-back over a media that holds its requests in flight
//! until the test completes them (`native::HeldMedia`): order of overlapping writes,
//! and the watermark waits for the writes *and* the flush.

use device::durable::Stager;
use device::native::HeldMedia;

const B: usize = 4096;

/// Two staged writes to the same block in one batch, the media completing requests in
/// any order: the later one is started only after the earlier completed, so the media
/// ends with the later content — also when the media completes the later requests of
/// the batch first.
#[test]
fn a_later_write_to_the_same_block_reaches_the_media_after_the_earlier() {
    let mut sbuf = vec![0u8; 64 << 10];
    let mut s = Stager::new(HeldMedia::new(256 << 10), &mut sbuf);
    s.write(0, 0, 0, &[1; B], 10).unwrap();
    s.write(0, 1, 8 * B as u64, &[2; B], 10).unwrap();
    s.write(0, 2, 0, &[3; B], 10).unwrap();
    s.progress(10).unwrap();
    let held = s.media().held_writes();
    let offsets: Vec<u64> = held.iter().map(|w| w.1).collect();
    assert_eq!(
        offsets,
        [0, 8 * B as u64],
        "the later write to block 0 was started while the earlier one was in flight"
    );
    // Newest first.
    for w in held.iter().rev() {
        s.media().complete(w.0, true);
    }
    s.progress(10).unwrap();
    let held = s.media().held_writes();
    assert_eq!(held.len(), 1);
    s.media().complete(held[0].0, true);
    s.progress(10).unwrap();
    let f = s.media().held_flush().expect("flush");
    s.media().complete(f, true);
    s.progress(10).unwrap();
    assert_eq!(s.pending(), 0);
    let m = s.media();
    assert_eq!((m.durable()[0], m.durable()[8 * B]), (3, 2));
    // A read meanwhile always saw the newest data: checked with a fresh batch below.
    s.write(1, 0, 0, &[4; B], 20).unwrap();
    s.progress(20).unwrap();
    let mut r = [0u8; B];
    s.read(0, &mut r).unwrap();
    assert!(
        r.iter().all(|&x| x == 4),
        "a read during the write-back saw older data"
    );
}

/// The watermark of a channel moves only after its writes completed *and* the flush
/// started after them completed; until then a read sees the staged data.
#[test]
fn the_watermark_waits_for_the_writes_and_the_flush() {
    let mut sbuf = vec![0u8; 64 << 10];
    let mut s = Stager::new(HeldMedia::new(256 << 10), &mut sbuf);
    s.write(3, 40, 0, &[5; B], 10).unwrap();
    s.write(3, 41, 16 * B as u64, &[6; B], 10).unwrap();
    assert_eq!(s.watermark(3, 42), 40);
    s.progress(9).unwrap();
    assert!(
        s.media().held_writes().is_empty(),
        "started before it was due"
    );
    s.progress(10).unwrap();
    let held = s.media().held_writes();
    assert_eq!(held.len(), 2);
    s.media().complete(held[1].0, true);
    s.progress(11).unwrap();
    assert!(
        s.media().held_flush().is_none(),
        "flushed before every write completed"
    );
    assert_eq!(s.watermark(3, 42), 40);
    s.media().complete(held[0].0, true);
    s.progress(12).unwrap();
    assert_eq!(
        s.watermark(3, 42),
        40,
        "durable on write completion, before the flush"
    );
    let f = s
        .media()
        .held_flush()
        .expect("no flush after the writes completed");
    s.progress(13).unwrap();
    assert_eq!(s.watermark(3, 42), 40, "durable before the flush completed");
    s.media().complete(f, true);
    s.progress(14).unwrap();
    assert_eq!(s.watermark(3, 42), 42);
    assert_eq!(s.stats.flushes, 1);
}

/// A failed flush declares nothing durable; the next write-back flushes again.
#[test]
fn a_failed_flush_declares_nothing_durable() {
    let mut sbuf = vec![0u8; 64 << 10];
    let mut s = Stager::new(HeldMedia::new(256 << 10), &mut sbuf);
    s.write(0, 7, 0, &[5; B], 10).unwrap();
    s.progress(10).unwrap();
    let w = s.media().held_writes()[0].0;
    s.media().complete(w, true);
    s.progress(10).unwrap();
    let f = s.media().held_flush().unwrap();
    s.media().complete(f, false);
    assert!(s.progress(10).is_err());
    assert_eq!((s.watermark(0, 8), s.stats.media_errors), (7, 1));
    s.progress(11).unwrap();
    let f = s.media().held_flush().expect("no second flush");
    assert!(s.media().held_writes().is_empty(), "wrote the block again");
    s.media().complete(f, true);
    s.progress(12).unwrap();
    assert_eq!(s.watermark(0, 8), 8);
}

/// FLUSH / CRITICAL (`sync`) drain a write-back in flight and then make everything
/// durable.
#[test]
fn sync_drains_a_write_back_in_flight() {
    let mut sbuf = vec![0u8; 64 << 10];
    let mut s = Stager::new(HeldMedia::new(256 << 10), &mut sbuf);
    s.write(0, 0, 0, &[1; B], 10).unwrap();
    s.progress(10).unwrap();
    s.write(0, 1, 0, &[2; B], 10).unwrap();
    s.sync().unwrap();
    assert_eq!((s.pending(), s.watermark(0, 2)), (0, 2));
    assert_eq!(s.media().durable()[0], 2);
}
