//! Inputs a dependent adds: overlay trees and a tar archive over busyroot's built-in skeleton,
//! and a device table in Buildroot's syntax, each read back from the images themselves.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use busyroot::config::Workspace;
use busyroot::context::Context;
use busyroot::image::Format;
use busyroot::inputs::{builtin_dir, Origin};
use busyroot::pipeline::rootfs::{Outputs, RootfsBuilder};

use crate::rootfs::{cpio_listing, ext4_listing, manifest_listing, tar_listing};
use crate::support::{self, have, run, skip};

const EPOCH: u64 = 1_700_000_000;

/// A checkout whose BusyBox is already built, with the default (built-in) inputs
/// and `edit` applied to its configuration; `Err` holds the reason to skip.
fn checkout(root: &Path, edit: impl FnOnce(&mut Workspace)) -> Result<Workspace, String> {
    let mut ws = support::built_checkout(root)?;
    ws.config.busybox.config = None;
    ws.config.skeleton = None;
    ws.config.device_table = None;
    edit(&mut ws);
    Ok(ws)
}

fn build(ws: &Workspace) -> Outputs {
    let mut ctx = Context::new(ws.clone()).unwrap();
    ctx.fetch_options(support::offline_fetch()).source_date_epoch(EPOCH);
    let builder = RootfsBuilder::new(ctx);
    let sh = xshell::Shell::new().unwrap();
    builder.build(&sh, &support::Eprint).expect("build the layered rootfs")
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A gzip-compressed tar with a file, a directory and a device owned by others than root, and
/// a symlink.
fn overlay_tar(path: &Path) {
    let file = fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    let header = |kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(size);
        h.set_mtime(12345);
        h
    };
    let mut h = header(tar::EntryType::Directory, 0o750, 33, 33, 0);
    b.append_data(&mut h, "srv/data/", &[][..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o640, 1000, 100, 8);
    b.append_data(&mut h, "./etc/tarred.conf", &b"from tar"[..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o600, 0, 0, 9);
    b.append_data(&mut h, "etc/motd", &b"from tar\n"[..]).unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
    b.append_link(&mut h, "etc/localtime", "/usr/share/zoneinfo/UTC").unwrap();
    let mut h = header(tar::EntryType::Char, 0o660, 0, 0, 0);
    h.set_device_major(10).unwrap();
    h.set_device_minor(232).unwrap();
    b.append_data(&mut h, "dev/kvm", &[][..]).unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

/// The contents of `files` as each of the three images holds them.
fn contents(outputs: &Outputs, files: &[&str]) -> [Vec<String>; 3] {
    let mut from_tar = vec![String::new(); files.len()];
    let mut archive = tar::Archive::new(fs::File::open(outputs.path(Format::Tar)).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().trim_start_matches('.').to_string();
        if let Some(i) = files.iter().position(|f| *f == name) {
            entry.read_to_string(&mut from_tar[i]).unwrap();
        }
    }
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(outputs.path(Format::CpioGz)).unwrap())
        .read_to_end(&mut cpio)
        .unwrap();
    let scratch = support::tempdir();
    let sh = xshell::Shell::new().unwrap();
    let _dir = sh.push_dir(scratch.path());
    // Only the named files: unpacking device nodes would need root.
    let patterns: Vec<&str> = files.iter().map(|f| &f[1..]).collect();
    xshell::cmd!(sh, "cpio -i -d --quiet --no-absolute-filenames {patterns...}")
        .stdin(&cpio)
        .quiet()
        .run()
        .expect("unpack the initramfs with cpio");
    let from_cpio = files
        .iter()
        .map(|f| fs::read_to_string(scratch.path().join(&f[1..])).unwrap_or_default())
        .collect();
    let image = outputs.path(Format::Ext4).to_str().unwrap();
    let from_ext4 =
        files.iter().map(|f| run("debugfs", &["-R", &format!("cat {f}"), image], None)).collect();
    [from_tar, from_cpio, from_ext4]
}

#[test]
fn two_overlay_trees_and_a_tar_layer_over_the_builtin_skeleton() {
    let test = "two_overlay_trees_and_a_tar_layer_over_the_builtin_skeleton";
    if !have("debugfs") || !have("cpio") {
        return skip(test, "debugfs or cpio is not installed");
    }
    let dir = support::tempdir();
    let root = dir.path().join("project");
    let Some(ws) = support::or_skip(
        test,
        checkout(&root, |ws| {
            let layer = |name: &str| PathBuf::from("overlays").join(name);
            write(&ws.path(&layer("one/etc/motd")), "from one\n", 0o644);
            write(&ws.path(&layer("one/etc/hostname")), "layered\n", 0o600);
            write(&ws.path(&layer("one/usr/bin/hello")), "#!/bin/sh\necho hello\n", 0o700);
            write(&ws.path(&layer("two/etc/motd")), "from two\n", 0o644);
            write(&ws.path(&layer("two/opt/two/readme")), "two\n", 0o644);
            overlay_tar(&ws.path(&layer("three.tar.gz")));
            ws.config.overlays = vec![layer("one"), layer("two"), layer("three.tar.gz")];
        }),
    ) else {
        return;
    };
    let outputs = build(&ws);

    let builtin: Vec<_> = outputs.inputs.iter().filter(|i| i.origin == Origin::BuiltIn).collect();
    assert_eq!(builtin.len(), 3, "busybox config, skeleton and table are busyroot's own");
    assert!(outputs.inputs.iter().any(|i| i.to_string() == "overlays: overlays/two (configured)"));
    let skeleton = outputs.inputs.iter().find(|i| i.key == "skeleton").unwrap();
    assert_eq!(skeleton.path, builtin_dir().join("rootfs-skel"));

    let manifest = {
        let builder = RootfsBuilder::new(Context::new(ws.clone()).unwrap());
        builder.manifest(&outputs.dir.join("install"), EPOCH).unwrap()
    };
    let expected = manifest_listing(&manifest);
    for (path, line) in [
        ("/etc/inittab", "- 0644 0:0"), // the built-in skeleton is still there
        ("/etc/hostname", "- 0644 0:0"), // trees are normalised to 0644 / 0755, owned 0:0
        ("/usr/bin/hello", "- 0755 0:0"),
        ("/opt/two/readme", "- 0644 0:0"),
        ("/etc/motd", "- 0600 0:0"), // the tar came last and keeps its mode
        ("/etc/tarred.conf", "- 0640 1000:100"),
        ("/srv/data", "d 0750 33:33"),
        ("/srv", "d 0755 0:0"),
        ("/etc/localtime", "l 0777 0:0 /usr/share/zoneinfo/UTC"),
        ("/dev/kvm", "c 0660 0:0 10,232"),
        ("/dev/console", "c 0600 0:0 5,1"), // the built-in table still applies
    ] {
        assert_eq!(expected.get(path).map(String::as_str), Some(line), "{path}");
    }
    assert_eq!(
        tar_listing(outputs.path(Format::Tar)),
        expected,
        "rootfs.tar differs from the manifest"
    );
    assert_eq!(cpio_listing(outputs.path(Format::CpioGz)), expected, "rootfs.cpio.gz differs");
    let paths: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(ext4_listing(outputs.path(Format::Ext4), &paths), expected, "rootfs.ext4 differs");

    let files = ["/etc/motd", "/etc/hostname", "/etc/tarred.conf", "/opt/two/readme"];
    let want = ["from tar\n", "layered\n", "from tar", "two\n"];
    for (output, got) in ["tar", "cpio", "ext4"].iter().zip(contents(&outputs, &files)) {
        assert_eq!(got, want, "file contents in rootfs.{output}");
    }
    run("e2fsck", &["-fn", outputs.path(Format::Ext4).to_str().unwrap()], None);
}

#[test]
fn a_buildroot_table_with_r_names_and_batches_reads_back_from_ext4() {
    let test = "a_buildroot_table_with_r_names_and_batches_reads_back_from_ext4";
    if !have("debugfs") {
        return skip(test, "debugfs is not installed");
    }
    let dir = support::tempdir();
    let root = dir.path().join("project");
    let Some(ws) = support::or_skip(
        test,
        checkout(&root, |ws| {
            // The image's own accounts: the built-in ones plus a web user and a disk group.
            let skel = builtin_dir().join("rootfs-skel/etc");
            let passwd = fs::read_to_string(skel.join("passwd")).unwrap();
            let group = fs::read_to_string(skel.join("group")).unwrap();
            write(
                &ws.path(Path::new("accounts/etc/passwd")),
                &(passwd + "www:x:33:33::/srv:/bin/false\n"),
                0o644,
            );
            write(
                &ws.path(Path::new("accounts/etc/group")),
                &(group + "www:x:33:\ndisk:x:6:\n"),
                0o644,
            );
            write(&ws.path(Path::new("site/srv/www/index.html")), "<p>hi</p>\n", 0o644);
            write(&ws.path(Path::new("site/srv/www/cgi/run")), "#!/bin/sh\n", 0o755);
            write(
                &ws.path(Path::new("table.txt")),
                "# <name>   <type> <mode> <uid> <gid> <major> <minor> <start> <inc> <count>\n\
             /srv/www     r      750    www   www   -       -       -       -     -\n\
             /srv/www/cgi d      700    www   0     -       -       -       -     -\n\
             /dev/hda     b      640    root  disk  3       1       1       1     4\n\
             /dev/uio     c      600    0     0     252     1       6       2     3\n\
             /dev/watch   c      600    daemon tty  10      130     4       1     1\n\
             /var/fifo    p      620    33    6     -       -       -       -     -\n",
                0o644,
            );
            ws.config.overlays = vec!["accounts".into(), "site".into()];
            ws.config.device_table =
                Some(vec![builtin_dir().join("device-table.txt"), "table.txt".into()]);
        }),
    ) else {
        return;
    };
    let outputs = build(&ws);
    let want = [
        ("/srv/www", "d 0750 33:33"),
        ("/srv/www/index.html", "- 0750 33:33"), // `r` sets every mode below, as makedevs does
        ("/srv/www/cgi", "d 0700 33:0"),         // a later line wins
        ("/srv/www/cgi/run", "- 0750 33:33"),
        ("/srv", "d 0755 0:0"),
        ("/dev/hda1", "b 0640 0:6 3,1"),
        ("/dev/hda4", "b 0640 0:6 3,4"),
        ("/dev/uio6", "c 0600 0:0 252,1"),
        ("/dev/uio7", "c 0600 0:0 252,3"),
        ("/dev/uio8", "c 0600 0:0 252,5"),
        ("/dev/watch", "c 0600 1:5 10,130"), // a count of 1 appends no number
        ("/var/fifo", "p 0620 33:6"),
        ("/dev/console", "c 0600 0:0 5,1"), // the first table still applies
    ];
    let paths: Vec<String> = want.iter().map(|(p, _)| p.to_string()).collect();
    let listing = ext4_listing(outputs.path(Format::Ext4), &paths);
    for (path, line) in want {
        assert_eq!(listing.get(path).map(String::as_str), Some(line), "{path} in rootfs.ext4");
    }
    let absent = run(
        "debugfs",
        &["-R", "stat /dev/hda5", outputs.path(Format::Ext4).to_str().unwrap()],
        None,
    );
    assert!(!absent.contains("Inode:"), "four members only: {absent}");
    run("e2fsck", &["-fn", outputs.path(Format::Ext4).to_str().unwrap()], None);
}
