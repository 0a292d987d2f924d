//! Platform structure parsers (ACPI, PCI, CXL) and small pure helpers the kernel
//! needs at boot. Everything here takes untrusted bytes and returns errors, never panics.

pub mod cedt;
pub mod clock;
pub mod cxl;
pub mod pci;
pub mod rtc;
