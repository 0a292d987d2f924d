//! The host's CBD path end to end, natively: the `device` crate's backend engine polls in one
//! thread over one mapping of a shared file; `CbdDisk` (our `MappedMem` on a second mapping of
//! the same file) serves requests as the ublk queues would. Time is a test-controlled clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use device::backend::{Backend, BackendConfig};
use device::layout::{TransportInfo, chan};
use device::native::VecMedia;
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

        // The backend dies (stops polling, record left behind); 60 s pass. A request must fail
        // with EIO rather than wait forever.
        stop.store(true, SeqCst);
        let media = poller.join().unwrap();
        clock.fetch_add(60_000_000_000, SeqCst);
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
    let now = host::linux::attach::now_ns;
    let (backend_mem, host_mem) = formatted(tag, now());
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut staging = vec![0u8; 1 << 20];
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
        now(),
    )
    .expect("backend start");
    backend.set_staging(&mut staging).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            while !stop.load(SeqCst) {
                backend.poll(now()).expect("backend poll");
                std::thread::yield_now();
            }
            backend.into_media()
        });
        let disk = CbdDisk::start(host_mem, &opts, Arc::new(now)).unwrap();
        f(&disk);
        disk.shutdown();
        stop.store(true, SeqCst);
        poller.join().unwrap()
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
        let mut q = disk.queue(0).unwrap();
        for op in [Op::Discard, Op::WriteZeroes] {
            assert_eq!(
                q.submit(&req(op, 0, 4096, false), &mut []),
                Err(Errno(libc::EOPNOTSUPP))
            );
        }
    });
}
