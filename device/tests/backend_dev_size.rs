//! The backend record's `dev_size` is the media size in 512-byte sectors
//! (docs/protocol.md §2, `backend_rec`): the host sizes its disk from it.

use device::backend::{Backend, BackendConfig};
use device::layout::*;
use device::native::{HeapMem, VecMedia};
use device::shm::Shm;
use device::trace::NoTrace;
use device::transport::{Transport, format_flags};

#[test]
fn dev_size_is_the_media_size_in_sectors() {
    for bytes in [1usize << 20, 3 << 20, (4 << 20) + 512] {
        let mem = HeapMem::new(TransportInfo::region_for(1) as usize);
        let shm = Shm::new(&mem, &NoTrace);
        Transport::format(shm, format_flags(true), false, 1).unwrap();
        let mut scratch = vec![0u8; chan::MAX_IO as usize];
        let b = Backend::start(
            shm,
            BackendConfig::default(),
            VecMedia::new(bytes),
            &mut scratch,
            1,
        )
        .unwrap();
        let tp = Transport::open(shm, false).unwrap();
        let rec = tp.backend(b.backend_id).unwrap().expect("its record").rec;
        assert_eq!(rec.dev_size, bytes as u64 / 512, "{bytes} bytes");
    }
}
