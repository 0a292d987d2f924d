//! Every protocol step emits a structured trace event.

use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{HeapMem, RecordingTracer, VecMedia};
use device::shm::Shm;
use device::trace::{CopyDir, Pointer, RecordKind, TraceEvent as E};
use device::transport::{Transport, format_flags};
use host::engine::{Host, HostConfig, Request};

#[test]
fn one_write_and_read_are_fully_traced() {
    let t = RecordingTracer::default();
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let shm = Shm::new(&mem, &t);
    Transport::format(shm, format_flags(true), false, 1).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let mut b = Backend::start(
        shm,
        BackendConfig::default(),
        VecMedia::new(1 << 20),
        &mut scratch,
        1,
    )
    .unwrap();
    let host = Host::register(shm, HostConfig::default(), 1).unwrap();
    let mut dev = host.dev_start(host.find_backend(1).unwrap(), 1, 1).unwrap();
    b.poll(2).unwrap();
    assert!(dev.poll_ready(2).unwrap());
    let ev = t.take();
    assert!(
        ev.iter()
            .any(|e| matches!(e, E::ChannelProvisioned { chan: 0, .. }))
    );
    assert!(ev.iter().any(|e| matches!(
        e,
        E::RecordWritten {
            kind: RecordKind::Backend,
            ..
        }
    )));
    assert!(ev.iter().any(|e| matches!(
        e,
        E::MgmtCommand {
            op: MGMT_OP_RESET,
            ..
        }
    )));
    assert!(ev.iter().any(|e| matches!(
        e,
        E::MgmtAnswered {
            ret: MGMT_RET_OK,
            ..
        }
    )));

    let q = &mut dev.queues[0];
    let data = vec![7u8; 8192];
    let w = q
        .submit(
            Request {
                op: op::WRITE,
                offset: 4096,
                len: 8192,
            },
            &data,
        )
        .unwrap();
    let r = q
        .submit(
            Request {
                op: op::READ,
                offset: 4096,
                len: 8192,
            },
            &[],
        )
        .unwrap();
    b.poll(3).unwrap();
    let mut buf = vec![0u8; 8192];
    assert_eq!(q.poll(&mut buf).unwrap().unwrap().req_tid, w);
    assert_eq!(q.poll(&mut buf).unwrap().unwrap().req_tid, r);
    assert_eq!(buf, data);
    let ev = t.take();
    let want: [fn(&E) -> bool; 9] = [
        |e| {
            matches!(
                e,
                E::SePosted {
                    req_tid: 0,
                    op: op::WRITE,
                    ..
                }
            )
        },
        |e| {
            matches!(
                e,
                E::PointerPublished {
                    which: Pointer::SubmrHead,
                    ..
                }
            )
        },
        |e| matches!(e, E::SeSeen { req_tid: 0, .. }),
        |e| {
            matches!(
                e,
                E::DataCopied {
                    dir: CopyDir::FromShared,
                    len: 8192,
                    ..
                }
            )
        },
        |e| {
            matches!(
                e,
                E::MediaOp {
                    op: op::WRITE,
                    offset: 4096,
                    len: 8192,
                    result: 0,
                    ..
                }
            )
        },
        |e| {
            matches!(
                e,
                E::CePosted {
                    req_tid: 0,
                    result: 0,
                    ..
                }
            )
        },
        |e| {
            matches!(
                e,
                E::PointerPublished {
                    which: Pointer::ComprHead,
                    ..
                }
            )
        },
        |e| matches!(e, E::CeConsumed { req_tid: 1, .. }),
        |e| {
            matches!(
                e,
                E::PointerPublished {
                    which: Pointer::ComprTail,
                    ..
                }
            )
        },
    ];
    // In this order.
    let mut i = 0;
    for e in &ev {
        if i < want.len() && want[i](e) {
            i += 1;
        }
    }
    assert_eq!(i, want.len(), "missing or out-of-order events: {ev:#?}");
    // Heartbeat after 5 s.
    b.poll(1 + HB_INTERVAL_NS).unwrap();
    assert!(t.take().iter().any(|e| matches!(
        e,
        E::Heartbeat {
            kind: RecordKind::Backend,
            ..
        }
    )));
}
