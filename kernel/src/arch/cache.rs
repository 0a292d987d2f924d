//! Cache-maintenance instructions — the whole reason the shared-memory layer exists.
//!
//! Memory shared between hosts over CXL is not kept coherent for us, so a writer
//! writes its lines back (CLWB, else CLFLUSHOPT, else CLFLUSH) and orders them
//! (SFENCE); a reader drops its cached copy (CLFLUSH) before loading.

use core::arch::asm;

/// Cache line size the primitives step by (CPUID reports 64 on every x86_64 we target).
pub const LINE: u64 = 64;

/// Which instruction writes lines back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteBackInsn {
    Clwb,
    Clflushopt,
    Clflush,
}

/// The best write-back instruction this CPU has.
pub fn write_back_insn() -> WriteBackInsn {
    let f = super::cpu::features();
    if f.clwb {
        WriteBackInsn::Clwb
    } else if f.clflushopt {
        WriteBackInsn::Clflushopt
    } else {
        WriteBackInsn::Clflush
    }
}

/// Write back every line overlapping `[addr, addr+len)`; keeps the lines cached
/// when CLWB is available.
///
/// # Safety
/// The range must be mapped.
pub unsafe fn write_back(addr: u64, len: u64, insn: WriteBackInsn) {
    if len == 0 {
        return;
    }
    let mut p = addr & !(LINE - 1);
    let end = addr + len;
    while p < end {
        // SAFETY: the caller guarantees the range is mapped; these instructions only
        // affect cache state for the line containing `p`.
        unsafe {
            match insn {
                WriteBackInsn::Clwb => {
                    asm!("clwb [{}]", in(reg) p, options(nostack, preserves_flags))
                }
                WriteBackInsn::Clflushopt => {
                    asm!("clflushopt [{}]", in(reg) p, options(nostack, preserves_flags))
                }
                WriteBackInsn::Clflush => {
                    asm!("clflush [{}]", in(reg) p, options(nostack, preserves_flags))
                }
            }
        }
        p += LINE;
    }
}

/// Invalidate (write back if dirty, then drop) every line overlapping the range,
/// so the next load comes from memory. CLFLUSH is ordered with respect to loads.
///
/// # Safety
/// The range must be mapped.
pub unsafe fn invalidate(addr: u64, len: u64) {
    if len == 0 {
        return;
    }
    let mut p = addr & !(LINE - 1);
    let end = addr + len;
    while p < end {
        // SAFETY: as in `write_back`.
        unsafe { asm!("clflush [{}]", in(reg) p, options(nostack, preserves_flags)) };
        p += LINE;
    }
    full_fence();
}

/// SFENCE: earlier stores and write-backs are globally visible before later stores.
pub fn store_fence() {
    // SAFETY: a fence has no memory-safety effects.
    unsafe { asm!("sfence", options(nostack, preserves_flags)) };
}

/// MFENCE: full ordering of loads, stores and flushes.
pub fn full_fence() {
    // SAFETY: a fence has no memory-safety effects.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
}
