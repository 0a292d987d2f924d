//! Local APIC timer, used only to *idle*: when the rings are quiet the device halts
//! until a one-shot timer interrupt instead of spinning, which under TCG hands the
//! host CPU back to the Linux VM (two VMs share two cores on our machines).
//!
//! The legacy 8259 PICs are masked so only the LAPIC timer (vector 0x20) can wake us.

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use crate::mmio::Mmio;

/// Interrupt vector of the LAPIC timer.
pub const TIMER_VECTOR: u8 = 0x20;
const SPURIOUS_VECTOR: u8 = 0xff;

const REG_EOI: usize = 0xb0;
const REG_SVR: usize = 0xf0;
const REG_LVT_TIMER: usize = 0x320;
const REG_TIMER_INIT: usize = 0x380;
const REG_TIMER_CUR: usize = 0x390;
const REG_TIMER_DIV: usize = 0x3e0;

/// Virtual address of the EOI register (read by the naked interrupt stub).
static EOI_ADDR: AtomicU64 = AtomicU64::new(0);
static LAPIC: spin::Once<Option<(Mmio, u64)>> = spin::Once::new();

/// Timer interrupt entry: acknowledge (EOI) and return. Nothing else to do — the
/// interrupt exists only to end a `hlt`.
#[unsafe(naked)]
pub extern "C" fn timer_entry() {
    naked_asm!(
        "push rax",
        "mov rax, [rip + {eoi}]",
        "mov dword ptr [rax], 0",
        "pop rax",
        "iretq",
        eoi = sym EOI_ADDR,
    )
}

/// Spurious-interrupt entry: no EOI for spurious vectors.
#[unsafe(naked)]
pub extern "C" fn spurious_entry() {
    naked_asm!("iretq")
}

/// Map and enable the LAPIC, mask the PICs, calibrate the timer against the TSC.
/// Returns the timer frequency (Hz, divide-by-16).
pub fn init() -> Option<u64> {
    LAPIC.call_once(|| {
        // SAFETY: ports 0x21/0xa1 are the 8259 mask registers; masking every line
        // only stops legacy interrupts, which the kernel does not use.
        unsafe {
            Port::<u8>::new(0x21).write(0xff);
            Port::<u8>::new(0xa1).write(0xff);
        }
        let base = x86_64::registers::model_specific::Msr::new(0x1b);
        // SAFETY: IA32_APIC_BASE is architectural; reading it has no side effect.
        let phys = unsafe { base.read() } & 0xf_ffff_f000;
        let m = match Mmio::map(phys, 4096) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("apic: cannot map the local APIC: {e}; idling by spinning");
                return None;
            }
        };
        EOI_ADDR.store(m.virt_addr(REG_EOI), Ordering::SeqCst);
        m.write32(REG_SVR, 0x100 | SPURIOUS_VECTOR as u32);
        m.write32(REG_TIMER_DIV, 0b0011); // divide by 16
        m.write32(REG_LVT_TIMER, 1 << 16); // masked while calibrating
        m.write32(REG_TIMER_INIT, u32::MAX);
        super::time::delay_us(10_000);
        let elapsed = u32::MAX - m.read32(REG_TIMER_CUR);
        m.write32(REG_TIMER_INIT, 0);
        let hz = elapsed as u64 * 100;
        m.write32(REG_LVT_TIMER, TIMER_VECTOR as u32); // one-shot, unmasked
        log::debug!("apic: LAPIC at {phys:#x}, timer {hz} Hz (/16)");
        if hz == 0 {
            return None;
        }
        Some((m, hz))
    });
    LAPIC.get().copied().flatten().map(|(_, hz)| hz)
}

/// Halt for about `us` microseconds (or until another interrupt). Falls back to a
/// spin when the LAPIC is unavailable.
pub fn idle_us(us: u64) {
    let Some((m, hz)) = LAPIC.get().copied().flatten() else {
        super::time::delay_us(us);
        return;
    };
    let count = (us * hz / 1_000_000).clamp(1, u32::MAX as u64) as u32;
    m.write32(REG_TIMER_INIT, count);
    // `sti; hlt` is atomic with respect to interrupts (STI's one-instruction shadow),
    // so the timer cannot fire between them and leave us halted forever.
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}
