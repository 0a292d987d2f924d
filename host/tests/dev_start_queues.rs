//! dev-start's queue count against the backend's handlers: 0 means one queue per
//! handler, fewer queues than handlers is allowed (the rest of the channels stay
//! unused), more than the backend serves is refused with `Invalid` and writes no
//! blkdev record. The suites otherwise always ask for exactly `n_handlers` queues. A
//! backend record that names one channel for two queues is refused the same way.

use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Host, HostConfig, HostError, Request};

const T0: u64 = 1_700_000_000_000_000_000;
const HANDLERS: u32 = 3;

/// dev-start with `queues` against a backend of [`HANDLERS`] handlers; on success
/// every queue is made ready and carries one write and its read-back.
fn start(queues: u32) -> Result<usize, HostError> {
    start_edited(queues, |_| {})
}

/// [`start`] with the backend record rewritten by `edit` before dev-start.
fn start_edited(queues: u32, edit: impl FnOnce(&mut BackendInfo)) -> Result<usize, HostError> {
    let mem = HeapMem::new(TransportInfo::region_for(HANDLERS as u64 + 1) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, format_flags(true), false, T0).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let bc = BackendConfig {
        n_handlers: HANDLERS,
        ..BackendConfig::default()
    };
    let mut backend = Backend::start(shm, bc, VecMedia::new(1 << 20), &mut scratch, T0).unwrap();
    let host = Host::register(shm, HostConfig::default(), T0).unwrap();
    let bid = host.find_backend(T0).unwrap();
    let tp = Transport::open(shm, false).unwrap();
    let mut rec = tp.backend(bid).unwrap().unwrap().rec;
    edit(&mut rec);
    tp.write_backend(bid, &rec).unwrap();
    let mut dev = match host.dev_start(bid, queues, T0) {
        Ok(d) => d,
        Err(e) => {
            let running = (0..tp.info.blkdev_num)
                .filter_map(|id| tp.blkdev(id).unwrap())
                .filter(|d| d.rec.state == STATE_RUNNING)
                .count();
            assert_eq!(running, 0, "a refused dev-start left a blkdev record");
            return Err(e);
        }
    };
    let mut now = T0;
    while !dev.poll_ready(now).unwrap() {
        now += 1_000_000;
        backend.poll(now).unwrap();
    }
    let mut buf = vec![0u8; chan::MAX_IO as usize];
    for (i, q) in dev.queues.iter_mut().enumerate() {
        let req = Request {
            op: op::WRITE,
            offset: 4096 * i as u64,
            len: 4096,
        };
        q.submit(req, &[i as u8 + 1; 4096]).unwrap();
        backend.poll(now).unwrap();
        let c = q.poll(&mut buf).unwrap().expect("the write completes");
        assert_eq!(c.result, 0, "queue {i}: write");
        let req = Request {
            op: op::READ,
            ..req
        };
        q.submit(req, &[]).unwrap();
        backend.poll(now).unwrap();
        let c = q.poll(&mut buf).unwrap().expect("the read completes");
        assert_eq!(c.result, 0, "queue {i}: read");
        assert!(buf[..4096].iter().all(|&b| b == i as u8 + 1), "queue {i}");
    }
    Ok(dev.queues.len())
}

#[test]
fn zero_queues_means_one_per_handler() {
    assert_eq!(start(0), Ok(HANDLERS as usize));
}

#[test]
fn fewer_queues_than_handlers_are_accepted() {
    assert_eq!(start(1), Ok(1));
    assert_eq!(start(HANDLERS - 1), Ok(HANDLERS as usize - 1));
    assert_eq!(start(HANDLERS), Ok(HANDLERS as usize));
}

#[test]
fn more_queues_than_handlers_are_refused() {
    assert_eq!(start(HANDLERS + 1), Err(HostError::Invalid));
    assert_eq!(start(u32::MAX), Err(HostError::Invalid));
}

#[test]
fn a_record_naming_one_channel_for_two_queues_is_refused() {
    let dup = |r: &mut BackendInfo| r.handler_channels[2] = r.handler_channels[0];
    assert_eq!(start_edited(0, dup), Err(HostError::Invalid));
    // The first two queues alone have channels of their own.
    assert_eq!(start_edited(2, dup), Ok(2));
}
