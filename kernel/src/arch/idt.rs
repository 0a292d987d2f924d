//! Exception handling: every CPU exception (vectors 0–31) is fatal for the device.
//! The handler prints a readable report (vector name, error code, RIP, CR2 for page
//! faults, registers) on serial and leaves QEMU with the failure status.
//!
//! Stable Rust has no `x86-interrupt` ABI, so each vector gets a small naked entry
//! stub that pushes a uniform frame and calls [`exception_report`].

use core::arch::naked_asm;
use spin::LazyLock;
use x86_64::VirtAddr;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::InterruptDescriptorTable;

use crate::exit::{ExitCode, exit_qemu};

/// What the entry stubs leave on the stack, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // pushed by the CPU
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<ExceptionFrame>() == 22 * 8);

/// Names of the architectural exception vectors.
pub fn vector_name(v: u64) -> &'static str {
    match v {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        2 => "non-maskable interrupt",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point (#XM)",
        20 => "virtualization (#VE)",
        21 => "control protection (#CP)",
        28 => "hypervisor injection (#HV)",
        29 => "VMM communication (#VC)",
        30 => "security exception (#SX)",
        _ => "reserved/unknown",
    }
}

extern "C" fn exception_report(frame: &ExceptionFrame) -> ! {
    let name = vector_name(frame.vector);
    crate::serial::force_write_fmt(format_args!(
        "\n!!! CPU EXCEPTION {} ({name}) error_code={:#x}\n    RIP={:#018x} CS={:#x} RFLAGS={:#x} RSP={:#018x} SS={:#x}\n",
        frame.vector, frame.error_code, frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss
    ));
    if frame.vector == 14 {
        let cr2 = Cr2::read_raw();
        let e = frame.error_code;
        crate::serial::force_write_fmt(format_args!(
            "    CR2={cr2:#018x} ({} {} access, {} mode{})\n",
            if e & 1 != 0 {
                "protection violation on"
            } else {
                "non-present page on"
            },
            if e & 0x10 != 0 {
                "instruction-fetch"
            } else if e & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if e & 4 != 0 { "user" } else { "kernel" },
            if e & 8 != 0 { ", reserved bit set" } else { "" },
        ));
    }
    crate::serial::force_write_fmt(format_args!(
        "    RAX={:#x} RBX={:#x} RCX={:#x} RDX={:#x}\n    RSI={:#x} RDI={:#x} RBP={:#x}\n    R8={:#x} R9={:#x} R10={:#x} R11={:#x}\n    R12={:#x} R13={:#x} R14={:#x} R15={:#x}\nexit: failure (exception)\n",
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15
    ));
    exit_qemu(ExitCode::Failed)
}

/// Common tail of every stub: save general registers, pass the frame pointer.
/// Stack on entry to this code: vector, error code, CPU frame (16-byte aligned
/// before the CPU pushed), so after 15 pushes RSP is 16-byte aligned again.
#[unsafe(naked)]
extern "C" fn exception_common() {
    naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14",
        "push r15",
        "mov rdi, rsp",
        "cld",
        "call {report}",
        "ud2",
        report = sym exception_report,
    )
}

macro_rules! stub {
    ($name:ident, $vec:literal, noerr) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!("push 0", concat!("push ", $vec), "jmp {c}", c = sym exception_common)
        }
    };
    ($name:ident, $vec:literal, err) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!(concat!("push ", $vec), "jmp {c}", c = sym exception_common)
        }
    };
}

stub!(v0, 0, noerr);
stub!(v1, 1, noerr);
stub!(v2, 2, noerr);
stub!(v3, 3, noerr);
stub!(v4, 4, noerr);
stub!(v5, 5, noerr);
stub!(v6, 6, noerr);
stub!(v7, 7, noerr);
stub!(v8, 8, err);
stub!(v10, 10, err);
stub!(v11, 11, err);
stub!(v12, 12, err);
stub!(v13, 13, err);
stub!(v14, 14, err);
stub!(v16, 16, noerr);
stub!(v17, 17, err);
stub!(v18, 18, noerr);
stub!(v19, 19, noerr);
stub!(v20, 20, noerr);
stub!(v21, 21, err);
stub!(v28, 28, noerr);
stub!(v29, 29, err);
stub!(v30, 30, err);

fn addr(f: extern "C" fn()) -> VirtAddr {
    VirtAddr::new(f as usize as u64)
}

static IDT: LazyLock<InterruptDescriptorTable> = LazyLock::new(|| {
    let mut idt = InterruptDescriptorTable::new();
    // SAFETY: every address is one of the naked stubs above, which build an
    // `ExceptionFrame` matching the vector's error-code convention and never return.
    unsafe {
        idt.divide_error.set_handler_addr(addr(v0));
        idt.debug.set_handler_addr(addr(v1));
        idt.non_maskable_interrupt.set_handler_addr(addr(v2));
        idt.breakpoint.set_handler_addr(addr(v3));
        idt.overflow.set_handler_addr(addr(v4));
        idt.bound_range_exceeded.set_handler_addr(addr(v5));
        idt.invalid_opcode.set_handler_addr(addr(v6));
        idt.device_not_available.set_handler_addr(addr(v7));
        idt.double_fault
            .set_handler_addr(addr(v8))
            .set_stack_index(super::gdt::DOUBLE_FAULT_IST);
        idt.invalid_tss.set_handler_addr(addr(v10));
        idt.segment_not_present.set_handler_addr(addr(v11));
        idt.stack_segment_fault.set_handler_addr(addr(v12));
        idt.general_protection_fault.set_handler_addr(addr(v13));
        idt.page_fault.set_handler_addr(addr(v14));
        idt.x87_floating_point.set_handler_addr(addr(v16));
        idt.alignment_check.set_handler_addr(addr(v17));
        idt.machine_check.set_handler_addr(addr(v18));
        idt.simd_floating_point.set_handler_addr(addr(v19));
        idt.virtualization.set_handler_addr(addr(v20));
        idt.cp_protection_exception.set_handler_addr(addr(v21));
        idt.hv_injection_exception.set_handler_addr(addr(v28));
        idt.vmm_communication_exception.set_handler_addr(addr(v29));
        idt.security_exception.set_handler_addr(addr(v30));
        idt[super::apic::TIMER_VECTOR].set_handler_addr(addr(super::apic::timer_entry));
        idt[0xff].set_handler_addr(addr(super::apic::spurious_entry));
    }
    idt
});

/// Load the IDT.
pub fn init() {
    IDT.load();
}
