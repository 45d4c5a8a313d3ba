//! ELF headers: the one reader, for the machine a program or kernel was built for, whether
//! a program is linked dynamically, and the sections of an object (a kernel module's
//! `.modinfo`).

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
    const PT_INTERP: usize = 3;
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = uint(data, 32, 8)?;
    let (phentsize, phnum) = (uint(data, 54, 2)?, uint(data, 56, 2)?);
    let mut dynamic = false;
    for i in 0..phnum {
        dynamic |= uint(data, phoff.checked_add(i.checked_mul(phentsize)?)?, 4)? == PT_INTERP;
    }
    Some(Summary { machine: machine(data)?, dynamic })
}

/// The contents of the section called `name` in a little-endian ELF object of either class;
/// `None` when there is no such section or the headers lie outside `data`.
pub fn section<'a>(data: &'a [u8], name: &str) -> Option<&'a [u8]> {
    // The classes differ only in the width `w` of addresses and offsets, which moves the
    // fields after the first one.
    let w = match data.get(..6)? {
        b"\x7fELF\x01\x01" => 4,
        b"\x7fELF\x02\x01" => 8,
        _ => return None,
    };
    let shoff = uint(data, 0x18 + 2 * w, w)?;
    let [entry_size, count, names_index] = [0x22, 0x24, 0x26].map(|at| uint(data, at + 3 * w, 2));
    let header = |i: usize| data.get(shoff.checked_add(i.checked_mul(entry_size?)?)?..);
    let contents = |i: usize| {
        let header = header(i)?;
        let (offset, size) = (uint(header, 8 + 2 * w, w)?, uint(header, 8 + 3 * w, w)?);
        data.get(offset..offset.checked_add(size)?)
    };
    let names = contents(names_index?)?;
    (0..count?).find_map(|i| {
        let found = names.get(uint(header(i)?, 0, 4)?..)?.split(|&b| b == 0).next()?;
        (found == name.as_bytes()).then(|| contents(i)).flatten()
    })
}

/// The little-endian number `width` bytes wide (at most 8) at `at` in `data`.
fn uint(data: &[u8], at: usize, width: usize) -> Option<usize> {
    let mut bytes = [0u8; 8];
    bytes[..width].copy_from_slice(data.get(at..at.checked_add(width)?)?);
    usize::try_from(u64::from_le_bytes(bytes)).ok()
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

/// A minimal little-endian ELF object with addresses `w` bytes wide (4 or 8) holding
/// `sections`, then its section names.
#[cfg(test)]
pub(crate) fn test_object(w: usize, sections: &[(&str, &[u8])]) -> Vec<u8> {
    let put = |data: &mut [u8], at: usize, width: usize, value: usize| {
        data[at..at + width].copy_from_slice(&(value as u64).to_le_bytes()[..width]);
    };
    let mut data = vec![0; 64];
    data[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', w as u8 / 4, 1]);
    let (mut names, mut headers) = (vec![0], vec![[0; 3]]);
    for (name, contents) in sections {
        headers.push([names.len(), data.len(), contents.len()]);
        names.extend_from_slice(&[name.as_bytes(), b"\0"].concat());
        data.extend_from_slice(contents);
    }
    let names_at = names.len();
    names.extend_from_slice(b".shstrtab\0");
    headers.push([names_at, data.len(), names.len()]);
    data.extend_from_slice(&names);
    data.resize(data.len().next_multiple_of(8), 0);
    let (entry_size, count, shoff) = (16 + 6 * w, headers.len(), data.len());
    // e_shoff, e_shentsize, e_shnum and e_shstrndx.
    put(&mut data, 0x18 + 2 * w, w, shoff);
    put(&mut data, 0x22 + 3 * w, 2, entry_size);
    put(&mut data, 0x24 + 3 * w, 2, count);
    put(&mut data, 0x26 + 3 * w, 2, count - 1);
    for [name, offset, size] in headers {
        let mut entry = vec![0; entry_size];
        put(&mut entry, 0, 4, name);
        put(&mut entry, 8 + 2 * w, w, offset);
        put(&mut entry, 8 + 3 * w, w, size);
        data.extend_from_slice(&entry);
    }
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
            assert!(section(&me, ".text").is_some_and(|text| !text.is_empty()));
        }
    }

    #[test]
    fn sections_of_objects_of_either_class() {
        for w in [4, 8] {
            let object = test_object(w, &[(".text", b"code"), (".modinfo", b"license=GPL\0")]);
            assert_eq!(section(&object, ".modinfo"), Some(&b"license=GPL\0"[..]), "{w}");
            assert_eq!(section(&object, ".text"), Some(&b"code"[..]), "{w}");
            assert_eq!(section(&object, ".data"), None, "{w}");
            // Section headers cut off.
            assert_eq!(section(&object[..100], ".text"), None, "{w}");
        }
        assert_eq!(section(b"\x7fELF\x02\x02 big-endian", ".text"), None, "big-endian");
    }
}
