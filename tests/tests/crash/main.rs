//! Crash tests: the device kernel, booted in QEMU in backend mode
//! with a virtio-blk disk image as its media and RAM staging, serves a native host
//! (`host::engine`, in this process) over the ivshmem shared file. The host runs a
//! write workload of 1–4 block writes whose every 512-byte sector names (block,
//! version), STANDARD intent (1 in 16 CRITICAL), with a FLUSH or a watermark wait
//! every N writes. A killer thread SIGKILLs QEMU at a random moment of it.
//!
//! Per crash point:
//! 1. the media *image file* is checked: per 4 KiB block, one whole version (every
//!    sector of the same (block, version)), never older than the newest version
//!    the host saw confirmed durable (watermark, DURABLE CE, completed FLUSH), never
//!    newer than the newest submitted;
//! 2. the verifier is fed a copy of that image with one torn block and one block
//!    rolled back behind its confirmed version, and must report both;
//! 3. the device is restarted on the same image and shared file: it re-attaches
//!    to its backend slot (same backend id; `takeover=on` lets it take its own
//!    records over while the dead incarnation's heartbeat still looks alive — the
//!    first 50-point version waited that out by ageing the records from the test;
//!    the engine now does it properly). The requests in flight at the kill
//!    complete; on each channel FLUSHes fail with EIO (at least one) until the host
//!    was told of the loss, then one succeeds (within four);
//! 4. the whole disk is read back through the protocol and checked like the image,
//!    and the image file (after that FLUSH) must equal it byte for byte. What was
//!    read becomes the new confirmed baseline, and the workload goes on.
//!
//! `CBDFW_CRASH_POINTS` (default 50) sets the number of crash points,
//! `CBDFW_CRASH_SEED` the seed. Kill-on-drop for every VM.

// The helpers the kernel-driving tests in boot/tests share.
#[path = "../../../boot/tests/common/mod.rs"]
mod common;
mod driver;
mod model;
mod verifier;
mod vm;

use common::{Rng, now_ns};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use device::durable::Intent;
use device::layout::op;
use device::native::MmapMem;
use host::engine::Request;
use qemu::Firmware;
use qemu::status::KernelStatus;
use qemu::topology;

use driver::Driver;
use model::{Model, Pending};
use verifier::{BLOCK, assert_verifier_catches};
use vm::{SHM_MIB, Setup, spawn_device, wait_served};

/// Media image: 2 MiB = 512 blocks (small, so blocks are rewritten often).
const MEDIA_MIB: u64 = 2;
const NBLOCKS: usize = (MEDIA_MIB as usize) << 20 >> 12;
const QD: usize = 8;

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

#[test]
fn device_vm_crash_points_keep_confirmed_writes() {
    let points = env_u64("CBDFW_CRASH_POINTS", 50);
    crash_run(points, false);
}

/// Two crash points with overlapping writes (two queues, the same 64 blocks, 1–4 blocks
/// each, QD 8) and reads racing them: the per-version model cannot judge that, the
/// recorded history (media read back from the image at each crash) is checked instead.
#[test]
fn device_vm_crash_overlapping_history_checked() {
    let points = env_u64("CBDFW_CRASH_HISTORY_POINTS", 2);
    crash_run(points, true);
}

/// The crash test; `overlap`: writes may overlap (and reads race them), so only the
/// history checker judges the media and what was read.
fn crash_run(points: u64, overlap: bool) {
    let seed = env_u64("CBDFW_CRASH_SEED", now_ns() | 1);
    eprintln!("crash: {points} crash points, CBDFW_CRASH_SEED={seed}, overlap {overlap}");
    let mut rng = Rng(seed);
    // One shared file and one media image per run: the crash tests of this binary run
    // in parallel threads of one process, and QEMU locks the image for writing.
    let run = format!(
        "{}-{}",
        std::process::id(),
        if overlap { "overlap" } else { "points" }
    );
    let s = Setup {
        shm_path: format!("/dev/shm/cbdfw-test-crash-{run}.raw"),
        img: std::env::temp_dir().join(format!("cbdfw-test-crash-{run}.img")),
        kernel: boot::image::kernel_image_for_tests(Firmware::Bios).expect("kernel image"),
    };
    let _ = std::fs::remove_file(&s.shm_path);
    let _ = std::fs::remove_file(&s.img);
    topology::ensure_file(&s.img, MEDIA_MIB << 20).unwrap();
    let bounds = [1_000u64, 10_000, 100_000, 1_000_000];
    let started = Instant::now();

    let mut dev = spawn_device(&s, bounds[rng.below(4) as usize], "device-0");
    let backend_id = wait_served(&mut dev, None);
    let mem = MmapMem::create(s.shm_path.as_ref(), SHM_MIB << 20).unwrap();
    let blk = boot::native_host::attach(&mem, "crash-host", 0).expect("attach the host");
    assert_eq!(blk.backend_id, backend_id, "attached to another backend");
    assert_eq!(blk.queues.len(), 2);
    assert!(
        blk.queues.iter().all(|q| q.durable_tokens()),
        "the device did not offer durability tokens"
    );
    let mut d = Driver {
        blk,
        m: Model::new(),
        read_buf: vec![0u8; 1 << 20],
        rec: history::Recorder::new(history::Header::default()),
        ids: Default::default(),
        marks: Default::default(),
        overlap,
    };
    let mut max_lost_tokens = 0u64;

    for point in 0..points {
        // Run the workload; a killer thread SIGKILLs QEMU after a random delay.
        let delay = Duration::from_micros(match rng.below(4) {
            0 => rng.below(50_000),
            1 => 50_000 + rng.below(250_000),
            _ => 300_000 + rng.below(1_200_000),
        });
        let killed = Arc::new(AtomicBool::new(false));
        let k2 = killed.clone();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            dev.kill();
            k2.store(true, Ordering::SeqCst);
            dev
        });
        let flush_every = 2 + rng.below(31);
        let stop = || killed.load(Ordering::SeqCst);
        d.workload(&mut rng, flush_every, &stop);
        drop(killer.join().unwrap()); // reaped (SIGKILL + wait)
        // CEs and durability lines the device published before it died are facts.
        d.poll_once();
        d.m.on_kill();

        // 1. The media image as the crash left it (the history's read-back).
        let image = std::fs::read(&s.img).unwrap();
        assert_eq!(image.len(), NBLOCKS * BLOCK);
        d.rec.crash();
        d.rec.media(0, &image);
        let vers = if overlap {
            verifier::verify(&image, &d.m.floor, &d.m.last).0
        } else {
            d.m.check(
                &image,
                &format!("crash point {point} (seed {seed}, delay {delay:?}): the image"),
            )
        };
        for (b, &v) in vers.iter().enumerate() {
            d.m.n.lost_completed_blocks += (v < d.m.completed[b]) as u64;
            d.m.n.inflight_landed_blocks += (v > d.m.completed[b]) as u64;
            d.m.n.unconfirmed_survived_blocks += (v > d.m.floor[b]) as u64;
        }
        // 2. The verifier catches a torn and a rolled-back block in this image.
        if !overlap {
            assert_verifier_catches(&image, &d.m.floor, &d.m.last, &mut rng);
        }

        // 3. Restart on the same image and shared file: re-attach.
        // The dead incarnation's heartbeat is < 30 s old; the device restarts with
        // `takeover=on` and takes its own records over at once.
        let bound = bounds[rng.below(4) as usize];
        dev = spawn_device(&s, bound, &format!("device-{}", point + 1));
        let id = wait_served(&mut dev, Some(&mut d.blk));
        assert_eq!(
            id, backend_id,
            "the device did not re-attach to its backend"
        );
        d.drain("in flight at the kill", &dev);
        // FLUSHes fail until the host was told of the loss on that queue: the first one
        // (or a FLUSH in flight at the kill) is the report; a FLUSH submitted before the
        // device saw the host consume it fails too (here the very next one: nothing runs
        // between), and a completion of the dead incarnation consumed late starts over.
        // Then FLUSH succeeds again (docs/durability.md, "After a device crash").
        for q in 0..2 {
            let mut ok = false;
            for _ in 0..4 {
                let before = d.m.n.flushes;
                d.run_one(
                    q,
                    Request {
                        op: op::FLUSH,
                        offset: 0,
                        len: 0,
                    },
                    Pending::Flush(Vec::new()),
                    &dev,
                );
                if d.m.n.flushes > before {
                    ok = true;
                    break;
                }
            }
            assert!(
                ok && d.m.flush_eio[q] >= 1,
                "crash point {point}: queue {q}: {} FLUSHes failed with EIO after the re-attach, \
                 then {}",
                d.m.flush_eio[q],
                if ok {
                    "one succeeded"
                } else {
                    "none succeeded"
                }
            );
        }
        max_lost_tokens = max_lost_tokens.max(d.blk.queues.iter().map(|q| q.tokens.lost).sum());
        assert!(
            d.blk
                .queues
                .iter()
                .all(|q| q.tokens.incarnation as u64 == point + 2),
            "incarnation not bumped at re-attach {}: {:?}",
            point + 1,
            d.blk
                .queues
                .iter()
                .map(|q| q.tokens.incarnation)
                .collect::<Vec<_>>()
        );
        // 4. Read everything back through the protocol.
        let chunk = 64 * 1024;
        for off in (0..NBLOCKS * BLOCK).step_by(chunk) {
            let q = (off / chunk) % 2;
            assert!(
                d.submit(
                    q,
                    Request {
                        op: op::READ,
                        offset: off as u64,
                        len: chunk as u32,
                    },
                    &[],
                    Intent::Standard,
                    Pending::Read(off),
                    &|| false,
                )
                .is_some()
            );
        }
        d.drain("read-back", &dev);
        let readback = std::mem::take(&mut d.m.readback);
        let rvers = if overlap {
            verifier::verify(&readback, &d.m.floor, &d.m.last).0
        } else {
            d.m.check(
                &readback,
                &format!("crash point {point} (seed {seed}): read-back after re-attach"),
            )
        };
        d.m.readback = readback;
        let image = std::fs::read(&s.img).unwrap();
        assert!(
            image == d.m.readback,
            "crash point {point}: after a FLUSH, the image differs from what the device reads"
        );
        // What the device holds now is durable: the new baseline.
        d.m.rebase(rvers);
        eprintln!(
            "crash point {}/{points}: kill after {delay:?}, bound {bound} us, {:?} elapsed",
            point + 1,
            started.elapsed()
        );
    }

    d.blk.stop().expect("blkdev stop");
    dev.send_line("stop").unwrap();
    // Counted from `stop`: the crash points before took far longer than this.
    let out = dev.wait(qemu::pair::DEVICE_STOP_LIMIT);
    assert_eq!(
        out.status,
        KernelStatus::Success,
        "{}\n{}",
        out.status.describe(),
        out.output
    );
    let n = d.m.n;
    eprintln!(
        "crash: {points} crash points in {:?}: {n:?}, tokens lost at re-attach (max cumulative) {max_lost_tokens}",
        started.elapsed()
    );
    assert_eq!(n.violations, 0);
    assert!(n.writes > 0 && n.flushes > 0);
    // The history across every kill and restart: per-block linearizability, channel
    // order, and per crash the image against what was confirmed durable before it.
    let h = std::mem::replace(
        &mut d.rec,
        history::Recorder::new(history::Header::default()),
    )
    .into_history();
    assert_eq!(h.crashes.len() as u64, points);
    match history::check(&h) {
        Ok(s) => eprintln!("crash: history accepted: {s}"),
        Err(e) => {
            let p = std::env::temp_dir().join(format!("cbdfw-crash-history-{seed}.txt"));
            let _ = std::fs::write(&p, history::to_text(&h));
            panic!(
                "crash (seed {seed}): the history checker rejects the run ({}):\n{e}",
                p.display()
            );
        }
    }
}
