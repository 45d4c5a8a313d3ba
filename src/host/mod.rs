//! The host layer: what busyroot needs from the machine it runs on, apart from any one
//! pipeline step.

pub mod elf;
pub mod exec;
pub mod extract;
pub mod fetch;
pub mod fs;
pub mod kconfig;
pub mod lock;
pub mod toolchain;
pub mod tools;
