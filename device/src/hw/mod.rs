//! Platform structure parsers (ACPI, PCI, CXL).
