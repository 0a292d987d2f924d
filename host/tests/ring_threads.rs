//! Host and backend engines in two threads over one shared mmap'd file:
//! 100 000 random READ/WRITE/FLUSH requests (512 B .. 1 MiB, random offsets,
//! 2 channels) checked against a model disk, with submission-ring, completion-ring
//! and data-area wrap-around, a RESET of one channel mid-stream, and a backend
//! crash (thread stopped with requests in flight) followed by a re-attach.

mod common;
use common::{Model, Rng};
use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{MmapMem, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Host, HostConfig, HostError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

const DISK: usize = 64 << 20;
const TOTAL: u64 = 100_000;

#[test]
fn two_threads_100k_requests_with_wrap_reset_and_reattach() {
    let dir = tempfile::tempdir().unwrap();
    let mem = MmapMem::create(&dir.path().join("transport"), TransportInfo::region_for(2)).unwrap();
    let flags = format_flags(true);
    let t0 = 1_700_000_000_000_000_000u64;
    Transport::format(Shm::new(&mem, &NoTrace), flags, false, t0).unwrap();
    let el = EntryLayout::from_flags(flags);
    let ses_per_ring = el.submr_size() / el.se_size as u64;

    let clock = AtomicU64::new(t0);
    let stop = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    let bcfg = BackendConfig {
        n_handlers: 2,
        ..BackendConfig::default()
    };

    /// Stops the backend thread if the host side panics (else the scope never ends).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    std::thread::scope(|s| {
        let _guard = StopOnDrop(&stop);
        let run_backend = |media: VecMedia| {
            let (mem, clock, stop, started) = (&mem, &clock, &stop, &started);
            s.spawn(move || {
                let mut scratch = vec![0u8; chan::MAX_IO as usize];
                let shm = Shm::new(mem, &NoTrace);
                let mut b = Backend::start(shm, bcfg, media, &mut scratch, clock.load(SeqCst))
                    .expect("backend start");
                started.store(true, SeqCst);
                while !stop.load(SeqCst) {
                    b.poll(clock.load(SeqCst)).expect("backend poll");
                }
                b.into_media()
            })
        };
        let mut backend = Some(run_backend(VecMedia::new(DISK)));
        // CBD v3 has no cross-host lock for slot allocation: management steps must be
        // serialized (docs/protocol.md). Registering the host while the backend thread
        // registers its own host record can hand both the same host slot, so wait.
        while !started.load(SeqCst) {
            assert!(
                !backend.as_ref().unwrap().is_finished(),
                "backend thread ended"
            );
            std::thread::yield_now();
        }

        let shm = Shm::new(&mem, &NoTrace);
        let host = Host::register(
            shm,
            HostConfig {
                hostname: "hostA",
                ..HostConfig::default()
            },
            t0,
        )
        .unwrap();
        let bid = loop {
            match host.find_backend(clock.load(SeqCst)) {
                Ok(id) => break id,
                Err(_) => std::thread::yield_now(),
            }
        };
        let mut dev = host.dev_start(bid, 2, clock.load(SeqCst)).unwrap();
        while !dev.poll_ready(clock.load(SeqCst)).unwrap() {
            std::thread::yield_now();
        }

        let mut rng = Rng(0xC0FFEE);
        let mut model = Model::new(DISK);
        let mut payload = Vec::new();
        let mut read_buf = vec![0u8; chan::MAX_IO as usize];
        let (mut submitted, mut completed) = (0u64, 0u64);
        let mut reset_state = 0; // 0 before, 1 draining q1, 2 resetting, 3 done
        let mut crashed = false;
        let mut pending: Option<(usize, host::engine::Request)> = None;
        let mut idle_rounds = 0u64;
        while completed < TOTAL {
            let now = clock.fetch_add(200_000, SeqCst);
            if backend.as_ref().is_some_and(|b| b.is_finished()) {
                let r = backend.take().unwrap().join();
                panic!(
                    "backend thread ended early: {:?}",
                    r.err().map(|e| e.downcast_ref::<String>().cloned())
                );
            }
            idle_rounds += 1;
            assert!(
                idle_rounds < 20_000_000,
                "no progress: submitted {submitted} completed {completed} {:?} {:?}",
                dev.queues[0].stats,
                dev.queues[1].stats
            );
            dev.heartbeat(now).unwrap();
            // RESET of queue 1 mid-stream (queue 0 keeps running).
            if reset_state == 0 && submitted >= TOTAL / 3 {
                reset_state = 1;
            }
            if reset_state == 1 && dev.queues[1].in_flight() == 0 {
                dev.queues[1].start_reset(now).unwrap();
                reset_state = 2;
            }
            if reset_state == 2 && dev.queues[1].poll_reset(now).unwrap() {
                reset_state = 3;
            }
            // Backend crash with requests in flight, then re-attach after 31 s.
            if !crashed && submitted >= TOTAL * 2 / 3 && dev.queues[0].in_flight() > 4 {
                stop.store(true, SeqCst);
                let media = backend.take().unwrap().join().unwrap();
                stop.store(false, SeqCst);
                clock.fetch_add(31_000_000_000, SeqCst);
                // The host keeps polling while the backend is gone: it consumes what was
                // published before the crash, then nothing more completes.
                for (qi, q) in dev.queues.iter_mut().enumerate() {
                    while let Some(c) = q.poll(&mut read_buf).unwrap() {
                        model.completed(qi, &c, &read_buf).unwrap();
                        completed += 1;
                    }
                    assert_eq!(q.poll(&mut read_buf).unwrap(), None);
                }
                backend = Some(run_backend(media));
                crashed = true;
                model.flush_eio_ok = true;
            }
            // Submit.
            if submitted < TOTAL {
                let (q, req) = pending.take().unwrap_or_else(|| {
                    let q = if rng.chance(920) { 0 } else { 1 };
                    (
                        q,
                        model.random_request(&mut rng, chan::MAX_IO, &mut payload),
                    )
                });
                let blocked = q == 1 && reset_state != 0 && reset_state != 3;
                if blocked {
                    pending = Some((q, req));
                } else {
                    match dev.queues[q].submit(req, &payload) {
                        Ok(tid) => {
                            model.submitted(q, tid, req, &payload);
                            submitted += 1;
                        }
                        Err(HostError::Busy) => pending = Some((q, req)),
                        Err(e) => panic!("submit: {e:?}"),
                    }
                }
            }
            // Complete.
            for (qi, q) in dev.queues.iter_mut().enumerate() {
                while let Some(c) = q.poll(&mut read_buf).unwrap() {
                    model.completed(qi, &c, &read_buf).unwrap();
                    completed += 1;
                    idle_rounds = 0;
                }
            }
        }
        assert!(model.inflight.is_empty());
        let st0 = dev.queues[0].stats;
        let st1 = dev.queues[1].stats;
        assert!(
            st0.se_wraps >= 1 && st0.submitted > ses_per_ring,
            "submission ring wrapped: {st0:?}"
        );
        assert!(
            st0.data_wraps > 10 && st1.data_wraps > 0,
            "data area wrapped: {st0:?} {st1:?}"
        );
        assert!(st0.completed > 1024 * 10, "completion ring wrapped");
        assert_eq!(st1.resets, 2, "dev-start reset + mid-stream reset");
        assert!(crashed);
        stop.store(true, SeqCst);
        let media = backend.take().unwrap().join().unwrap();
        assert!(
            media.data == model.disk,
            "media differs from the model disk"
        );
        assert!(media.flushes > 0);
        dev.stop().unwrap();
    });
}
