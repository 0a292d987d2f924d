//! Time: TSC calibrated against the PIT, wall clock from the CMOS RTC.
//!
//! CBD heartbeats are wall-clock nanoseconds since the Unix epoch, so the device
//! keeps the RTC's seconds and fills in the fraction of a second with the TSC
//! (device::hw::clock: a wrong TSC rate costs less than a second, never more).

use core::arch::x86_64::_rdtsc;
use core::sync::atomic::{AtomicU64, Ordering};

use device::hw::clock::WallClock;
use device::hw::rtc::{RtcReading, unix_nanos};
use spin::Once;
use x86_64::instructions::port::Port;

/// Set once by [`init`]: the TSC calibrated, the wall clock started.
static CLOCK: Once<()> = Once::new();

/// Current TSC value.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is unprivileged and side-effect free.
    unsafe { _rdtsc() }
}

/// TSC frequency: the minimum of several PIT-gated measurements. A measurement can
/// only be inflated (the vCPU preempted while the PIT keeps counting, as happens
/// under TCG on a loaded host), never deflated, so the minimum is the best estimate.
fn calibrate_tsc() -> u64 {
    (0..5)
        .map(|_| calibrate_tsc_once())
        .min()
        .unwrap_or(1_000_000_000)
}

/// Measure TSC ticks during `PIT_TICKS` of the 1.193182 MHz PIT (channel 2, gate
/// through port 0x61, no interrupts involved).
fn calibrate_tsc_once() -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const PIT_TICKS: u16 = 11_932; // ≈ 10 ms
    let mut gate = Port::<u8>::new(0x61);
    let mut cmd = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x42/0x43/0x61 are the legacy PIT channel 2 and its gate;
    // the kernel uses no PIT interrupts and nothing else programs channel 2.
    unsafe {
        let g = gate.read();
        gate.write((g & !0x02) | 0x01); // gate on, speaker off
        cmd.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write((PIT_TICKS & 0xff) as u8);
        ch2.write((PIT_TICKS >> 8) as u8);
        let start = rdtsc();
        let mut spins: u64 = 0;
        while gate.read() & 0x20 == 0 {
            spins += 1;
            if spins > 200_000_000 {
                log::warn!("time: PIT channel 2 never fired; assuming 1 GHz TSC");
                return 1_000_000_000;
            }
        }
        let ticks = rdtsc() - start;
        gate.write(g);
        ticks * PIT_HZ / PIT_TICKS as u64
    }
}

fn cmos_read(reg: u8) -> u8 {
    let mut idx = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    // SAFETY: CMOS index/data ports; bit 7 of the index keeps NMIs disabled.
    unsafe {
        idx.write(0x80 | reg);
        data.read()
    }
}

fn read_rtc_once() -> RtcReading {
    // Wait while an update is in progress (status A bit 7).
    let mut n = 0;
    while cmos_read(0x0a) & 0x80 != 0 && n < 1_000_000 {
        n += 1;
    }
    RtcReading {
        sec: cmos_read(0x00),
        min: cmos_read(0x02),
        hour: cmos_read(0x04),
        day: cmos_read(0x07),
        month: cmos_read(0x08),
        year: cmos_read(0x09),
        century: cmos_read(0x32),
        status_b: cmos_read(0x0b),
    }
}

fn read_rtc() -> RtcReading {
    // Read until two consecutive readings agree (no update between them).
    let mut last = read_rtc_once();
    for _ in 0..8 {
        let next = read_rtc_once();
        if next == last {
            break;
        }
        last = next;
    }
    last
}

/// Calibrate the TSC and read the RTC. Idempotent.
pub fn init() {
    CLOCK.call_once(|| {
        let tsc_hz = calibrate_tsc();
        let r = read_rtc();
        let tsc_at_rtc = rdtsc();
        let rtc_unix_ns = unix_nanos(&r).unwrap_or_else(|e| {
            log::warn!("time: RTC reading {r:?} unusable ({e}); wall clock starts at 0");
            0
        });
        *WALL.lock() = Some(WallClock::new(
            tsc_hz,
            tsc_at_rtc,
            rtc_unix_ns / 1_000_000_000,
        ));
        HZ.store(tsc_hz, Ordering::Relaxed);
    });
}

/// The wall clock (device::hw::clock): RTC seconds, the TSC between second edges.
static WALL: spin::Mutex<Option<WallClock>> = spin::Mutex::new(None);
/// The TSC rate in use: the boot calibration, then the wall clock's re-measured rate.
static HZ: AtomicU64 = AtomicU64::new(0);
/// The last wall-clock answer, for a caller that finds the clock busy.
static LAST_NS: AtomicU64 = AtomicU64::new(0);

/// The RTC in whole Unix seconds, or `None` while an update is in progress or the
/// reading does not convert. Cheap when the second has not changed (two port reads).
fn rtc_seconds(last_sec_reg: &mut u8, last_unix_s: u64) -> Option<u64> {
    if cmos_read(0x0a) & 0x80 != 0 {
        return None;
    }
    let sec = cmos_read(0x00);
    if sec == *last_sec_reg {
        return Some(last_unix_s);
    }
    let unix = unix_nanos(&read_rtc()).ok()? / 1_000_000_000;
    *last_sec_reg = sec;
    Some(unix)
}

/// Calibrated TSC frequency in Hz (re-measured against the RTC as the device runs).
pub fn tsc_hz() -> u64 {
    init();
    HZ.load(Ordering::Relaxed).max(1)
}

/// Nanoseconds elapsed since an earlier `rdtsc()` value.
pub fn nanos_since(tsc: u64) -> u64 {
    let hz = tsc_hz();
    ((rdtsc().wrapping_sub(tsc)) as u128 * 1_000_000_000 / hz as u128) as u64
}

/// Wall-clock time, nanoseconds since the Unix epoch: the RTC's second, the TSC within
/// it (device::hw::clock), never going back.
pub fn wall_clock_ns() -> u64 {
    init();
    // Busy only if an interrupt handler asks while the poll loop holds it.
    let Some(mut guard) = WALL.try_lock() else {
        return LAST_NS.load(Ordering::Relaxed);
    };
    let Some(w) = guard.as_mut() else {
        return 0;
    };
    let tsc = rdtsc();
    if w.wants_rtc(tsc) {
        static SEC_REG: spin::Mutex<(u8, u64)> = spin::Mutex::new((0xff, 0));
        let mut reg = SEC_REG.lock();
        let (mut sec_reg, last_unix) = *reg;
        if let Some(s) = rtc_seconds(&mut sec_reg, last_unix) {
            *reg = (sec_reg, s);
            w.observe(tsc, s);
            let (old, new) = (HZ.swap(w.hz(), Ordering::Relaxed), w.hz());
            if old.abs_diff(new) > old / 20 {
                drop(reg);
                drop(guard);
                log::info!(
                    "time: TSC rate re-measured against the RTC: {}.{:03} MHz (was {}.{:03})",
                    new / 1_000_000,
                    new / 1000 % 1000,
                    old / 1_000_000,
                    old / 1000 % 1000
                );
                return wall_clock_ns();
            }
        }
        // Else an update is in progress (or the reading does not convert): the next
        // call looks again.
    }
    let v = w.now_ns(tsc);
    LAST_NS.store(v, Ordering::Relaxed);
    v
}

/// Busy-wait for `us` microseconds.
pub fn delay_us(us: u64) {
    let start = rdtsc();
    let ticks = tsc_hz() / 1_000_000 * us;
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}
