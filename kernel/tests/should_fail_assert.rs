//! Proves the harness can fail: the second case's assertion fails, so the binary
//! must end with the failure status and the runner must see `FAILED`.
//! expect-exit: failure
//! expect-output: test passes ... ok
//! expect-output: test fails ... FAILED
//! expect-output: one plus one is not three
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};

entry_point!(main, config = &kernel::BOOTLOADER_CONFIG);

fn main(boot_info: &'static mut BootInfo) -> ! {
    kernel::init(boot_info);
    kernel::testing::run(
        "should_fail_assert",
        kernel::tests![passes, fails, never_reached],
    )
}

fn passes() {
    assert_eq!(core::hint::black_box(1) + 1, 2);
}

fn fails() {
    let three = core::hint::black_box(3);
    assert_eq!(1 + 1, three, "one plus one is not three");
}

fn never_reached() {
    panic!("the harness kept going after a failure");
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kernel::testing::test_panic(info)
}
