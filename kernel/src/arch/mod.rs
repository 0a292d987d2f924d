//! x86_64 architecture primitives: descriptor tables, exceptions, CPU features, time.

pub mod apic;
pub mod cache;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod time;

/// Halt the CPU forever with interrupts masked.
pub fn halt_forever() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}
