//! What the ublk side serves: a [`Disk`] with one [`QueueIo`] per ublk queue (= per CBD channel).
//!
//! * [`CbdDisk`](super::cbd_disk::CbdDisk): the real path, the CBD backend behind the shared transport.
//! * [`RamDisk`]: **test mode** (`--backend ram`), an in-process RAM disk that proves the ublk
//!   plumbing (queues, flush, FUA, discard) without a CBD backend.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The DISCARD / WRITE_ZEROES limit a disk that takes them advertises: one CBD request
/// (`chan::MAX_IO`, 1 MiB); the kernel splits larger ones.
pub const MAX_DISCARD_BYTES: u32 = device::layout::chan::MAX_IO;

/// A block request as the ublk driver hands it over (byte units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Req {
    pub op: Op,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Length in bytes (0 for flush).
    pub len: u32,
    /// Force unit access: the data must be durable when the request completes.
    pub fua: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
    Discard,
    WriteZeroes,
}

/// A positive errno, returned to the block layer as the request's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// Where [`QueueIo::poll`] and [`QueueIo::finish`] deliver completions: tag, result, and for
/// a successful READ the data (`req.len` bytes) to copy into that tag's buffer.
pub type Sink<'a> = dyn FnMut(u16, Result<(), Errno>, &[u8]) + 'a;

/// One queue's I/O path. Used from that queue's thread only.
///
/// Two ways to use it: [`QueueIo::submit`] runs one request to completion; or
/// [`QueueIo::start`] requests (one per ublk tag) as they come and [`QueueIo::poll`] between
/// them, which reports each started request as soon as it is done, so that many are in flight
/// at the same time and none waits for another. [`QueueIo::finish`] waits for all of them.
pub trait QueueIo {
    /// Executes `req`; `buf` holds the write data / receives the read data (at least `len` long).
    fn submit(&mut self, req: &Req, buf: &mut [u8]) -> Result<(), Errno>;

    /// Starts `req` for ublk tag `tag`. `Some(result)`: done already (READ data is in `buf`);
    /// `None`: in flight, reported by a later [`QueueIo::poll`] (or [`QueueIo::finish`]). The
    /// default runs it now.
    fn start(&mut self, _tag: u16, req: &Req, buf: &mut [u8]) -> Option<Result<(), Errno>> {
        Some(self.submit(req, buf))
    }

    /// Reports to `sink`, once each, the started requests that are done by now, without
    /// waiting for the others; returns how many started requests are still not reported
    /// (0: nothing to wait for, the caller may block until a new request arrives).
    fn poll(&mut self, _sink: &mut Sink<'_>) -> usize {
        0
    }

    /// Waits for every started request and reports each once to `sink`.
    fn finish(&mut self, sink: &mut Sink<'_>) {
        while self.poll(sink) > 0 {
            std::hint::spin_loop();
        }
    }
}

/// A disk with `nr_queues()` independent queues.
pub trait Disk: Send + Sync {
    /// Size in bytes (a multiple of 512).
    fn size(&self) -> u64;
    /// The I/O path of queue `qid` (< the number of ublk queues).
    fn queue(&self, qid: u16) -> Result<Box<dyn QueueIo>, String>;
    /// One-line description for logs.
    fn describe(&self) -> String;
    /// Largest DISCARD / WRITE_ZEROES request in bytes the disk takes, 0 if it takes none
    /// (then they fail with `EOPNOTSUPP` and the ublk device does not advertise them).
    fn max_discard_bytes(&self) -> u32 {
        0
    }
    /// Counters printed when the program exits.
    fn stats(&self) -> String {
        String::new()
    }
    /// Called once after the ublk device is gone (dev-stop for CBD).
    fn shutdown(&self) {}
}

/// Per-disk request counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub flushes: AtomicU64,
    pub fua_writes: AtomicU64,
    pub discards: AtomicU64,
    pub errors: AtomicU64,
}

impl Stats {
    pub fn count(&self, req: &Req) {
        let c = match req.op {
            Op::Read => &self.reads,
            Op::Write => &self.writes,
            Op::Flush => &self.flushes,
            Op::Discard | Op::WriteZeroes => &self.discards,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if req.fua && req.op == Op::Write {
            self.fua_writes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "reads={} writes={} flushes={} fua_writes={} discards={} errors={}",
            g(&self.reads),
            g(&self.writes),
            g(&self.flushes),
            g(&self.fua_writes),
            g(&self.discards),
            g(&self.errors)
        )
    }
}

fn check_range(req: &Req, size: u64, buf_len: usize) -> Result<(usize, usize), Errno> {
    let end = req
        .offset
        .checked_add(req.len as u64)
        .ok_or(Errno(libc::EINVAL))?;
    if end > size {
        return Err(Errno(libc::EIO));
    }
    if matches!(req.op, Op::Read | Op::Write) && req.len as usize > buf_len {
        return Err(Errno(libc::EINVAL));
    }
    Ok((req.offset as usize, req.len as usize))
}

/// Test mode: a RAM disk inside this process. Flush and FUA are no-ops for RAM, but are counted
/// (see [`Disk::stats`]) so tests can check that the kernel sends them.
pub struct RamDisk {
    data: Mutex<Vec<u8>>,
    size: u64,
    stats: Stats,
}

impl RamDisk {
    pub fn new(size: u64) -> Result<RamDisk, String> {
        if size == 0 || !size.is_multiple_of(4096) {
            return Err(format!(
                "RAM disk size {size} must be a non-zero multiple of 4096"
            ));
        }
        let n = usize::try_from(size).map_err(|_| "RAM disk too large".to_string())?;
        Ok(RamDisk {
            data: Mutex::new(vec![0; n]),
            size,
            stats: Stats::default(),
        })
    }

    fn io(&self, req: &Req, buf: &mut [u8]) -> Result<(), Errno> {
        self.stats.count(req);
        if req.op == Op::Flush {
            return Ok(());
        }
        let (o, n) = check_range(req, self.size, buf.len())?;
        let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        match req.op {
            Op::Read => buf[..n].copy_from_slice(&d[o..o + n]),
            Op::Write => d[o..o + n].copy_from_slice(&buf[..n]),
            Op::Discard | Op::WriteZeroes => d[o..o + n].fill(0),
            Op::Flush => {}
        }
        Ok(())
    }
}

struct RamQueue<'a>(&'a RamDisk);

impl QueueIo for RamQueue<'static> {
    fn submit(&mut self, req: &Req, buf: &mut [u8]) -> Result<(), Errno> {
        let r = self.0.io(req, buf);
        if r.is_err() {
            self.0.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl Disk for &'static RamDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn queue(&self, _qid: u16) -> Result<Box<dyn QueueIo>, String> {
        Ok(Box::new(RamQueue(self)))
    }
    fn describe(&self) -> String {
        format!("RAM disk (test mode), {} MiB", self.size >> 20)
    }
    fn max_discard_bytes(&self) -> u32 {
        MAX_DISCARD_BYTES
    }
    fn stats(&self) -> String {
        self.stats.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(offset: u64, len: u32, fua: bool) -> Req {
        Req {
            op: Op::Write,
            offset,
            len,
            fua,
        }
    }

    #[test]
    fn ram_disk_round_trip_and_counters() {
        let d: &'static RamDisk = Box::leak(Box::new(RamDisk::new(1 << 20).unwrap()));
        let mut q = d.queue(0).unwrap();
        let mut data = vec![0x5a; 8192];
        q.submit(&w(4096, 8192, true), &mut data).unwrap();
        let mut back = vec![0; 8192];
        q.submit(
            &Req {
                op: Op::Read,
                offset: 4096,
                len: 8192,
                fua: false,
            },
            &mut back,
        )
        .unwrap();
        assert_eq!(back, data);
        q.submit(
            &Req {
                op: Op::Flush,
                offset: 0,
                len: 0,
                fua: false,
            },
            &mut [],
        )
        .unwrap();
        q.submit(
            &Req {
                op: Op::Discard,
                offset: 4096,
                len: 4096,
                fua: false,
            },
            &mut [],
        )
        .unwrap();
        q.submit(
            &Req {
                op: Op::Read,
                offset: 4096,
                len: 8192,
                fua: false,
            },
            &mut back,
        )
        .unwrap();
        assert_eq!(&back[..4096], &[0; 4096][..]);
        assert_eq!(&back[4096..], &data[4096..]);
        assert_eq!(
            d.stats(),
            "reads=2 writes=1 flushes=1 fua_writes=1 discards=1 errors=0"
        );
    }

    #[test]
    fn ram_disk_rejects_out_of_range() {
        let d: &'static RamDisk = Box::leak(Box::new(RamDisk::new(1 << 20).unwrap()));
        let mut q = d.queue(0).unwrap();
        let mut data = vec![0; 8192];
        assert_eq!(
            q.submit(&w((1 << 20) - 4096, 8192, false), &mut data),
            Err(Errno(libc::EIO))
        );
        assert_eq!(
            q.submit(&w(0, 16384, false), &mut data),
            Err(Errno(libc::EINVAL))
        );
        assert!(d.stats().ends_with("errors=2"));
        assert!(RamDisk::new(1000).is_err());
    }
}
