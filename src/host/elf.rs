//! ELF headers: the one reader, for the machine a program or kernel was built for and whether
//! a program is linked dynamically.

/// The parts of an ELF header busyroot checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// `e_machine`.
    pub machine: u16,
    /// Whether a program header names an interpreter (`PT_INTERP`): a dynamic program.
    pub dynamic: bool,
}

/// `e_machine` of a little-endian ELF file of either class (every arch busyroot supports is
/// little-endian); `None` for anything else.
pub fn machine(head: &[u8]) -> Option<u16> {
    if head.get(..4)? != b"\x7fELF" || head.get(5) != Some(&1) {
        return None;
    }
    Some(u16::from_le_bytes([*head.get(18)?, *head.get(19)?]))
}

/// Reads a 64-bit little-endian ELF file's header and program headers; `None` for anything
/// else, or when the program headers lie outside `data`.
pub fn summary(data: &[u8]) -> Option<Summary> {
    const PT_INTERP: u32 = 3;
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(32)?).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(54)?), usize::from(u16_at(56)?));
    let mut dynamic = false;
    for i in 0..phnum {
        dynamic |= u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP;
    }
    Some(Summary { machine: machine(data)?, dynamic })
}

/// A minimal 64-bit little-endian ELF header for `machine` with one program header of type
/// `p_type`.
#[cfg(test)]
pub(crate) fn test_file(machine: u16, p_type: u32) -> Vec<u8> {
    let mut data = b"\x7fELF\x02\x01\x01".to_vec();
    data.resize(64 + 56, 0);
    data[18..20].copy_from_slice(&machine.to_le_bytes());
    data[32..40].copy_from_slice(&64u64.to_le_bytes());
    data[54..56].copy_from_slice(&56u16.to_le_bytes());
    data[56..58].copy_from_slice(&1u16.to_le_bytes());
    data[64..68].copy_from_slice(&p_type.to_le_bytes());
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;

    #[test]
    fn elf_headers_tell_machine_and_linking() {
        let aarch64 = Arch::Aarch64.info().elf_machine;
        let load = summary(&test_file(aarch64, 1)).unwrap();
        assert_eq!(load, Summary { machine: aarch64, dynamic: false });
        assert!(summary(&test_file(aarch64, 3)).unwrap().dynamic);
        assert_eq!(summary(b"#!/bin/sh\n"), None);
        assert_eq!(machine(b"\x7fELF\x02\x01"), None, "too short for e_machine");
        // A header whose program headers lie past the end of the file is not trusted.
        assert_eq!(summary(&test_file(aarch64, 1)[..66]), None);

        // The test binary itself: an ELF program for the host.
        if let Some(host) = Arch::host() {
            let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
            assert_eq!(summary(&me).unwrap().machine, host.info().elf_machine);
        }
    }
}
