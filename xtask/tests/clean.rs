//! `cargo xtask clean`, through the real binary on a scratch target directory and cache:
//! one architecture, every output, then the download cache only when asked.

use std::path::Path;
use std::process::Command;

fn clean(target: &Path, cache: &Path, args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("clean")
        .args(args)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target)
        .env("BUSYROOT_CACHE", cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "clean {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn clean_removes_outputs_and_keeps_the_cache_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (target, cache) = (dir.path().join("target"), dir.path().join("cache"));
    for file in ["busyroot/riscv64/rootfs.ext4", "busyroot/x86_64/rootfs.ext4", "debug/keep"] {
        let path = target.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "x").unwrap();
    }
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("busybox-1.37.0.tar.bz2"), "x").unwrap();

    clean(&target, &cache, &["--arch", "riscv64"]);
    assert!(!target.join("busyroot/riscv64").exists());
    assert!(target.join("busyroot/x86_64/rootfs.ext4").exists());

    clean(&target, &cache, &[]);
    assert!(!target.join("busyroot").exists());
    assert!(target.join("debug/keep").exists(), "Cargo's own outputs stay");
    assert!(cache.join("busybox-1.37.0.tar.bz2").exists(), "the cache stays");

    clean(&target, &cache, &["--all"]);
    assert!(!cache.exists());
}
