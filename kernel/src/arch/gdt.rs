//! GDT with a TSS whose IST slot 0 is a dedicated double-fault stack.

use spin::LazyLock;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST index used by the double-fault (and page-fault) handlers.
pub const DOUBLE_FAULT_IST: u16 = 0;
const STACK_SIZE: usize = 32 * 1024;

#[repr(align(16))]
#[allow(dead_code)] // only the address of the stack is used
struct Stack([u8; STACK_SIZE]);
static mut DF_STACK: Stack = Stack([0; STACK_SIZE]);

static TSS: LazyLock<TaskStateSegment> = LazyLock::new(|| {
    let mut tss = TaskStateSegment::new();
    let start = VirtAddr::from_ptr(&raw const DF_STACK);
    tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = start + STACK_SIZE as u64;
    tss
});

struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static GDT: LazyLock<(GlobalDescriptorTable, Selectors)> = LazyLock::new(|| {
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss = gdt.append(Descriptor::tss_segment(&TSS));
    (gdt, Selectors { code, data, tss })
});

/// Load the GDT, reload segment registers and the task register.
pub fn init() {
    GDT.0.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which lives
    // for the whole run (static).
    unsafe {
        CS::set_reg(GDT.1.code);
        SS::set_reg(GDT.1.data);
        DS::set_reg(GDT.1.data);
        ES::set_reg(GDT.1.data);
        load_tss(GDT.1.tss);
    }
}
