//! A hostile device's `compr_head` far ahead, then an honest device: the host engine
//! takes completions in batches, but reads the head again at every poll, so what the
//! honest device completes is reported and nothing past its head is taken.
//!
//! The device is played by hand (as the fuzz target `host_engine` plays it): the real
//! backend only provisions the channel and answers the RESET, then is never polled again.

use device::backend::{Backend, BackendConfig};
use device::channel::*;
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};
use host::engine::{Completion, HostConfig, HostError, HostQueue, Request};

const DISK: usize = 1 << 20;
const T0: u64 = 1_700_000_000_000_000_000;
const FLAGS: u16 = format_flags(true);

/// The hand-played device of one channel.
struct Dev<'m> {
    shm: Shm<'m, HeapMem>,
    g: ChannelGeom,
    nc: bool,
}

impl Dev<'_> {
    /// A sealed CE for `tid` at `slot` (OK, no data).
    fn post(&self, slot: u32, tid: u64) {
        let mut b = [0u8; MAX_CE_SIZE];
        let ce = Ce {
            req_tid: tid,
            ..Ce::default()
        };
        self.g.el.encode_ce(&ce, &mut b);
        self.g.el.seal_ce(&mut b);
        self.shm
            .write(self.g.ce(slot), &b[..self.g.el.ce_size as usize])
            .unwrap();
    }
    fn publish_head(&self, head: u32) {
        if self.nc {
            let epoch = read_host_line(self.shm, &self.g, true)
                .unwrap()
                .expect("host line")
                .epoch;
            let line = DevLine {
                ack_epoch: epoch,
                compr_head: head,
            };
            publish_line(self.shm, self.g.dev_line, &line.encode(), true).unwrap();
        } else {
            self.shm
                .store_u32(self.g.ctrl(ctrl::COMPR_HEAD), head)
                .unwrap();
        }
    }
    /// The host's published `compr_tail`.
    fn published_tail(&self) -> u32 {
        if self.nc {
            read_host_line(self.shm, &self.g, true)
                .unwrap()
                .expect("host line")
                .compr_tail
        } else {
            self.shm.load_u32(self.g.ctrl(ctrl::COMPR_TAIL)).unwrap()
        }
    }
    /// The CE slot `k` slots after `pos`.
    fn ahead(&self, pos: u32, k: u32) -> u32 {
        (0..k).fold(pos, |p, _| self.g.next_ce(p))
    }
}

fn write(i: u64) -> Request {
    Request {
        op: op::WRITE,
        offset: i * 4096,
        len: 4096,
    }
}

/// One poll: in a batch (`poll_batch_at`) or of one CE (`poll_at`); how many it took.
fn poll(
    q: &mut HostQueue<'_, HeapMem>,
    batch: bool,
    now: u64,
    got: &mut Vec<Completion>,
) -> Result<usize, HostError> {
    let mut buf = vec![0u8; 4096];
    if batch {
        q.poll_batch_at(&mut buf, now, &mut |c, _| got.push(*c))
    } else {
        let c = q.poll_at(&mut buf, now)?;
        got.extend(c);
        Ok(c.is_some() as usize)
    }
}

/// Polls until a poll takes nothing; the completions and the errors seen.
fn drain(
    q: &mut HostQueue<'_, HeapMem>,
    batch: bool,
    now: u64,
) -> (Vec<Completion>, Vec<HostError>) {
    let (mut got, mut errs) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        match poll(q, batch, now, &mut got) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => errs.push(e),
        }
    }
    (got, errs)
}

fn tids(c: &[Completion]) -> Vec<u64> {
    c.iter().map(|c| c.req_tid).collect()
}

#[test]
fn an_honest_device_after_a_head_far_ahead_has_every_completion_reported() {
    for (nc, batch) in [(true, true), (false, true), (true, false), (false, false)] {
        let mode = match (nc, batch) {
            (true, true) => "non-coherent, in batches",
            (false, true) => "v3, in batches",
            (true, false) => "non-coherent, one CE per poll",
            (false, false) => "v3, one CE per poll",
        };
        let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
        let shm = Shm::new(&mem, &NoTrace);
        Transport::format(shm, FLAGS, false, T0).unwrap();
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let bc = BackendConfig {
            noncoherent: nc,
            ..BackendConfig::default()
        };
        let mut backend = Backend::start(shm, bc, VecMedia::new(DISK), &mut scratch, T0).unwrap();
        let seg = backend.channel_segments().next().unwrap();
        let base = Transport::open(shm, false)
            .unwrap()
            .channel_base(seg)
            .unwrap();
        let dev = Dev {
            shm,
            g: ChannelGeom::new(base, FLAGS, false),
            nc,
        };
        let hc = HostConfig {
            hostname: "hostA",
            noncoherent: nc,
            nc_retries: 4,
            durable_tokens: false,
            ..HostConfig::default()
        };
        let host = host::engine::Host::register(shm, hc, T0).unwrap();
        let bid = host.find_backend(T0).unwrap();
        let mut blk = host.dev_start(bid, 1, T0).unwrap();
        let mut now = T0;
        while !blk.poll_ready(now).unwrap() {
            now += 1_000_000;
            backend.poll(now).unwrap();
        }
        let q = &mut blk.queues[0];
        let data = [0x3Cu8; 4096];
        let t: Vec<u64> = (0..4).map(|i| q.submit(write(i), &data).unwrap()).collect();

        // Hostile: the CE of the first request, and a head one slot short of a full ring.
        dev.post(0, t[0]);
        let far = dev.ahead(0, dev.g.compr_size().div_ceil(dev.g.el.ce_size) - 1);
        dev.publish_head(far);
        let mut got = Vec::new();
        let mut tail = 0;
        for _ in 0..3 {
            match poll(q, batch, now, &mut got) {
                Ok(n) => tail = dev.ahead(tail, n as u32),
                // v3 skips a CE that does not verify; non-coherent mode waits for it.
                Err(HostError::BadCompletion { .. }) if !nc => tail = dev.g.next_ce(tail),
                Err(HostError::Stale) if nc => {}
                Err(e) => panic!("{mode}: hostile head: {e:?}"),
            }
        }
        assert_eq!(tids(&got), [t[0]], "{mode}: only the CE that verifies");

        // Honest from the host's tail on: two of the three requests left, then the third.
        dev.post(tail, t[1]);
        dev.post(dev.ahead(tail, 1), t[2]);
        let head = dev.ahead(tail, 2);
        dev.publish_head(head);
        let (got, mut errs) = drain(q, batch, now);
        let tail_seen = dev.published_tail();
        // Polls while the device has nothing new: nothing is taken past its head.
        let (idle, e) = drain(q, batch, now);
        errs.extend(e);
        dev.post(head, t[3]);
        dev.publish_head(dev.ahead(head, 1));
        let (last, e) = drain(q, batch, now);
        errs.extend(e);
        assert_eq!(tids(&got), [t[1], t[2]], "{mode}: {errs:?}");
        assert!(idle.is_empty(), "{mode}: idle polls took {:?}", tids(&idle));
        assert_eq!(tids(&last), [t[3]], "{mode}: the last honest CE: {errs:?}");
        assert!(errs.is_empty(), "{mode}: honest heads: {errs:?}");
        assert_eq!(
            tail_seen, head,
            "{mode}: the device sees the batch consumed"
        );
        assert_eq!(q.in_flight(), 0, "{mode}");
    }
}
