//! The ublk side: one ublk hardware queue per CBD channel, each served by its own thread
//! (libublk's queue threads), requests handed to the queue's [`QueueIo`](super::disk::QueueIo).
//!
//! Request mapping: READ/WRITE → data transfer; FLUSH → [`Op::Flush`] (CBD FLUSH on the real
//! path); a WRITE with `UBLK_IO_F_FUA` → [`Req::fua`] (the disk makes it durable before
//! completing); DISCARD / WRITE_ZEROES → [`Op::Discard`] / [`Op::WriteZeroes`]. The device
//! advertises a volatile write cache and FUA, so the kernel sends flushes and FUA writes; and,
//! when the disk takes them ([`Disk::max_discard_bytes`] > 0), DISCARD and WRITE_ZEROES
//! (`UBLK_PARAM_TYPE_DISCARD`, one segment of at most that size: `blkdiscard`, `fstrim`,
//! `BLKZEROOUT`, `fallocate(PUNCH_HOLE)` reach the disk instead of failing with EOPNOTSUPP).

use std::sync::Arc;

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::{BufDescList, UblkDev, UblkIOCtx, UblkQueue};
use libublk::{BufDesc, UblkFlags, UblkIORes, sys};

use super::disk::{Disk, Errno, Op, Req};

/// ublk device options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UblkOptions {
    /// `/dev/ublkbN` number; -1 lets the driver choose.
    pub dev_id: i32,
    /// Hardware queues (one per CBD channel).
    pub queues: u16,
    /// Requests in flight per queue.
    pub depth: u16,
    /// Largest request in bytes (per-tag buffer size).
    pub io_buf_bytes: u32,
}

impl Default for UblkOptions {
    fn default() -> Self {
        UblkOptions {
            dev_id: -1,
            queues: 1,
            depth: 64,
            io_buf_bytes: 512 << 10,
        }
    }
}

/// Decodes a ublk I/O descriptor into a [`Req`]; unknown operations are `None`.
pub fn decode(op_flags: u32, start_sector: u64, nr_sectors: u32) -> Option<Req> {
    let op = match op_flags & 0xff {
        sys::UBLK_IO_OP_READ => Op::Read,
        sys::UBLK_IO_OP_WRITE => Op::Write,
        sys::UBLK_IO_OP_FLUSH => Op::Flush,
        sys::UBLK_IO_OP_DISCARD => Op::Discard,
        sys::UBLK_IO_OP_WRITE_ZEROES => Op::WriteZeroes,
        _ => return None,
    };
    Some(Req {
        op,
        offset: start_sector << 9,
        len: if op == Op::Flush { 0 } else { nr_sectors << 9 },
        fua: op_flags & sys::UBLK_IO_F_FUA != 0,
    })
}

fn queue_thread(qid: u16, dev: &UblkDev, disk: &dyn Disk) {
    let mut io = match disk.queue(qid) {
        Ok(io) => io,
        Err(e) => {
            log::error!("queue {qid}: cannot open the disk queue: {e}");
            return;
        }
    };
    let mut bufs = dev.alloc_queue_io_bufs();
    let queue = match UblkQueue::new(qid, dev)
        .and_then(|q| q.submit_fetch_commands_unified(BufDescList::Slices(Some(&bufs))))
    {
        Ok(q) => q,
        Err(e) => {
            log::error!("queue {qid}: ublk setup failed: {e}");
            return;
        }
    };
    log::debug!("queue {qid}: serving");
    // Requests of one batch of ublk completions are started together and finished when the
    // batch's last entry has been handled, so a queue has up to a batch in flight at once.
    queue.wait_and_handle_io(move |q: &UblkQueue, tag: u16, ctx: &UblkIOCtx| {
        let iod = q.get_iod(tag);
        let len = iod.nr_sectors << 9;
        let started = match decode(iod.op_flags, iod.start_sector, iod.nr_sectors) {
            Some(req) => io.start(tag, &req, bufs[tag as usize].as_mut_slice()),
            None => Some(Err(Errno(libc::EOPNOTSUPP))),
        };
        if let Some(res) = started {
            complete(q, qid, tag, bufs[tag as usize].as_slice(), res, len);
        }
        if ctx.is_last_cqe() {
            io.finish(&mut |t: u16, res: Result<(), Errno>, data: &[u8]| {
                let buf = bufs[t as usize].as_mut_slice();
                if res.is_ok() && !data.is_empty() {
                    buf[..data.len()].copy_from_slice(data);
                }
                let len = q.get_iod(t).nr_sectors << 9;
                complete(q, qid, t, bufs[t as usize].as_slice(), res, len);
            });
        }
    });
    log::debug!("queue {qid}: done");
}

/// Completes `tag` with `res` (bytes transferred, or -errno).
fn complete(q: &UblkQueue, qid: u16, tag: u16, buf: &[u8], res: Result<(), Errno>, len: u32) {
    let r = match res {
        Ok(()) => len as i32,
        Err(Errno(e)) => {
            log::debug!("queue {qid} tag {tag}: errno {e}");
            -e
        }
    };
    if let Err(e) = q.complete_io_cmd_unified(tag, BufDesc::Slice(buf), Ok(UblkIORes::Result(r))) {
        log::error!("queue {qid} tag {tag}: completing failed: {e}");
    }
}

/// Creates the ublk device for `disk`, serves it until the device is stopped (`stop` below, a
/// signal handler calling it, or `ublk del`), then deletes it. `ready` runs once the block
/// device exists, with its id.
pub fn serve(
    disk: Arc<dyn Disk>,
    opts: &UblkOptions,
    ready: impl FnOnce(i32) + Send + Sync + 'static,
) -> Result<(), String> {
    let size = disk.size();
    if size == 0 || !size.is_multiple_of(512) {
        return Err(format!(
            "disk size {size} is not a non-zero multiple of 512"
        ));
    }
    if opts.queues == 0 || opts.depth == 0 {
        return Err("queues and depth must be at least 1".into());
    }
    let ctrl = UblkCtrlBuilder::default()
        .name("cbd")
        .id(opts.dev_id)
        .nr_queues(opts.queues)
        .depth(opts.depth)
        .io_buf_bytes(opts.io_buf_bytes)
        .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV)
        .build()
        .map_err(|e| {
            format!("creating the ublk device failed: {e} (is ublk_drv loaded? /dev/ublk-control)")
        })?;
    let discard_bytes = disk.max_discard_bytes();
    let tgt_init = move |dev: &mut UblkDev| {
        dev.set_default_params(size);
        set_params(&mut dev.tgt.params, discard_bytes);
        Ok(())
    };
    let d = Arc::clone(&disk);
    let q_fn = move |qid: u16, dev: &UblkDev| queue_thread(qid, dev, &*d);
    let dev_fn = move |ctrl: &UblkCtrl| ready(ctrl.dev_info().dev_id as i32);
    ctrl.run_target(tgt_init, q_fn, dev_fn)
        .map_err(|e| format!("ublk device failed: {e}"))?;
    Ok(())
}

/// Our parameters over libublk's defaults: volatile cache (the kernel sends FLUSH), FUA (writes
/// may carry `UBLK_IO_F_FUA`), 512-byte logical blocks; with `discard_bytes` > 0, DISCARD and
/// WRITE_ZEROES of up to that many bytes in one segment, granularity the physical block.
pub fn set_params(p: &mut sys::ublk_params, discard_bytes: u32) {
    p.basic.attrs = sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA;
    p.basic.logical_bs_shift = 9;
    if discard_bytes >= 512 {
        p.types |= sys::UBLK_PARAM_TYPE_DISCARD;
        p.discard = sys::ublk_param_discard {
            discard_alignment: 0,
            discard_granularity: 1 << p.basic.physical_bs_shift.max(9),
            max_discard_sectors: discard_bytes >> 9,
            max_write_zeroes_sectors: discard_bytes >> 9,
            max_discard_segments: 1,
            reserved0: 0,
        };
    }
}

/// Stops ublk device `dev_id` (its queues finish, [`serve`] returns).
pub fn stop(dev_id: i32) -> Result<(), String> {
    let c = UblkCtrl::new_simple(dev_id).map_err(|e| format!("ublk device {dev_id}: {e}"))?;
    c.kill_dev()
        .map_err(|e| format!("stopping ublk device {dev_id}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_ops_and_flags() {
        let r = decode(sys::UBLK_IO_OP_WRITE | sys::UBLK_IO_F_FUA, 8, 16).unwrap();
        assert_eq!(
            r,
            Req {
                op: Op::Write,
                offset: 4096,
                len: 8192,
                fua: true
            }
        );
        let f = decode(sys::UBLK_IO_OP_FLUSH, 0, 0).unwrap();
        assert_eq!((f.op, f.len, f.fua), (Op::Flush, 0, false));
        assert_eq!(decode(sys::UBLK_IO_OP_READ, 1, 1).unwrap().op, Op::Read);
        assert_eq!(
            decode(sys::UBLK_IO_OP_DISCARD, 0, 8).unwrap().op,
            Op::Discard
        );
        assert_eq!(
            decode(sys::UBLK_IO_OP_WRITE_ZEROES, 0, 8).unwrap().op,
            Op::WriteZeroes
        );
        assert!(decode(0xfe, 0, 0).is_none());
    }

    fn defaults() -> sys::ublk_params {
        sys::ublk_params {
            types: sys::UBLK_PARAM_TYPE_BASIC,
            basic: sys::ublk_param_basic {
                physical_bs_shift: 12,
                max_sectors: 1024,
                dev_sectors: 1 << 20,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn discard_and_write_zeroes_are_advertised_only_when_the_disk_takes_them() {
        let mut p = defaults();
        set_params(&mut p, 0);
        assert_eq!(p.types, sys::UBLK_PARAM_TYPE_BASIC, "no discard params");
        assert_eq!(
            p.basic.attrs,
            sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA
        );
        assert_eq!(
            (
                p.discard.max_discard_sectors,
                p.discard.max_write_zeroes_sectors
            ),
            (0, 0)
        );

        let mut p = defaults();
        set_params(&mut p, crate::linux::disk::MAX_DISCARD_BYTES);
        assert_eq!(
            p.types,
            sys::UBLK_PARAM_TYPE_BASIC | sys::UBLK_PARAM_TYPE_DISCARD
        );
        let d = p.discard;
        // One CBD request at most (1 MiB), one segment (what ublk_drv accepts), 4 KiB units.
        assert_eq!(d.max_discard_sectors, device::layout::chan::MAX_IO >> 9);
        assert_eq!(d.max_write_zeroes_sectors, d.max_discard_sectors);
        assert_eq!((d.max_discard_segments, d.discard_granularity), (1, 4096));
        assert_eq!(d.discard_alignment, 0);
        // ublk_drv refuses discard params with a zero granularity or more than one segment.
        assert!(d.discard_granularity > 0 && d.max_discard_segments == 1);
    }

    #[test]
    fn discard_ops_decode_to_their_ranges() {
        let d = decode(sys::UBLK_IO_OP_DISCARD, 2048, 2048).unwrap();
        assert_eq!(
            (d.op, d.offset, d.len, d.fua),
            (Op::Discard, 1 << 20, 1 << 20, false)
        );
        let z = decode(sys::UBLK_IO_OP_WRITE_ZEROES | sys::UBLK_IO_F_NOUNMAP, 8, 8).unwrap();
        assert_eq!((z.op, z.offset, z.len), (Op::WriteZeroes, 4096, 4096));
    }
}
