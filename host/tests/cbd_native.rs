//! The host's CBD path end to end, natively: the `device` crate's backend engine polls in one
//! thread over one mapping of a shared file; `CbdDisk` (our `MappedMem` on a second mapping of
//! the same file) serves requests as the ublk queues would. Time is a test-controlled clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use device::backend::{Backend, BackendConfig};
use device::layout::{TransportInfo, chan};
use device::native::{CrashMedia, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::linux::attach::{CbdError, CbdOptions, register_check_only};
use host::linux::cbd_disk::CbdDisk;
use host::linux::disk::{Disk, Errno, Op, Req};
use host::linux::mem::MappedMem;

const DISK: usize = 16 << 20;
const T0: u64 = 1_700_000_000_000_000_000;

/// An unlinked temporary file of `len` bytes; `tag` keeps tests running in parallel
/// threads of this process apart.
fn shared_file(tag: &str, len: u64) -> std::fs::File {
    let p = std::env::temp_dir().join(format!("cbd-host-native-{tag}-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.set_len(len).unwrap();
    std::fs::remove_file(&p).unwrap();
    f
}

/// Two mappings of one fresh shared file (the backend's and the host's, as two VMs
/// would have), formatted as a 2-segment transport with the CRC flags.
fn formatted(tag: &str, now: u64) -> (MappedMem, &'static MappedMem) {
    let len = TransportInfo::region_for(2);
    let file = shared_file(tag, len);
    let backend_mem = MappedMem::map(file.try_clone().unwrap(), 0, len as usize).unwrap();
    let host_mem: &'static MappedMem =
        Box::leak(Box::new(MappedMem::map(file, 0, len as usize).unwrap()));
    Transport::format(
        Shm::new(&backend_mem, &NoTrace),
        format_flags(true),
        false,
        now,
    )
    .unwrap();
    (backend_mem, host_mem)
}

fn req(op: Op, offset: u64, len: u32, fua: bool) -> Req {
    Req {
        op,
        offset,
        len,
        fua,
    }
}

#[test]
fn cbd_disk_against_the_backend_engine() {
    let (backend_mem, host_mem) = formatted("disk", T0);

    let clock = Arc::new(AtomicU64::new(T0));
    let stop = AtomicBool::new(false);
    let opts = CbdOptions {
        queues: 2,
        depth: 16,
        ..CbdOptions::new("guest")
    };

    // Before the backend exists: a clear error.
    let e = register_check_only(host_mem, &opts, T0).unwrap_err();
    assert!(matches!(e, CbdError::NoBackend(0)), "{e}");

    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let cfg = BackendConfig {
        n_handlers: 2,
        discard_wz: true,
        ..BackendConfig::default()
    };
    let mut backend = Backend::start(
        Shm::new(&backend_mem, &NoTrace),
        cfg,
        VecMedia::new(DISK),
        &mut scratch,
        T0,
    )
    .expect("backend start");

    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            while !stop.load(SeqCst) {
                backend.poll(clock.load(SeqCst)).expect("backend poll");
            }
            backend.into_media()
        });

        let c = Arc::clone(&clock);
        let disk = CbdDisk::start(host_mem, &opts, Arc::new(move || c.load(SeqCst))).unwrap();
        assert_eq!(disk.size(), DISK as u64);
        let mut q0 = disk.queue(0).unwrap();
        let mut q1 = disk.queue(1).unwrap();
        assert!(disk.queue(0).is_err(), "a channel is handed out once");
        assert!(disk.queue(2).is_err(), "only 2 channels");

        // Write (FUA) on channel 0, read back on channel 1.
        let mut data: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 + 3) as u8).collect();
        q0.submit(&req(Op::Write, 1 << 20, data.len() as u32, true), &mut data)
            .unwrap();
        let mut back = vec![0u8; data.len()];
        q1.submit(&req(Op::Read, 1 << 20, back.len() as u32, false), &mut back)
            .unwrap();
        assert_eq!(back, data);
        q1.submit(&req(Op::Flush, 0, 0, false), &mut []).unwrap();
        q0.submit(&req(Op::WriteZeroes, 1 << 20, 4096, false), &mut [])
            .unwrap();
        q0.submit(&req(Op::Read, 1 << 20, 8192, false), &mut back)
            .unwrap();
        assert_eq!(&back[..4096], &[0u8; 4096][..]);
        assert_eq!(&back[4096..8192], &data[4096..8192]);
        // Beyond the end: the backend's error comes back as the request's errno.
        assert!(
            q0.submit(&req(Op::Read, DISK as u64, 4096, false), &mut back)
                .is_err()
        );

        // A batch: 24 writes (every third FUA) started together on channel 1, then finished;
        // then 24 reads the same way. Every tag is reported exactly once, with its data.
        let chunk = 64 * 1024usize;
        let mut bufs: Vec<Vec<u8>> = (0..24).map(|t| vec![t as u8 ^ 0xa5; chunk]).collect();
        for (t, b) in bufs.iter_mut().enumerate() {
            let r = req(
                Op::Write,
                (4 << 20) + (t * chunk) as u64,
                chunk as u32,
                t % 3 == 0,
            );
            assert!(q1.start(t as u16, &r, b).is_none(), "started, not done");
        }
        let mut done = vec![0u32; 24];
        q1.finish(&mut |t, r, d| {
            r.unwrap();
            assert!(d.is_empty());
            done[t as usize] += 1;
        });
        assert_eq!(done, vec![1; 24]);
        let mut got = vec![Vec::new(); 24];
        for t in 0..24u16 {
            let r = req(
                Op::Read,
                (4 << 20) + t as u64 * chunk as u64,
                chunk as u32,
                false,
            );
            let mut b = vec![0u8; chunk];
            assert!(q1.start(t, &r, &mut b).is_none());
        }
        q1.finish(&mut |t, r, d| {
            r.unwrap();
            got[t as usize] = d.to_vec();
        });
        for (t, g) in got.iter().enumerate() {
            assert_eq!(*g, vec![t as u8 ^ 0xa5; chunk], "tag {t}");
        }

        // The backend dies (stops polling, record left behind) and does not return within the
        // recovery bound (default 120 s; 200 s pass). A request must fail with EIO rather than
        // wait forever.
        stop.store(true, SeqCst);
        let media = poller.join().unwrap();
        clock.fetch_add(200_000_000_000, SeqCst);
        assert_eq!(
            q1.submit(&req(Op::Read, 0, 4096, false), &mut back),
            Err(Errno(libc::EIO))
        );
        disk.shutdown();

        assert_eq!(&media.data[1 << 20..(1 << 20) + 4096], &[0u8; 4096][..]);
        assert_eq!(
            &media.data[(1 << 20) + 4096..(1 << 20) + data.len()],
            &data[4096..]
        );
        // One flush per FUA write (1 + 8), one explicit.
        assert!(media.flushes >= 10, "flushes: {}", media.flushes);
        let st = disk.stats();
        assert!(
            st.contains("fua_writes=9") && st.contains("flushes=1"),
            "{st}"
        );
    });
}

/// A backend engine (with a staging buffer, so STANDARD writes complete before they are
/// durable) polling in a thread over a shared file, real clock; `f` gets the disk.
fn with_backend(tag: &str, opts: CbdOptions, f: impl FnOnce(&CbdDisk)) -> VecMedia {
    with_backend_wz(tag, opts, true, f)
}

/// [`with_backend`]; `discard_wz`: the backend offers DISCARD / WRITE_ZEROES.
fn with_backend_wz(
    tag: &str,
    opts: CbdOptions,
    discard_wz: bool,
    f: impl FnOnce(&CbdDisk),
) -> VecMedia {
    with_backend_mem(tag, discard_wz, |host_mem| {
        let disk = CbdDisk::start(host_mem, &opts, Arc::new(host::linux::attach::now_ns)).unwrap();
        f(&disk);
        disk.shutdown();
    })
    .1
}

/// Sets the flag when dropped: the backend thread stops however the test body ends (a
/// failed assertion must fail the test, not hang it).
struct SetOnDrop<'a>(&'a AtomicBool);
impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// The backend engine polling in a thread (as in [`with_backend`]); `f` gets the host's
/// mapping. Returns what `f` returned and the media.
fn with_backend_mem<R>(
    tag: &str,
    discard_wz: bool,
    f: impl FnOnce(&'static MappedMem) -> R,
) -> (R, VecMedia) {
    let cfg = BackendConfig {
        n_handlers: 2,
        discard_wz,
        ..BackendConfig::default()
    };
    with_backend_cfg(tag, cfg, f)
}

/// [`with_backend_mem`] with the backend configured by `cfg`.
fn with_backend_cfg<R>(
    tag: &str,
    cfg: BackendConfig,
    f: impl FnOnce(&'static MappedMem) -> R,
) -> (R, VecMedia) {
    with_gated_backend(tag, cfg, |host_mem, _| f(host_mem))
}

/// The backend thread of [`with_gated_backend`]: it stops between two polls while the test
/// holds `gate`; `served` counts the SEs it took.
struct Gate {
    gate: Mutex<()>,
    served: AtomicU64,
}

/// [`with_backend_cfg`]; `f` also gets the backend thread's [`Gate`].
fn with_gated_backend<R>(
    tag: &str,
    cfg: BackendConfig,
    f: impl FnOnce(&'static MappedMem, &Gate) -> R,
) -> (R, VecMedia) {
    let now = host::linux::attach::now_ns;
    let (backend_mem, host_mem) = formatted(tag, now());
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut staging = vec![0u8; 1 << 20];
    let mut backend = Backend::start(
        Shm::new(&backend_mem, &NoTrace),
        cfg,
        VecMedia::new(DISK),
        &mut scratch,
        now(),
    )
    .expect("backend start");
    backend.set_staging(&mut staging).unwrap();
    let stop = AtomicBool::new(false);
    let gate = Gate {
        gate: Mutex::new(()),
        served: AtomicU64::new(0),
    };
    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            while !stop.load(SeqCst) {
                {
                    let _open = gate.gate.lock().unwrap_or_else(|p| p.into_inner());
                    let st = backend.poll(now()).expect("backend poll");
                    gate.served.fetch_add(st.ses as u64, SeqCst);
                }
                std::thread::yield_now();
            }
            backend.into_media()
        });
        let r = {
            let _stop = SetOnDrop(&stop);
            f(host_mem, &gate)
        };
        (r, poller.join().unwrap())
    })
}

fn stat(s: &str, key: &str) -> u64 {
    s.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key} not in {s}"))
        .parse()
        .unwrap()
}

/// Writes on both channels, a flush on one, a FUA write; returns the stats after the flush
/// and at the end.
fn flush_and_fua(disk: &CbdDisk) -> (String, String) {
    let mut q0 = disk.queue(0).unwrap();
    let mut q1 = disk.queue(1).unwrap();
    for i in 0..8u64 {
        let q = if i % 2 == 0 { &mut q0 } else { &mut q1 };
        let mut b = vec![i as u8 + 1; 8192];
        q.submit(&req(Op::Write, i * 8192, 8192, false), &mut b)
            .unwrap();
    }
    // The flush goes to channel 1 but covers the writes completed on channel 0 too.
    q1.submit(&req(Op::Flush, 0, 0, false), &mut []).unwrap();
    let after_flush = disk.stats();
    let mut b = vec![0x77; 4096];
    q0.submit(&req(Op::Write, 1 << 20, 4096, true), &mut b)
        .unwrap();
    let mut back = vec![0; 8192];
    q1.submit(&req(Op::Read, 3 * 8192, 8192, false), &mut back)
        .unwrap();
    assert_eq!(back, vec![4u8; 8192]);
    (after_flush, disk.stats())
}

#[test]
fn durability_tokens_flush_waits_for_the_watermark_and_fua_is_critical() {
    let opts = CbdOptions {
        queues: 2,
        depth: 16,
        power_window_us: 2000,
        ..CbdOptions::new("tok")
    };
    let mut stats = (String::new(), String::new());
    let media = with_backend("tok", opts, |disk| {
        assert!(disk.durable_tokens());
        stats = flush_and_fua(disk);
    });
    let (after_flush, end) = stats;
    assert!(after_flush.contains("durable_tokens=on"), "{after_flush}");
    // No FLUSH command; every write completed before the flush is confirmed durable.
    assert_eq!(stat(&after_flush, "cbd_flushes_sent"), 0, "{after_flush}");
    assert_eq!(stat(&after_flush, "flushes_by_watermark"), 1);
    assert_eq!(stat(&after_flush, "tokens_completed"), 8);
    assert_eq!(stat(&after_flush, "tokens_confirmed"), 8, "{after_flush}");
    assert_eq!(stat(&after_flush, "tokens_outstanding"), 0);
    assert_eq!(stat(&after_flush, "tokens_lost"), 0);
    assert!(stat(&after_flush, "watermark_sum") >= 8, "{after_flush}");
    // FUA: one CRITICAL write, still no FLUSH command, confirmed at completion.
    assert_eq!(stat(&end, "critical_writes"), 1, "{end}");
    assert_eq!(stat(&end, "cbd_flushes_sent"), 0);
    assert!(stat(&end, "tokens_confirmed_at_completion") >= 1, "{end}");
    assert!(end.contains("flushes=1 fua_writes=1"), "{end}");
    assert!(media.flushes >= 1);
    for i in 0..8usize {
        assert_eq!(media.data[i * 8192], i as u8 + 1, "write {i} on the media");
    }
    assert_eq!(media.data[1 << 20], 0x77);
}

#[test]
fn plain_v3_sends_flush_commands_and_no_extensions() {
    let opts = CbdOptions {
        queues: 2,
        depth: 16,
        plain_v3: true,
        ..CbdOptions::new("plain")
    };
    let mut stats = (String::new(), String::new());
    let media = with_backend("plain", opts, |disk| {
        assert!(!disk.durable_tokens());
        stats = flush_and_fua(disk);
    });
    let (after_flush, end) = stats;
    assert!(after_flush.contains("durable_tokens=off"), "{after_flush}");
    assert_eq!(stat(&after_flush, "cbd_flushes_sent"), 1, "{after_flush}");
    assert_eq!(stat(&after_flush, "flushes_by_watermark"), 0);
    // FUA = WRITE + CBD FLUSH.
    assert_eq!(stat(&end, "cbd_flushes_sent"), 2, "{end}");
    assert_eq!(stat(&end, "critical_writes"), 0);
    assert!(media.flushes >= 2);
    assert_eq!(media.data[1 << 20], 0x77);
}

#[test]
fn plain_v3_refuses_discard_and_write_zeroes() {
    let opts = CbdOptions {
        plain_v3: true,
        ..CbdOptions::new("plainwz")
    };
    with_backend("plainwz", opts, |disk| {
        assert_eq!(disk.max_discard_bytes(), 0, "not advertised to ublk");
        let mut q = disk.queue(0).unwrap();
        for op in [Op::Discard, Op::WriteZeroes] {
            assert_eq!(
                q.submit(&req(op, 0, 4096, false), &mut []),
                Err(Errno(libc::EOPNOTSUPP))
            );
        }
    });
}

/// With the extension offered (and not `--plain-v3`), the disk advertises DISCARD /
/// WRITE_ZEROES up to one CBD request, and both reach the backend: the range reads back as
/// zeroes, its neighbours keep their data, on either channel. Larger than advertised: EINVAL.
#[test]
fn discard_and_write_zeroes_reach_the_backend() {
    let opts = CbdOptions {
        queues: 2,
        ..CbdOptions::new("wz")
    };
    let media = with_backend("wz", opts, |disk| {
        assert_eq!(disk.max_discard_bytes(), chan::MAX_IO);
        let mut q0 = disk.queue(0).unwrap();
        let mut q1 = disk.queue(1).unwrap();
        let mut data = vec![0x5au8; 4 << 20];
        for i in 0..4u64 {
            q0.submit(
                &req(Op::Write, i << 20, 1 << 20, false),
                &mut data[..1 << 20],
            )
            .unwrap();
        }
        // DISCARD the whole second MiB (one full-size request), WRITE_ZEROES 8 KiB of the third.
        q0.submit(&req(Op::Discard, 1 << 20, chan::MAX_IO, false), &mut [])
            .unwrap();
        q1.submit(
            &req(Op::WriteZeroes, (2 << 20) + 4096, 8192, false),
            &mut [],
        )
        .unwrap();
        let mut back = vec![0u8; 1 << 20];
        q1.submit(&req(Op::Read, 1 << 20, 1 << 20, false), &mut back)
            .unwrap();
        assert!(back.iter().all(|&b| b == 0), "discarded MiB reads zeroes");
        q0.submit(&req(Op::Read, 2 << 20, 16384, false), &mut back)
            .unwrap();
        assert_eq!(&back[..4096], &[0x5a; 4096][..]);
        assert_eq!(&back[4096..12288], &[0; 8192][..]);
        assert_eq!(&back[12288..16384], &[0x5a; 4096][..]);
        assert_eq!(
            q0.submit(&req(Op::Discard, 0, chan::MAX_IO + 4096, false), &mut []),
            Err(Errno(libc::EINVAL)),
            "larger than advertised"
        );
        q0.submit(&req(Op::Flush, 0, 0, false), &mut []).unwrap();
        let st = disk.stats();
        assert_eq!(stat(&st, "discards"), 3, "{st}");
    });
    assert_eq!(&media.data[1 << 20..2 << 20], &vec![0u8; 1 << 20][..]);
    assert_eq!(media.data[(1 << 20) - 1], 0x5a);
    assert_eq!(media.data[2 << 20], 0x5a);
    assert_eq!(
        &media.data[(2 << 20) + 4096..(2 << 20) + 12288],
        &[0u8; 8192][..]
    );
}

/// A backend without the extension: nothing advertised, EOPNOTSUPP without asking it.
#[test]
fn no_discard_when_the_backend_does_not_offer_it() {
    let opts = CbdOptions::new("nowz");
    with_backend_wz("nowz", opts, false, |disk| {
        assert_eq!(disk.max_discard_bytes(), 0);
        let mut q = disk.queue(0).unwrap();
        for op in [Op::Discard, Op::WriteZeroes] {
            assert_eq!(
                q.submit(&req(op, 0, 4096, false), &mut []),
                Err(Errno(libc::EOPNOTSUPP))
            );
        }
    });
}

/// One queue, requests started as ublk hands them over and reported as they finish: a token
/// flush waits for the device's watermark (the write before it stays staged: its bound is an
/// hour), and a READ and a WRITE started after it are reported meanwhile, while the flush is
/// still in flight. A FUA write (CRITICAL: the device syncs everything staged) moves the
/// watermark past the first write; then the flush is reported too, successful.
#[test]
fn later_requests_complete_while_a_flush_waits_for_the_watermark() {
    use device::durable::DurableConfig;
    let cfg = BackendConfig {
        n_handlers: 1,
        durable: DurableConfig {
            offer: true,
            standard_bound_ns: 3_600_000_000_000,
            ephemeral_bound_ns: 3_600_000_000_000,
        },
        ..BackendConfig::default()
    };
    let ((), media) = with_backend_cfg("overtake", cfg, |host_mem| {
        let now = host::linux::attach::now_ns;
        let disk = CbdDisk::start(host_mem, &CbdOptions::new("overtake"), Arc::new(now)).unwrap();
        assert!(disk.durable_tokens());
        let mut q = disk.queue(0).unwrap();
        let mut w = block(0, 1);
        q.submit(&req(Op::Write, 0, BLK as u32, false), &mut w)
            .unwrap();
        assert!(q.start(1, &req(Op::Flush, 0, 0, false), &mut []).is_none());
        let mut r = vec![0u8; BLK];
        assert!(
            q.start(2, &req(Op::Read, 0, BLK as u32, false), &mut r)
                .is_none()
        );
        let mut w2 = block(1, 1);
        let w2_req = req(Op::Write, BLK as u64, BLK as u32, false);
        assert!(q.start(3, &w2_req, &mut w2).is_none());
        let mut got: Vec<(u16, Result<(), Errno>)> = Vec::new();
        let mut read = Vec::new();
        let t0 = std::time::Instant::now();
        let mut waiting = usize::MAX;
        while got.len() < 2 {
            assert!(
                t0.elapsed().as_secs() < 30,
                "read and write not reported: {got:?}"
            );
            waiting = q.poll(&mut |t, r, d| {
                if t == 2 {
                    read = d.to_vec();
                }
                got.push((t, r));
            });
        }
        got.sort_by_key(|&(t, _)| t);
        assert_eq!(
            got,
            vec![(2, Ok(())), (3, Ok(()))],
            "the flush is not among them"
        );
        assert_eq!(waiting, 1, "the flush is still in flight");
        assert!(read == block(0, 1), "the read returns the staged write");
        let st = disk.stats();
        assert_eq!(stat(&st, "flushes_by_watermark"), 0, "{st}");
        assert!(
            stat(&st, "tokens_outstanding") >= 1,
            "the write is staged: {st}"
        );
        // FUA: CRITICAL, the device syncs its staging; the watermark passes the first write.
        let mut f = block(2, 1);
        let fua = req(Op::Write, 2 * BLK as u64, BLK as u32, true);
        assert!(q.start(4, &fua, &mut f).is_none());
        got.clear();
        q.finish(&mut |t, r, _| got.push((t, r)));
        got.sort_by_key(|&(t, _)| t);
        assert_eq!(got, vec![(1, Ok(())), (4, Ok(()))]);
        let st = disk.stats();
        assert_eq!(stat(&st, "flushes_by_watermark"), 1, "{st}");
        assert_eq!(stat(&st, "cbd_flushes_sent"), 0, "{st}");
        disk.shutdown();
    });
    check_media(&media, &[Some(1), Some(1), Some(1)]);
}

/// Token mode **without a replay buffer** (`--replay-buffer 0`): two ublk flushes in flight
/// when the backend restarts with a completed write still staged (lost). Both fail, not only
/// the first to notice: the second arrived before the loss was reported and would otherwise
/// vouch for the lost write. A flush that arrives afterwards succeeds again. (With the
/// buffer the write is replayed and both succeed:
/// `a_backend_restart_is_invisible_writes_flushes_and_reads_all_succeed`.)
#[test]
fn token_flushes_in_flight_across_a_backend_restart_all_fail_without_replay() {
    use device::durable::DurableConfig;
    use std::sync::atomic::AtomicU8;
    let now = host::linux::attach::now_ns;
    let (backend_mem, host_mem) = formatted("tokcrash", now());
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut staging = vec![0u8; 1 << 20];
    let cfg = BackendConfig {
        n_handlers: 1,
        // STANDARD writes stay staged (not durable) for a second (write-back starts at half
        // the bound): the crash comes well before; the last flush waits that long.
        durable: DurableConfig {
            offer: true,
            standard_bound_ns: 2_000_000_000,
            ephemeral_bound_ns: 2_000_000_000,
        },
        takeover: true,
        ..BackendConfig::default()
    };
    let shm = Shm::new(&backend_mem, &NoTrace);
    let mut backend =
        Backend::start(shm, cfg, VecMedia::new(DISK), &mut scratch, now()).expect("start");
    backend.set_staging(&mut staging).unwrap();
    // 0 run, 1 crash requested, 2 re-attached, 3 stop.
    let phase = AtomicU8::new(0);
    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let mut b = Some(backend);
            loop {
                match phase.load(SeqCst) {
                    3 => break,
                    1 => {
                        let (m, sc, stg) = b.take().unwrap().into_parts_staged();
                        let mut nb = Backend::start(shm, cfg, m, sc, now()).expect("re-attach");
                        nb.set_staging(stg).unwrap();
                        b = Some(nb);
                        phase.store(2, SeqCst);
                    }
                    _ => {}
                }
                b.as_mut().unwrap().poll(now()).expect("backend poll");
                std::thread::yield_now();
            }
        });
        // Stop the backend thread however this ends (a failed assertion must not hang).
        struct StopOnDrop<'a>(&'a AtomicU8);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(3, SeqCst);
            }
        }
        let _stop = StopOnDrop(&phase);
        let opts = CbdOptions {
            replay_bytes: 0,
            ..CbdOptions::new("tokcrash")
        };
        let disk = CbdDisk::start(host_mem, &opts, Arc::new(now)).unwrap();
        assert!(disk.durable_tokens());
        let mut q = disk.queue(0).unwrap();
        let mut b = vec![0x11; 4096];
        q.submit(&req(Op::Write, 0, 4096, false), &mut b).unwrap();
        let flush = req(Op::Flush, 0, 0, false);
        assert!(q.start(1, &flush, &mut []).is_none());
        assert!(q.start(2, &flush, &mut []).is_none());
        phase.store(1, SeqCst);
        let t0 = std::time::Instant::now();
        while phase.load(SeqCst) != 2 {
            assert!(!poller.is_finished(), "the backend thread died");
            assert!(t0.elapsed().as_secs() < 30, "no re-attach");
            std::thread::yield_now();
        }
        let mut res = Vec::new();
        q.finish(&mut |t, r, _| res.push((t, r)));
        assert_eq!(
            res,
            vec![(1, Err(Errno(libc::EIO))), (2, Err(Errno(libc::EIO)))]
        );
        q.submit(&req(Op::Write, 4096, 4096, false), &mut b)
            .unwrap();
        assert_eq!(
            q.submit(&flush, &mut []),
            Ok(()),
            "told: flushes work again"
        );
        let st = disk.stats();
        assert_eq!(stat(&st, "tokens_lost"), 1, "{st}");
        disk.shutdown();
        drop(_stop);
        poller.join().unwrap();
    });
}

/// A clean stop clears the blkdev record *and* the host record: the same hostname
/// registers again at once (before, the host record stayed RUNNING and a restart was
/// refused for the 30 s heartbeat window: "another host with this id is alive").
#[test]
fn clean_stop_lets_the_same_host_start_again_at_once() {
    let now = host::linux::attach::now_ns;
    with_backend_mem("again", true, |host_mem| {
        let opts = CbdOptions::new("again");
        let first = CbdDisk::start(host_mem, &opts, Arc::new(now)).unwrap();
        let id = first.registered().host_id;
        first.shutdown();
        static TRACE: NoTrace = NoTrace;
        let tp = Transport::open(Shm::new(host_mem, &TRACE), false).unwrap();
        let state = tp.host(id).unwrap().map_or(0, |h| h.rec.state);
        assert_eq!(state, device::layout::STATE_NONE, "host record cleared");
        let t = std::time::Instant::now();
        let second = CbdDisk::start(host_mem, &opts, Arc::new(now)).expect("restart at once");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let mut q = second.queue(0).unwrap();
        let mut b = vec![7u8; 4096];
        q.submit(&req(Op::Write, 0, 4096, false), &mut b).unwrap();
        second.shutdown();
        // A failed start leaves nothing alive either: more queues than channels.
        let bad = CbdOptions {
            queues: 3,
            ..CbdOptions::new("again")
        };
        assert!(CbdDisk::start(host_mem, &bad, Arc::new(now)).is_err());
        CbdDisk::start(host_mem, &opts, Arc::new(now))
            .expect("start after a failed start")
            .shutdown();
    });
}

// ---------------------------------------------------------------------------------------
// Backend restarts hidden from the block layer: the host holds what is in flight, replays
// what the dead incarnation lost, and a flush across the restart succeeds once that is
// durable again. `CBDFW_TEST_NO_REPLAY=1` runs the same tests without the replay buffer
// (`--replay-buffer 0`): they must then fail (the flush across the restart gets EIO).

/// Backend thread phases.
const RUN: u8 = 0;
const KILL: u8 = 1;
const DEAD: u8 = 2;
const RESTART: u8 = 3;
const STOP: u8 = 4;

/// A clock both roles read: real time plus a jump the test controls (to pass the v3
/// heartbeat window or the recovery bound without waiting for it).
#[derive(Clone)]
struct TestClock(Arc<AtomicU64>);
impl TestClock {
    fn new() -> Self {
        TestClock(Arc::new(AtomicU64::new(0)))
    }
    fn now(&self) -> u64 {
        host::linux::attach::now_ns() + self.0.load(SeqCst)
    }
    fn jump(&self, ns: u64) {
        self.0.fetch_add(ns, SeqCst);
    }
    fn host(&self) -> host::linux::cbd_disk::Clock {
        let c = self.clone();
        Arc::new(move || c.now())
    }
}

fn replay_opts(tag: &str, queues: u16) -> CbdOptions {
    let mut o = CbdOptions {
        queues,
        depth: 32,
        ..CbdOptions::new(tag)
    };
    if std::env::var_os("CBDFW_TEST_NO_REPLAY").is_some_and(|v| v == "1") {
        o.replay_bytes = 0;
    }
    o
}

/// A backend with 2 channels and a staging buffer whose STANDARD writes stay staged (not
/// durable) for up to a second, `takeover` on: "kill" drops it with its staging (what a
/// SIGKILL of the device VM loses), "restart" starts it again on the same media and
/// channels (re-attach, new incarnation). `f` gets the host mapping and the phase switch;
/// returns the media at the end.
fn with_killable_backend(
    tag: &str,
    clock: &TestClock,
    f: impl FnOnce(&'static MappedMem, &Phase),
) -> VecMedia {
    with_killable_backend_on(tag, clock, VecMedia::new(DISK), |_| {}, f)
}

/// [`with_killable_backend`] on `media`; `power_loss` runs on it at every kill (a media
/// with a volatile cache loses what was not flushed).
fn with_killable_backend_on<D: device::media::Media + Send>(
    tag: &str,
    clock: &TestClock,
    media: D,
    power_loss: fn(&mut D),
    f: impl FnOnce(&'static MappedMem, &Phase),
) -> D {
    use device::durable::DurableConfig;
    let (backend_mem, host_mem) = formatted(tag, clock.now());
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut staging = vec![0u8; 8 << 20];
    let cfg = BackendConfig {
        n_handlers: 2,
        durable: DurableConfig {
            offer: true,
            standard_bound_ns: 1_000_000_000,
            ephemeral_bound_ns: 1_000_000_000,
        },
        takeover: true,
        ..BackendConfig::default()
    };
    let shm = Shm::new(&backend_mem, &NoTrace);
    let mut backend = Backend::start(shm, cfg, media, &mut scratch, clock.now()).expect("start");
    backend.set_staging(&mut staging).unwrap();
    let phase = Phase(std::sync::atomic::AtomicU8::new(RUN), AtomicU64::new(0));
    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let mut b = Some(backend);
            let mut parts = None;
            loop {
                match phase.0.load(SeqCst) {
                    STOP => break,
                    KILL => {
                        parts = b.take().map(|x| x.into_parts_staged());
                        if let Some((m, _, _)) = parts.as_mut() {
                            power_loss(m);
                        }
                        phase.0.store(DEAD, SeqCst);
                    }
                    DEAD => std::thread::sleep(std::time::Duration::from_millis(1)),
                    RESTART => {
                        let (m, sc, stg) = parts.take().expect("killed before");
                        let mut nb =
                            Backend::start(shm, cfg, m, sc, clock.now()).expect("re-attach");
                        nb.set_staging(stg).unwrap();
                        b = Some(nb);
                        phase.1.fetch_add(1, SeqCst);
                        phase.0.store(RUN, SeqCst);
                    }
                    _ => {
                        b.as_mut().unwrap().poll(clock.now()).expect("backend poll");
                        std::thread::yield_now();
                    }
                }
            }
            match b {
                Some(b) => b.into_media(),
                None => parts.unwrap().0,
            }
        });
        struct StopOnDrop<'a>(&'a Phase);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.0.store(STOP, SeqCst);
            }
        }
        {
            let _stop = StopOnDrop(&phase);
            f(host_mem, &phase);
        }
        poller.join().unwrap()
    })
}

/// The backend thread's phase and how many restarts it did.
struct Phase(std::sync::atomic::AtomicU8, AtomicU64);
impl Phase {
    fn kill(&self) {
        self.0.store(KILL, SeqCst);
        let t = std::time::Instant::now();
        while self.0.load(SeqCst) != DEAD {
            assert!(
                t.elapsed().as_secs() < 30,
                "the backend thread did not stop"
            );
            std::thread::yield_now();
        }
    }
    fn restart(&self) {
        let n = self.1.load(SeqCst);
        self.0.store(RESTART, SeqCst);
        let t = std::time::Instant::now();
        while self.1.load(SeqCst) == n {
            assert!(t.elapsed().as_secs() < 30, "no re-attach");
            std::thread::yield_now();
        }
    }
}

/// 8 KiB blocks: block `b`, version `v` (recognisable, different per block and version).
const BLK: usize = 8192;
fn block(b: u64, v: u8) -> Vec<u8> {
    (0..BLK)
        .map(|i| (b as u8).wrapping_mul(31) ^ v.wrapping_mul(7) ^ (i as u8))
        .collect()
}

/// Reads blocks `0..n` through `q` and checks each against `want[b]`.
fn check_blocks(q: &mut dyn host::linux::disk::QueueIo, want: &[Option<u8>]) {
    for (b, v) in want.iter().enumerate() {
        let Some(v) = v else { continue };
        let mut back = vec![0u8; BLK];
        q.submit(
            &req(Op::Read, (b * BLK) as u64, BLK as u32, false),
            &mut back,
        )
        .unwrap_or_else(|e| panic!("read of block {b}: {e}"));
        assert!(back == block(b as u64, *v), "block {b}: not version {v}");
    }
}

fn check_media(media: &VecMedia, want: &[Option<u8>]) {
    check_image(&media.data, want);
}

fn check_image(data: &[u8], want: &[Option<u8>]) {
    for (b, v) in want.iter().enumerate() {
        let Some(v) = v else { continue };
        assert!(
            data[b * BLK..(b + 1) * BLK] == block(b as u64, *v)[..],
            "media block {b}: not version {v} (not durable)"
        );
    }
}

/// The backend dies with (a) writes completed but only staged (unconfirmed), (b) writes
/// in flight on both channels, one overwriting a completed one, a FUA write, and (c) two
/// flushes in flight; it restarts (takeover, new incarnation). Nothing fails: every
/// request completes 0, both flushes included; reads see every write; and after one more
/// flush the media holds them all (replayed, durable — not only served from the buffer).
#[test]
fn a_backend_restart_is_invisible_writes_flushes_and_reads_all_succeed() {
    let clock = TestClock::new();
    let mut want = vec![None; 24];
    let media = with_killable_backend("invisible", &clock, |host_mem, phase| {
        let opts = replay_opts("invisible", 2);
        let disk = CbdDisk::start(host_mem, &opts, clock.host()).unwrap();
        assert!(disk.durable_tokens());
        let mut q0 = disk.queue(0).unwrap();
        let mut q1 = disk.queue(1).unwrap();
        // (a) completed, staged.
        for b in 0..8u64 {
            let q = if b % 2 == 0 { &mut q0 } else { &mut q1 };
            let mut d = block(b, 1);
            q.submit(&req(Op::Write, b * BLK as u64, BLK as u32, false), &mut d)
                .unwrap();
            want[b as usize] = Some(1);
        }
        let st = disk.stats();
        assert!(stat(&st, "tokens_outstanding") > 0, "writes staged: {st}");
        // (b) + (c) in flight.
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        for b in 8..16u64 {
            bufs.push(block(b, 1));
            want[b as usize] = Some(1);
        }
        for (i, d) in bufs.iter_mut().enumerate() {
            let b = 8 + i as u64;
            let r = req(Op::Write, b * BLK as u64, BLK as u32, i == 7);
            assert!(q0.start(i as u16, &r, d).is_none());
        }
        let flush = req(Op::Flush, 0, 0, false);
        assert!(q1.start(100, &flush, &mut []).is_none());
        let mut over = block(2, 2);
        want[2] = Some(2);
        assert!(
            q1.start(
                101,
                &req(Op::Write, 2 * BLK as u64, BLK as u32, false),
                &mut over
            )
            .is_none()
        );
        assert!(q1.start(102, &flush, &mut []).is_none());
        phase.kill();
        std::thread::sleep(std::time::Duration::from_millis(200));
        phase.restart();
        let mut res = Vec::new();
        q0.finish(&mut |t, r, _| res.push((t, r)));
        q1.finish(&mut |t, r, _| res.push((t, r)));
        res.sort_by_key(|&(t, _)| t);
        let tags: Vec<u16> = (0..8).chain([100, 101, 102]).collect();
        assert_eq!(res.iter().map(|&(t, _)| t).collect::<Vec<_>>(), tags);
        for (t, r) in &res {
            assert_eq!(*r, Ok(()), "request {t} failed across the restart");
        }
        check_blocks(&mut *q0, &want);
        check_blocks(&mut *q1, &want);
        q0.submit(&flush, &mut [])
            .expect("a flush after the restart");
        let st = disk.stats();
        assert!(stat(&st, "replayed_writes") > 0, "{st}");
        assert_eq!(stat(&st, "errors"), 0, "{st}");
        assert_eq!(stat(&st, "tokens_outstanding"), 0, "{st}");
        disk.shutdown();
    });
    check_media(&media, &want);
}

/// Restarts that take longer than the v3 heartbeat window (30 s; the clock jumps 45 s
/// while the backend is dead, so its records look dead): the requests are held, not
/// failed, and complete after the backend's return, the flush included.
#[test]
fn a_restart_slower_than_the_heartbeat_window_is_held_not_failed() {
    let clock = TestClock::new();
    let mut want = vec![None; 8];
    let media = with_killable_backend("slow", &clock, |host_mem, phase| {
        let opts = replay_opts("slow", 2);
        let disk = CbdDisk::start(host_mem, &opts, clock.host()).unwrap();
        let mut q = disk.queue(1).unwrap();
        for b in 0..4u64 {
            let mut d = block(b, 3);
            q.submit(&req(Op::Write, b * BLK as u64, BLK as u32, false), &mut d)
                .unwrap();
            want[b as usize] = Some(3);
        }
        phase.kill();
        let mut d = block(5, 4);
        want[5] = Some(4);
        assert!(
            q.start(
                1,
                &req(Op::Write, 5 * BLK as u64, BLK as u32, false),
                &mut d
            )
            .is_none()
        );
        assert!(q.start(2, &req(Op::Flush, 0, 0, false), &mut []).is_none());
        clock.jump(45_000_000_000);
        // Let the host see the backend as dead (its heartbeat thread looks every 200 ms).
        std::thread::sleep(std::time::Duration::from_millis(500));
        phase.restart();
        let mut res = Vec::new();
        q.finish(&mut |t, r, _| res.push((t, r)));
        res.sort_by_key(|&(t, _)| t);
        assert_eq!(res, vec![(1, Ok(())), (2, Ok(()))]);
        check_blocks(&mut *q, &want);
        let st = disk.stats();
        assert_eq!(stat(&st, "outages"), 1, "the outage was seen: {st}");
        assert_eq!(stat(&st, "errors"), 0, "{st}");
        disk.shutdown();
    });
    check_media(&media, &want);
}

/// The bound: a backend that never returns. Requests are held until `--recover-timeout`
/// (default 120 s; the clock jumps past it), then fail with EIO; a new request fails too.
#[test]
fn a_backend_that_never_returns_fails_io_with_eio_after_the_bound() {
    let clock = TestClock::new();
    with_killable_backend("never", &clock, |host_mem, phase| {
        let opts = replay_opts("never", 1);
        assert_eq!(
            opts.recover_timeout_ns,
            host::linux::cbd_disk::DEFAULT_RECOVER_TIMEOUT_NS
        );
        let disk = CbdDisk::start(host_mem, &opts, clock.host()).unwrap();
        let mut q = disk.queue(0).unwrap();
        let mut d = block(0, 1);
        q.submit(&req(Op::Write, 0, BLK as u32, false), &mut d)
            .unwrap();
        phase.kill();
        assert!(
            q.start(1, &req(Op::Write, BLK as u64, BLK as u32, false), &mut d)
                .is_none()
        );
        assert!(q.start(2, &req(Op::Flush, 0, 0, false), &mut []).is_none());
        clock.jump(opts.recover_timeout_ns + 11_000_000_000);
        let mut res = Vec::new();
        q.finish(&mut |t, r, _| res.push((t, r)));
        res.sort_by_key(|&(t, _)| t);
        assert_eq!(
            res,
            vec![(1, Err(Errno(libc::EIO))), (2, Err(Errno(libc::EIO)))]
        );
        let mut back = vec![0u8; BLK];
        assert_eq!(
            q.submit(&req(Op::Read, 0, BLK as u32, false), &mut back),
            Err(Errno(libc::EIO))
        );
        disk.shutdown();
    });
}

/// Two queue threads write versioned blocks (every 8th write followed by a flush) while
/// the backend is killed and restarted three times. No request fails; at the end every
/// block reads back as the last version whose write completed, and after a flush the
/// media holds it.
#[test]
fn writers_on_two_queues_see_no_error_across_three_restarts() {
    let media = writers_across_restarts("writers", VecMedia::new(DISK), |_| {});
    let want = media.1;
    check_media(&media.0, &want);
}

/// The same on a media with a volatile write cache that a kill empties (`CrashMedia`,
/// unflushed blocks keep any version written since their last flush, or none): the
/// device loses its staging *and* what it wrote back without a flush. Checked on a
/// power-loss image taken after the last flushes.
#[test]
fn writers_across_restarts_that_also_lose_the_disk_cache() {
    let (mut media, want) =
        writers_across_restarts("writerscache", CrashMedia::new(DISK, 11), |m| {
            m.crash();
        });
    check_image(&media.crash(), &want);
}

type Want = Vec<Option<u8>>;

fn writers_across_restarts<D: device::media::Media + Send>(
    tag: &str,
    media: D,
    power_loss: fn(&mut D),
) -> (D, Want) {
    const BLOCKS: u64 = 64;
    let clock = TestClock::new();
    let want = Mutex::new(vec![None; BLOCKS as usize]);
    let media = with_killable_backend_on(tag, &clock, media, power_loss, |host_mem, phase| {
        let opts = replay_opts(tag, 2);
        let disk = CbdDisk::start(host_mem, &opts, clock.host()).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..2u16)
                .map(|qi| {
                    let (disk, want, done) = (&disk, &want, &done);
                    s.spawn(move || {
                        let mut q = disk.queue(qi).unwrap();
                        let mut n = 0u64;
                        // Each queue owns the blocks of its parity (no two writes of one block
                        // in flight at once).
                        while !done.load(SeqCst) || n < 64 {
                            let b = (n * 7 + qi as u64) % BLOCKS / 2 * 2 + qi as u64;
                            let v = (n / 4 % 250) as u8 + 1;
                            let mut d = block(b, v);
                            let r = req(Op::Write, b * BLK as u64, BLK as u32, n % 16 == 5);
                            q.submit(&r, &mut d)
                                .unwrap_or_else(|e| panic!("queue {qi}: write {n}: {e}"));
                            want.lock().unwrap()[b as usize] = Some(v);
                            if n % 8 == 7 {
                                q.submit(&req(Op::Flush, 0, 0, false), &mut [])
                                    .unwrap_or_else(|e| panic!("queue {qi}: flush {n}: {e}"));
                            }
                            n += 1;
                        }
                        q.submit(&req(Op::Flush, 0, 0, false), &mut [])
                            .unwrap_or_else(|e| panic!("queue {qi}: last flush: {e}"));
                        // Its own blocks (the others' are the other writer's) read back.
                        let mine: Vec<Option<u8>> = want
                            .lock()
                            .unwrap()
                            .iter()
                            .enumerate()
                            .map(|(b, v)| v.filter(|_| b % 2 == qi as usize))
                            .collect();
                        check_blocks(&mut *q, &mine);
                        n
                    })
                })
                .collect();
            for _ in 0..3 {
                std::thread::sleep(std::time::Duration::from_millis(150));
                phase.kill();
                std::thread::sleep(std::time::Duration::from_millis(100));
                phase.restart();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            done.store(true, SeqCst);
            for w in writers {
                assert!(w.join().unwrap() >= 64);
            }
        });
        let st = disk.stats();
        assert_eq!(stat(&st, "errors"), 0, "{st}");
        assert!(stat(&st, "replayed_writes") > 0, "{st}");
        eprintln!("writers across three restarts: {st}");
        disk.shutdown();
    });
    (media, want.into_inner().unwrap())
}

/// A replay buffer smaller than what is written: writes wait for durability instead of
/// going unprotected, and a restart in the middle still loses nothing (the held bytes
/// never exceed the buffer).
#[test]
fn a_full_replay_buffer_makes_writes_wait_and_still_covers_a_restart() {
    let clock = TestClock::new();
    let mut want = vec![None; 48];
    let media = with_killable_backend("smallbuf", &clock, |host_mem, phase| {
        let mut opts = replay_opts("smallbuf", 2);
        if opts.replay_bytes > 0 {
            opts.replay_bytes = 4 * BLK;
        }
        let disk = CbdDisk::start(host_mem, &opts, clock.host()).unwrap();
        let mut q = disk.queue(0).unwrap();
        let mut max_held = 0;
        for b in 0..48u64 {
            let mut d = block(b, 9);
            q.submit(&req(Op::Write, b * BLK as u64, BLK as u32, false), &mut d)
                .unwrap();
            want[b as usize] = Some(9);
            max_held = max_held.max(stat(&disk.stats(), "replay_held_bytes"));
            if b == 20 {
                phase.kill();
                phase.restart();
            }
        }
        q.submit(&req(Op::Flush, 0, 0, false), &mut [])
            .expect("flush across the restart");
        assert!(max_held <= 4 * BLK as u64, "held {max_held} bytes");
        check_blocks(&mut *q, &want);
        disk.shutdown();
    });
    check_media(&media, &want);
}

/// `--plain-v3`: no incarnation, no replay buffer. What it hides: the outage — a write
/// in flight across a restart slower than the heartbeat window is held and completes.
/// What it cannot: the device fails CBD FLUSHes after the re-attach until the host was
/// told, so the flush across the restart returns EIO; a later one succeeds.
#[test]
fn plain_v3_holds_io_through_a_restart_but_the_flush_across_it_fails() {
    let clock = TestClock::new();
    with_killable_backend("plainrestart", &clock, |host_mem, phase| {
        let opts = CbdOptions {
            plain_v3: true,
            ..replay_opts("plainrestart", 1)
        };
        let disk = CbdDisk::start(host_mem, &opts, clock.host()).unwrap();
        assert!(!disk.durable_tokens());
        let mut q = disk.queue(0).unwrap();
        let mut d = block(0, 1);
        q.submit(&req(Op::Write, 0, BLK as u32, false), &mut d)
            .unwrap();
        phase.kill();
        let mut d2 = block(1, 1);
        assert!(
            q.start(1, &req(Op::Write, BLK as u64, BLK as u32, false), &mut d2)
                .is_none()
        );
        assert!(q.start(2, &req(Op::Flush, 0, 0, false), &mut []).is_none());
        clock.jump(45_000_000_000);
        std::thread::sleep(std::time::Duration::from_millis(500));
        phase.restart();
        let mut res = Vec::new();
        q.finish(&mut |t, r, _| res.push((t, r)));
        res.sort_by_key(|&(t, _)| t);
        assert_eq!(res, vec![(1, Ok(())), (2, Err(Errno(libc::EIO)))]);
        let ok = (0..4).any(|_| q.submit(&req(Op::Flush, 0, 0, false), &mut []).is_ok());
        assert!(ok, "a flush succeeds again once the host was told");
        disk.shutdown();
    });
}

/// What the paired VM run does after fio: a restart replayed lost writes, then `mkfs.ext4`
/// discards the whole disk, writes its metadata (some blocks over replayed ones, some with
/// WRITE_ZEROES) and flushes; `mount` reads it back. Every read, on either queue, must
/// return what was written after the replay (the new data, zeroes where discarded): while
/// the pieces are still held, after a second restart that replays them (a DISCARD that left
/// older pieces under it would replay the old data here), after the flush, and on the media.
#[test]
fn discard_and_writes_after_a_replay_read_back_new_data_not_replayed_data() {
    let clock = TestClock::new();
    const N: u64 = 24;
    let mut want = vec![None; N as usize];
    let media = with_killable_backend("afterreplay", &clock, |host_mem, phase| {
        let opts = replay_opts("afterreplay", 2);
        let disk = CbdDisk::start(host_mem, &opts, clock.host()).unwrap();
        let mut q0 = disk.queue(0).unwrap();
        let mut q1 = disk.queue(1).unwrap();
        // Completed but only staged on both channels, and more in flight at the kill.
        for b in 0..N / 2 {
            let q = if b.is_multiple_of(2) {
                &mut q0
            } else {
                &mut q1
            };
            let mut d = block(b, 1);
            q.submit(&req(Op::Write, b * BLK as u64, BLK as u32, false), &mut d)
                .unwrap();
        }
        let mut bufs: Vec<Vec<u8>> = (N / 2..N).map(|b| block(b, 1)).collect();
        for (i, d) in bufs.iter_mut().enumerate() {
            let b = N / 2 + i as u64;
            let q = if b.is_multiple_of(2) {
                &mut q0
            } else {
                &mut q1
            };
            let r = req(Op::Write, b * BLK as u64, BLK as u32, false);
            assert!(q.start(i as u16, &r, d).is_none());
        }
        phase.kill();
        std::thread::sleep(std::time::Duration::from_millis(100));
        phase.restart();
        let mut res = Vec::new();
        q0.finish(&mut |t, r, _| res.push((t, r)));
        q1.finish(&mut |t, r, _| res.push((t, r)));
        assert!(res.iter().all(|(_, r)| r.is_ok()), "{res:?}");
        // "mkfs": discard everything (one request per 1 MiB as the block layer splits it,
        // alternating queues), then new data on some blocks, zeroes on others.
        let total = N * BLK as u64;
        let mut off = 0;
        let mut i = 0u32;
        while off < total {
            let len = (total - off).min(1 << 20) as u32;
            let q = if i.is_multiple_of(2) {
                &mut q1
            } else {
                &mut q0
            };
            q.submit(&req(Op::Discard, off, len, false), &mut [])
                .expect("discard after the replay");
            off += len as u64;
            i += 1;
        }
        for b in 0..N {
            want[b as usize] = Some(None);
        }
        for b in (0..N).step_by(3) {
            let q = if b.is_multiple_of(2) {
                &mut q1
            } else {
                &mut q0
            };
            let mut d = block(b, 3);
            q.submit(&req(Op::Write, b * BLK as u64, BLK as u32, false), &mut d)
                .unwrap();
            want[b as usize] = Some(Some(3));
        }
        for b in (1..N).step_by(3) {
            let q = if b.is_multiple_of(2) {
                &mut q0
            } else {
                &mut q1
            };
            q.submit(
                &req(Op::WriteZeroes, b * BLK as u64, BLK as u32, false),
                &mut [],
            )
            .unwrap();
        }
        let check = |q: &mut dyn host::linux::disk::QueueIo, when: &str| {
            for (b, v) in want.iter().enumerate() {
                let mut back = vec![0xffu8; BLK];
                q.submit(
                    &req(Op::Read, (b * BLK) as u64, BLK as u32, false),
                    &mut back,
                )
                .unwrap_or_else(|e| panic!("read of block {b}: {e}"));
                let exp = match v.unwrap() {
                    Some(v) => block(b as u64, v),
                    None => vec![0; BLK],
                };
                assert!(
                    back == exp,
                    "{when}: block {b} reads stale data (want {v:?})"
                );
            }
        };
        check(&mut *q0, "before the flush, queue 0");
        check(&mut *q1, "before the flush, queue 1");
        // A second restart before anything is durable: what the buffer replays now must be
        // the new filesystem, not the first run's data under it.
        phase.kill();
        std::thread::sleep(std::time::Duration::from_millis(100));
        phase.restart();
        check(&mut *q1, "after the second restart, queue 1");
        check(&mut *q0, "after the second restart, queue 0");
        q0.submit(&req(Op::Flush, 0, 0, false), &mut [])
            .expect("flush");
        check(&mut *q0, "after the flush, queue 0");
        check(&mut *q1, "after the flush, queue 1");
        let st = disk.stats();
        assert!(stat(&st, "replayed_writes") > 0, "{st}");
        assert_eq!(stat(&st, "errors"), 0, "{st}");
        disk.shutdown();
    });
    for (b, v) in want.iter().enumerate() {
        let exp = match v.unwrap() {
            Some(v) => block(b as u64, v),
            None => vec![0; BLK],
        };
        assert!(
            media.data[b * BLK..(b + 1) * BLK] == exp[..],
            "media block {b}: stale (want {v:?})"
        );
    }
}

/// A cbd-host killed mid-I/O, as the transport sees it: its host and blkdev records
/// `RUNNING` with a fresh heartbeat, its channels RESET, a WRITE submitted and never
/// waited for, and nobody left to heartbeat, complete or stop anything.
fn leave_a_killed_host(host_mem: &'static MappedMem, name: &'static str) -> (u32, u32) {
    use host::engine::{Host, HostConfig, Request};
    let now = host::linux::attach::now_ns;
    let cfg = HostConfig {
        hostname: name,
        ..HostConfig::default()
    };
    let host = Host::register(Shm::new(host_mem, &NoTrace), cfg, now()).unwrap();
    let mut dev = host.dev_start(0, 2, now()).unwrap();
    while !dev.poll_ready(now()).unwrap() {
        std::thread::yield_now();
    }
    let w = Request {
        op: device::layout::op::WRITE,
        offset: 1 << 20,
        len: 4096,
    };
    dev.queues[1].submit(w, &[0xee; 4096]).unwrap();
    (host.host_id, dev.blkdev_id)
}

fn record_states(host_mem: &'static MappedMem, host_id: u32, blkdev_id: u32) -> (u8, u8) {
    let tp = Transport::open(Shm::new(host_mem, &NoTrace), false).unwrap();
    (
        tp.host(host_id).unwrap().map_or(0, |h| h.rec.state),
        tp.blkdev(blkdev_id).unwrap().map_or(0, |d| d.rec.state),
    )
}

#[test]
fn a_killed_host_blocks_its_successor_without_proof() {
    let now = host::linux::attach::now_ns;
    with_backend_mem("killed-noproof", true, |host_mem| {
        let (hid, bid) = leave_a_killed_host(host_mem, "phoenix");
        let e = CbdDisk::start(host_mem, &CbdOptions::new("phoenix"), Arc::new(now))
            .err()
            .expect("refused while the dead host's heartbeat is fresh");
        assert!(
            e.to_string().contains("another host with this id is alive"),
            "{e}"
        );
        let running = device::layout::STATE_RUNNING;
        assert_eq!(record_states(host_mem, hid, bid), (running, running));
    });
}

#[test]
fn the_same_host_reclaims_a_killed_predecessors_records_at_once() {
    use device::layout::{STATE_NONE, STATE_RUNNING};
    let now = host::linux::attach::now_ns;
    with_backend_mem("killed-reclaim", true, |host_mem| {
        let (hid, bid) = leave_a_killed_host(host_mem, "phoenix");
        let opts = CbdOptions {
            queues: 2,
            reclaim: true,
            ..CbdOptions::new("phoenix")
        };
        let disk = CbdDisk::start(host_mem, &opts, Arc::new(now)).expect("reclaimed at once");
        let me = disk.registered().host_id;
        let tp = Transport::open(Shm::new(host_mem, &NoTrace), false).unwrap();
        let live_blkdevs: Vec<(u32, u32)> = (0..tp.info.blkdev_num)
            .filter_map(|i| tp.blkdev(i).unwrap().map(|d| (i, d.rec)))
            .filter(|(_, d)| d.state == STATE_RUNNING)
            .map(|(i, d)| (i, d.host_id))
            .collect();
        assert_eq!(
            live_blkdevs.len(),
            1,
            "only the new blkdev runs: {live_blkdevs:?}"
        );
        assert_eq!(live_blkdevs[0].1, me, "and it is the new program's");
        let name = device::transport::host_name("phoenix");
        let named: Vec<u32> = (0..tp.info.host_num)
            .filter(|&i| {
                tp.host(i)
                    .unwrap()
                    .is_some_and(|h| h.rec.state != STATE_NONE && h.rec.hostname == name)
            })
            .collect();
        assert_eq!(named, vec![me], "one host record of this name");
        if me != hid {
            assert_eq!(record_states(host_mem, hid, bid).0, STATE_NONE);
        }
        // Another host name's live record (the device's own, `cbdfw`) is left alone.
        let dev_host = tp.backend(0).unwrap().unwrap().rec.host_id;
        assert_ne!(dev_host, me);
        let dev_state = tp.host(dev_host).unwrap().map_or(0, |h| h.rec.state);
        assert_eq!(
            dev_state, STATE_RUNNING,
            "another host's record is left alone"
        );
        // The channels serve the new program: the dead one's WRITE in flight went with it
        // (under ublk its request is reissued), a new write and read work.
        let mut q = disk.queue(1).unwrap();
        let mut b = vec![0x5au8; 4096];
        q.submit(&req(Op::Write, 1 << 20, 4096, false), &mut b)
            .unwrap();
        let mut r = vec![0u8; 4096];
        q.submit(&req(Op::Read, 1 << 20, 4096, false), &mut r)
            .unwrap();
        assert_eq!(r, b);
        disk.shutdown();
    });
}

#[test]
fn the_host_lock_is_exclusive_and_freed_with_its_holder() {
    use host::linux::attach::{HostLock, Lock};
    let dir = std::env::temp_dir().join(format!("cbd-host-lock-{}", std::process::id()));
    let first = HostLock::acquire(&dir, "guest/1").unwrap();
    let Lock::Held(held) = first else {
        panic!("a fresh lock is free: {first:?}")
    };
    assert!(held.path.ends_with("host-guest_1.lock"), "{:?}", held.path);
    assert!(matches!(
        HostLock::acquire(&dir, "guest/1").unwrap(),
        Lock::Busy(_)
    ));
    assert!(matches!(
        HostLock::acquire(&dir, "other").unwrap(),
        Lock::Held(_)
    ));
    drop(held);
    assert!(matches!(
        HostLock::acquire(&dir, "guest/1").unwrap(),
        Lock::Held(_)
    ));
    std::fs::remove_dir_all(&dir).ok();
}

/// READs and FUA writes started while the backend is held, then served together: the
/// queue's polls take their CEs in batches (the head shows all of them at once). Every tag
/// is reported once; every READ with its own block's data, not another's of the same batch
/// (the data leaves the engine's buffer before the next CE is taken); a FUA write's FLUSH
/// (plain v3) or its CRITICAL write (tokens, with the replay buffer's check of every READ for
/// a restart) is sent from the batch without deadlocking on the channel's lock; the media
/// holds the writes.
fn reads_and_fua_writes_in_one_batch(tag: &str, plain_v3: bool) {
    const READS: u64 = 12;
    const WRITES: u64 = 4;
    let cfg = BackendConfig {
        n_handlers: 2,
        ..BackendConfig::default()
    };
    let ((), media) = with_gated_backend(tag, cfg, |host_mem, g| {
        let opts = CbdOptions {
            queues: 1,
            depth: 32,
            plain_v3,
            ..CbdOptions::new(tag)
        };
        let now = host::linux::attach::now_ns;
        let disk = CbdDisk::start(host_mem, &opts, Arc::new(now)).unwrap();
        assert_eq!(disk.durable_tokens(), !plain_v3);
        let mut q = disk.queue(0).unwrap();
        for b in 0..READS {
            let mut w = block(b, 1);
            q.submit(&req(Op::Write, b * BLK as u64, BLK as u32, false), &mut w)
                .unwrap();
        }
        let held = g.gate.lock().unwrap();
        let before = g.served.load(SeqCst);
        let mut bufs: Vec<Vec<u8>> = (0..READS + WRITES)
            .map(|b| {
                if b < READS {
                    vec![0u8; BLK]
                } else {
                    block(b, 2)
                }
            })
            .collect();
        for (t, buf) in bufs.iter_mut().enumerate() {
            let b = t as u64;
            let r = if b < READS {
                req(Op::Read, b * BLK as u64, BLK as u32, false)
            } else {
                req(Op::Write, b * BLK as u64, BLK as u32, true)
            };
            assert!(q.start(t as u16, &r, buf).is_none(), "tag {t}: in flight");
        }
        drop(held);
        let t0 = std::time::Instant::now();
        while g.served.load(SeqCst) < before + READS + WRITES {
            assert!(t0.elapsed().as_secs() < 30, "the backend took no SEs");
            std::thread::yield_now();
        }
        let mut got = vec![0u32; (READS + WRITES) as usize];
        let mut data = vec![Vec::new(); READS as usize];
        q.finish(&mut |t, r, d| {
            assert_eq!(r, Ok(()), "tag {t}");
            got[t as usize] += 1;
            if (t as u64) < READS {
                data[t as usize] = d.to_vec();
            } else {
                assert!(d.is_empty(), "tag {t}: a write has no data");
            }
        });
        assert_eq!(got, vec![1; (READS + WRITES) as usize], "each tag once");
        for (b, d) in data.iter().enumerate() {
            assert!(*d == block(b as u64, 1), "READ of block {b}: wrong data");
        }
        let st = disk.stats();
        if plain_v3 {
            assert_eq!(stat(&st, "cbd_flushes_sent"), WRITES, "{st}");
        }
        disk.shutdown();
    });
    let want: Vec<Option<u8>> = (0..READS + WRITES)
        .map(|b| Some(if b < READS { 1 } else { 2 }))
        .collect();
    check_media(&media, &want);
}

#[test]
fn reads_and_fua_writes_in_one_batch_plain_v3() {
    reads_and_fua_writes_in_one_batch("batch-v3", true);
}

#[test]
fn reads_and_fua_writes_in_one_batch_with_tokens() {
    reads_and_fua_writes_in_one_batch("batch-tok", false);
}
