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
//!
//! User recovery: devices are created with `UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE`
//! when the driver offers both. If this program dies (SIGKILL, a crash), ublk_drv keeps
//! `/dev/ublkbN`, quiesces its queue and requeues every request the dead server had
//! fetched; a new server started with [`UblkOptions::recover`] (`cbd-host --recover N`)
//! takes the device over (`START_USER_RECOVERY`, fetch, `END_USER_RECOVERY`) and gets those
//! requests again. Reissued writes carry the same data to the same place: harmless for a
//! block device, whose requests in flight together never overlap by contract of the
//! submitter.

use std::sync::Arc;

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::{BufDescList, UblkDev, UblkIOCtx, UblkQueue, with_task_io_ring_mut};
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
    /// Take over device `dev_id`, whose server died, instead of creating one (ublk user
    /// recovery; see [`check_recoverable`]).
    pub recover: bool,
}

impl Default for UblkOptions {
    fn default() -> Self {
        UblkOptions {
            dev_id: -1,
            queues: 1,
            depth: 64,
            io_buf_bytes: 512 << 10,
            recover: false,
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

/// Passes of a queue thread's loop, while requests are in flight, between two entries into
/// io_uring when nothing else calls for one (so that requests ublk posted meanwhile are seen).
const ENTER_EVERY: u32 = 32;

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
    // Asynchronous: a request is started as soon as ublk hands it over and completed to ublk
    // as soon as its CE is taken, whatever else is in flight. A pass enters io_uring
    // (`flush_and_wake_io_tasks`), which hands ublk what completed (the COMMIT_AND_FETCH
    // commands `complete` queued) and takes the requests ublk has posted, then takes every
    // completion the channel has. While requests are in flight it does not wait in io_uring,
    // and enters it only when there is something to hand back, ublk's completion ring shows
    // entries, or after `ENTER_EVERY` passes without either (a new request's entry is posted
    // by task work, which runs when the thread enters the kernel); in between it only polls
    // the channel, with no system call. With nothing in flight it blocks in io_uring until
    // ublk posts a request (or the queue stops).
    let mut new_tags: Vec<u16> = Vec::new();
    let mut waiting = 0usize;
    let mut to_hand_back = false;
    let mut passes = 0u32;
    loop {
        let posted = || with_task_io_ring_mut(|r| !r.completion().is_empty());
        if waiting == 0 || to_hand_back || passes >= ENTER_EVERY || posted() {
            passes = 0;
            to_hand_back = false;
            let taken = queue.flush_and_wake_io_tasks(
                |user_data, cqe, _last| {
                    // Only fetch/commit commands go through this ring; a result other than
                    // OK (UBLK_IO_RES_ABORT: the queue stops) carries no request.
                    if cqe.result() == sys::UBLK_IO_RES_OK as i32 {
                        new_tags.push(UblkIOCtx::user_data_to_tag(user_data) as u16);
                    }
                },
                usize::from(waiting == 0),
            );
            if taken.is_err() {
                // The queue is down (every command came back aborted): the device stops.
                break;
            }
        }
        passes += 1;
        for tag in new_tags.drain(..) {
            let iod = queue.get_iod(tag);
            let len = iod.nr_sectors << 9;
            let started = match decode(iod.op_flags, iod.start_sector, iod.nr_sectors) {
                Some(req) => io.start(tag, &req, bufs[tag as usize].as_mut_slice()),
                None => Some(Err(Errno(libc::EOPNOTSUPP))),
            };
            if let Some(res) = started {
                complete(&queue, qid, tag, bufs[tag as usize].as_slice(), res, len);
                to_hand_back = true;
            }
        }
        waiting = io.poll(&mut |t: u16, res: Result<(), Errno>, data: &[u8]| {
            let buf = bufs[t as usize].as_mut_slice();
            if res.is_ok() && !data.is_empty() {
                buf[..data.len()].copy_from_slice(data);
            }
            let len = queue.get_iod(t).nr_sectors << 9;
            complete(&queue, qid, t, bufs[t as usize].as_slice(), res, len);
            to_hand_back = true;
        });
    }
    if waiting > 0 {
        log::warn!("queue {qid}: stopped with {waiting} request(s) not completed");
    }
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

/// The recovery flags a new device asks for: both, if the driver offers both (Linux ≥ 6.0).
pub const RECOVERY_FLAGS: u64 =
    (sys::UBLK_F_USER_RECOVERY | sys::UBLK_F_USER_RECOVERY_REISSUE) as u64;

/// The recovery flags to create a device with, given the driver's feature bits.
pub fn recovery_flags(driver_features: Option<u64>) -> u64 {
    match driver_features {
        Some(f) if f & RECOVERY_FLAGS == RECOVERY_FLAGS => RECOVERY_FLAGS,
        _ => 0,
    }
}

/// What a device to recover looked like before the takeover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub dev_id: i32,
    /// The dead server's pid.
    pub old_pid: i32,
    pub state: u16,
    pub nr_queues: u16,
    pub dev_bytes: u64,
}

/// Why a device cannot be recovered, from its `ublksrv_ctrl_dev_info`: `pid_alive` answers
/// whether a process still runs (`kill(pid, 0)`).
pub fn judge_orphan(
    info: &sys::ublksrv_ctrl_dev_info,
    dev_bytes: u64,
    pid_alive: impl Fn(i32) -> bool,
) -> Result<Orphan, String> {
    let id = info.dev_id;
    if info.flags & sys::UBLK_F_USER_RECOVERY as u64 == 0 {
        return Err(format!(
            "/dev/ublkb{id} was created without UBLK_F_USER_RECOVERY (flags {:#x}): it cannot be \
             taken over; stop it with `cbd-host stop {id}`",
            info.flags
        ));
    }
    let state = info.state as u32;
    if state == sys::UBLK_S_DEV_DEAD {
        return Err(format!(
            "/dev/ublkb{id} is stopped (state DEAD): nothing to recover; start without --recover"
        ));
    }
    if info.ublksrv_pid > 0 && pid_alive(info.ublksrv_pid) {
        return Err(format!(
            "/dev/ublkb{id} is still served by pid {} (state {}): refusing to take it over",
            info.ublksrv_pid,
            state_name(info.state)
        ));
    }
    Ok(Orphan {
        dev_id: id as i32,
        old_pid: info.ublksrv_pid,
        state: info.state,
        nr_queues: info.nr_hw_queues,
        dev_bytes,
    })
}

fn state_name(s: u16) -> &'static str {
    match s as u32 {
        sys::UBLK_S_DEV_DEAD => "DEAD",
        sys::UBLK_S_DEV_LIVE => "LIVE",
        sys::UBLK_S_DEV_QUIESCED => "QUIESCED",
        _ => "other",
    }
}

fn pid_alive(pid: i32) -> bool {
    // /proc/PID exists while the process (or its zombie) does.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Checks that ublk device `dev_id` exists, was created with user recovery, and that its
/// server is dead: the proof that this program may take it (and the dead server's CBD
/// records) over.
pub fn check_recoverable(dev_id: i32) -> Result<Orphan, String> {
    if dev_id < 0 {
        return Err("--recover needs a device number".into());
    }
    let c = UblkCtrl::new_simple(dev_id)
        .map_err(|e| format!("/dev/ublkb{dev_id}: no such ublk device ({e})"))?;
    let info = c.dev_info();
    let mut p = sys::ublk_params {
        len: std::mem::size_of::<sys::ublk_params>() as u32,
        types: sys::UBLK_PARAM_TYPE_BASIC,
        ..Default::default()
    };
    let bytes = match c.get_params(&mut p) {
        Ok(_) => p.basic.dev_sectors << 9,
        Err(_) => 0,
    };
    judge_orphan(&info, bytes, pid_alive)
}

/// Creates the ublk device for `disk` (or, with `opts.recover`, takes over device
/// `opts.dev_id` whose server died), serves it until the device is stopped (`stop` below, a
/// signal handler calling it, or `ublk del`), then deletes it. `ready` runs once the block
/// device serves, with its id.
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
    let (ctrl_flags, dev_flags) = if opts.recover {
        let o = check_recoverable(opts.dev_id)?;
        if o.nr_queues != opts.queues {
            return Err(format!(
                "/dev/ublkb{} has {} queue(s), --queues says {}",
                o.dev_id, o.nr_queues, opts.queues
            ));
        }
        if o.dev_bytes != 0 && o.dev_bytes != size {
            return Err(format!(
                "/dev/ublkb{} holds {} bytes, the disk has {size}",
                o.dev_id, o.dev_bytes
            ));
        }
        log::info!(
            "recovering /dev/ublkb{} (state {}, dead server pid {})",
            o.dev_id,
            state_name(o.state),
            o.old_pid
        );
        // Waits (EBUSY, up to 30 s) until the driver has quiesced the device: the dead
        // server's files are released and its fetched requests requeued.
        UblkCtrl::new_simple(opts.dev_id)
            .and_then(|c| c.start_user_recover())
            .map_err(|e| format!("START_USER_RECOVERY on /dev/ublkb{}: {e}", opts.dev_id))?;
        // The flags are the device's (read from the driver); only ours to choose at ADD.
        (0, UblkFlags::UBLK_DEV_F_RECOVER_DEV)
    } else {
        let rec = recovery_flags(UblkCtrl::get_features());
        if rec == 0 {
            log::warn!(
                "ublk_drv offers no user recovery: a killed cbd-host takes /dev/ublkbN with it"
            );
        }
        (rec, UblkFlags::UBLK_DEV_F_ADD_DEV)
    };
    let ctrl = UblkCtrlBuilder::default()
        .name("cbd")
        .id(opts.dev_id)
        .nr_queues(opts.queues)
        .depth(opts.depth)
        .io_buf_bytes(opts.io_buf_bytes)
        .ctrl_flags(ctrl_flags)
        .dev_flags(dev_flags)
        .build()
        .map_err(|e| match opts.recover {
            true => format!("opening /dev/ublkb{} for recovery: {e}", opts.dev_id),
            false => format!(
                "creating the ublk device failed: {e} (is ublk_drv loaded? /dev/ublk-control)"
            ),
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
    if opts.recover {
        // A recovering control does not delete its device when dropped (only the one that
        // added it would): delete it here, as a clean stop of the original server would.
        if let Err(e) = ctrl.del_dev() {
            log::warn!("deleting /dev/ublkb{}: {e}", opts.dev_id);
        }
    }
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

/// Stops ublk device `dev_id` (its queues finish, [`serve`] returns). An orphan (created
/// with user recovery, its server dead: nobody will delete it) is deleted as well, so its
/// number is free again.
pub fn stop(dev_id: i32) -> Result<(), String> {
    let c = UblkCtrl::new_simple(dev_id).map_err(|e| format!("ublk device {dev_id}: {e}"))?;
    let orphan = judge_orphan(&c.dev_info(), 0, pid_alive).is_ok();
    c.kill_dev()
        .map_err(|e| format!("stopping ublk device {dev_id}: {e}"))?;
    if orphan {
        log::info!("/dev/ublkb{dev_id}: its server is dead; deleting the device");
        c.del_dev()
            .map_err(|e| format!("deleting orphaned ublk device {dev_id}: {e}"))?;
    }
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
    fn info(flags: u64, state: u32, pid: i32) -> sys::ublksrv_ctrl_dev_info {
        sys::ublksrv_ctrl_dev_info {
            dev_id: 4,
            nr_hw_queues: 2,
            flags,
            state: state as u16,
            ublksrv_pid: pid,
            ..Default::default()
        }
    }

    #[test]
    fn recovery_is_asked_for_only_when_the_driver_has_both_flags() {
        assert_eq!(recovery_flags(None), 0);
        assert_eq!(recovery_flags(Some(sys::UBLK_F_USER_RECOVERY as u64)), 0);
        assert_eq!(recovery_flags(Some(!0)), RECOVERY_FLAGS);
        assert_eq!(
            RECOVERY_FLAGS,
            (sys::UBLK_F_USER_RECOVERY | sys::UBLK_F_USER_RECOVERY_REISSUE) as u64
        );
    }

    #[test]
    fn only_a_recoverable_device_with_a_dead_server_is_taken_over() {
        let dead = |_pid: i32| false;
        let alive = |_pid: i32| true;
        let o = judge_orphan(
            &info(RECOVERY_FLAGS, sys::UBLK_S_DEV_QUIESCED, 77),
            1 << 20,
            dead,
        )
        .unwrap();
        assert_eq!(
            o,
            Orphan {
                dev_id: 4,
                old_pid: 77,
                state: sys::UBLK_S_DEV_QUIESCED as u16,
                nr_queues: 2,
                dev_bytes: 1 << 20
            }
        );
        // Still LIVE in the driver's eyes (the quiesce is not done yet), server gone: ours.
        assert!(judge_orphan(&info(RECOVERY_FLAGS, sys::UBLK_S_DEV_LIVE, 77), 0, dead).is_ok());
        let e =
            judge_orphan(&info(RECOVERY_FLAGS, sys::UBLK_S_DEV_LIVE, 77), 0, alive).unwrap_err();
        assert!(e.contains("still served by pid 77"), "{e}");
        let e = judge_orphan(&info(0, sys::UBLK_S_DEV_QUIESCED, 77), 0, dead).unwrap_err();
        assert!(e.contains("without UBLK_F_USER_RECOVERY"), "{e}");
        let e = judge_orphan(&info(RECOVERY_FLAGS, sys::UBLK_S_DEV_DEAD, 77), 0, dead).unwrap_err();
        assert!(e.contains("state DEAD"), "{e}");
    }
}
