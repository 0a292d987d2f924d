//! Time: TSC calibrated against the PIT, wall clock from the CMOS RTC.
//!
//! CBD heartbeats are wall-clock nanoseconds since the Unix epoch, so the device
//! reads the RTC once at boot and extends it with the calibrated TSC.

use core::arch::x86_64::_rdtsc;
use device::hw::rtc::{RtcReading, unix_nanos};
use spin::Once;
use x86_64::instructions::port::Port;

struct Clock {
    tsc_hz: u64,
    tsc_at_rtc: u64,
    rtc_unix_ns: u64,
}

static CLOCK: Once<Clock> = Once::new();

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
        Clock {
            tsc_hz,
            tsc_at_rtc,
            rtc_unix_ns,
        }
    });
}

/// Calibrated TSC frequency in Hz.
pub fn tsc_hz() -> u64 {
    init();
    CLOCK.get().map(|c| c.tsc_hz).unwrap_or(1)
}

/// Nanoseconds elapsed since an earlier `rdtsc()` value.
pub fn nanos_since(tsc: u64) -> u64 {
    let hz = tsc_hz();
    ((rdtsc().wrapping_sub(tsc)) as u128 * 1_000_000_000 / hz as u128) as u64
}

/// Wall-clock time, nanoseconds since the Unix epoch.
pub fn wall_clock_ns() -> u64 {
    init();
    match CLOCK.get() {
        Some(c) => c.rtc_unix_ns + nanos_since(c.tsc_at_rtc),
        None => 0,
    }
}

/// Busy-wait for `us` microseconds.
pub fn delay_us(us: u64) {
    let start = rdtsc();
    let ticks = tsc_hz() / 1_000_000 * us;
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}
