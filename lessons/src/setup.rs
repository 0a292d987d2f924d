//! What both adversarial harnesses start from: a provisioned transport image, the
//! names of its channels, and the two sides' traced views of the memory.

use crate::adversarial::{FLAGS, T0};
use crate::trace::{Fenced, RegionMap, Tap, TraceLog, Who};
use device::adversary::{Adversary, AgentMem};
use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::media::Media;
use device::native::HeapMem;
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::Transport;
use std::sync::Arc;

/// A formatted transport with a provisioned 2-channel backend (built coherently, then
/// shared copy-on-write by every run), and the names of its channels.
pub(crate) struct Base {
    pub image: Arc<Vec<u8>>,
    pub map: RegionMap,
}

/// Format a transport and provision the backend `cfg` describes on it.
pub(crate) fn provision<D: Media>(cfg: BackendConfig<'static>, media: D) -> Base {
    let mem = HeapMem::new(TransportInfo::region_for(2) as usize);
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, FLAGS, false, T0).expect("format");
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let b = Backend::start(shm, cfg, media, &mut scratch, T0).expect("provision");
    let tp = Transport::open(shm, false).expect("open");
    let mut map = RegionMap::default();
    for (i, seg) in b.channel_segments().enumerate() {
        let base = tp.channel_base(seg).expect("channel");
        map.add_channel(
            i as u32,
            &device::channel::ChannelGeom::new(base, FLAGS, false),
        );
    }
    drop(b);
    Base {
        image: Arc::new(mem.to_vec()),
        map,
    }
}

/// The two engines' views of the adversarial memory (agent 0 the device, agent 1 the
/// host), their fences and trace events logged into one [`TraceLog`].
pub(crate) struct Sides<'a> {
    pub dmem: Fenced<'a, AgentMem<'a>>,
    pub hmem: Fenced<'a, AgentMem<'a>>,
    pub dtap: Tap<'a>,
    pub htap: Tap<'a>,
}

impl<'a> Sides<'a> {
    pub fn new(adv: &'a Adversary, log: &'a TraceLog) -> Self {
        let side = |id, who| Fenced {
            mem: adv.agent(id),
            log,
            who,
        };
        Self {
            dmem: side(0, Who::Device),
            hmem: side(1, Who::Host),
            dtap: log.tap(Who::Device),
            htap: log.tap(Who::Host),
        }
    }
}
