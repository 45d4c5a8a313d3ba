//! The edit-boot loop: after one change of each kind of input, exactly the stages that depend
//! on it rerun, as the builder's own stage report says.

use std::path::Path;

use busyroot::config::{ImageSizeSetting, Workspace};
use busyroot::context::Context;
use busyroot::pipeline::busybox::Toolchain;
use busyroot::pipeline::rootfs::{Outputs, RootfsBuilder};

use crate::support;

const EPOCH: u64 = 1_700_000_000;

fn build(ws: &Workspace, epoch: u64, toolchain: Option<Toolchain>) -> Outputs {
    let mut ctx = Context::new(ws.clone()).unwrap();
    ctx.fetch_options(support::offline_fetch()).source_date_epoch(epoch);
    if let Some(t) = toolchain {
        ctx.toolchain(t);
    }
    let builder = RootfsBuilder::new(ctx);
    builder.build(&xshell::Shell::new().unwrap(), &support::Eprint).unwrap()
}

/// The names of the stages that ran.
fn ran(outputs: &Outputs) -> Vec<&str> {
    outputs.stages.iter().filter(|s| !s.fresh()).map(|s| s.name.as_str()).collect()
}

fn reason<'a>(outputs: &'a Outputs, stage: &str) -> &'a str {
    let s = outputs.stages.iter().find(|s| s.name == stage).unwrap();
    s.ran_because.as_deref().unwrap_or("fresh")
}

fn append(path: &Path, text: &str) {
    let mut content = std::fs::read_to_string(path).unwrap();
    content.push_str(text);
    std::fs::write(path, content).unwrap();
}

#[test]
fn each_input_reruns_exactly_the_stages_that_depend_on_it() {
    let test = "each_input_reruns_exactly_the_stages_that_depend_on_it";
    if busyroot::testing::slow(test) {
        return;
    }
    let dir = support::tempdir();
    // A checkout whose BusyBox tree is already built, copied from this run's own build.
    let Some(mut ws) = support::built_checkout_in(test, dir.path()) else { return };
    const IMAGES: [&str; 3] = ["rootfs.ext4", "rootfs.cpio.gz", "rootfs.tar"];

    let first = build(&ws, EPOCH, None);
    assert_eq!(ran(&first), IMAGES, "only the images are missing: {:?}", first.stages);
    assert_eq!(reason(&first, "rootfs.ext4"), "output missing");

    let again = build(&ws, EPOCH, None);
    assert_eq!(ran(&again), Vec::<&str>::new(), "nothing changed, nothing may run");
    assert_eq!(
        again.files.iter().map(|f| &f.sha256).collect::<Vec<_>>(),
        first.files.iter().map(|f| &f.sha256).collect::<Vec<_>>()
    );

    append(&ws.root.join("rootfs-skel/etc/profile"), "# edited\n");
    let skel = build(&ws, EPOCH, None);
    assert_eq!(ran(&skel), IMAGES, "a skeleton edit rewrites only the images");
    assert_eq!(reason(&skel, "rootfs.tar"), "manifest changed");

    append(&ws.root.join("device-table.txt"), "/mnt/data d 750 0 0 - - - - -\n");
    assert_eq!(ran(&build(&ws, EPOCH, None)), IMAGES, "a table edit rewrites only the images");

    ws.config.image.size = ImageSizeSetting::Mib(40);
    let resized = build(&ws, EPOCH, None);
    assert_eq!(ran(&resized), ["rootfs.ext4"], "an image setting rewrites only the ext4 image");
    assert_eq!(resized.files[0].size, 40 << 20);

    // Drop one applet: make rebuilds incrementally in the unpacked tree.
    let config = ws.root.join("busybox-config/.config");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("CONFIG_CAL=y\n"));
    std::fs::write(&config, text.replace("CONFIG_CAL=y\n", "# CONFIG_CAL is not set\n")).unwrap();
    let reconfigured = build(&ws, EPOCH, None);
    assert_eq!(
        ran(&reconfigured),
        ["configure", "build busybox", "install", "rootfs.ext4", "rootfs.cpio.gz", "rootfs.tar"],
        "a config edit reuses the unpacked tree"
    );
    assert_eq!(reason(&reconfigured, "configure"), "busybox config changed");
    assert_eq!(reconfigured.entries + 1, resized.entries, "the `cal` link is gone");

    let later = build(&ws, EPOCH + 1, None);
    assert_eq!(ran(&later), IMAGES, "a new SOURCE_DATE_EPOCH only restamps the images");
    assert_eq!(reason(&later, "rootfs.tar"), "manifest changed");

    // Debian's native compiler is also installed under its triplet name: same compiler,
    // different identity, so the build (and everything after it) must run again.
    if support::have("x86_64-linux-gnu-gcc") && cfg!(target_arch = "x86_64") {
        let prefixed = Toolchain {
            cross_compile: "x86_64-linux-gnu-".into(),
            cc: "x86_64-linux-gnu-gcc".into(),
        };
        let retooled = build(&ws, EPOCH + 1, Some(prefixed));
        assert_eq!(reason(&retooled, "build busybox"), "toolchain changed");
        assert_eq!(reason(&retooled, "unpack"), "fresh");
    } else {
        eprintln!("{test}: no x86_64-linux-gnu-gcc; the toolchain change is not exercised");
    }
}
