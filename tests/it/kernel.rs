//! The kernel build: on a real Linux source, the shipped fragments survive the merge and an
//! option lost to an unmet dependency (or unknown to the kernel) is reported by name; on a
//! stand-in source whose make only copies files, a build with nothing changed is fresh and a
//! changed fragment rebuilds.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use busyroot::arch::Arch;
use busyroot::config::Workspace;
use busyroot::context::Context;
use busyroot::pipeline::busybox::Toolchain;
use busyroot::pipeline::kernel::{KernelBuilder, KernelSource};
use busyroot::progress::Silent;
use busyroot::Error;

use crate::support::{self, skip, Eprint};

/// Debian's `linux-source-6.1` package puts its tarball here; CI installs it.
const DEBIAN_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The unpacked Debian source, shared by the tests (unpacked once into the workspace's
/// target directory, as `cargo xtask kernel --source` would); `Err` is the reason to skip.
fn source_tree() -> Result<&'static Path, String> {
    static TREE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TREE.get_or_init(|| {
        if !Path::new(DEBIAN_SOURCE).is_file() {
            return Err(format!("`{DEBIAN_SOURCE}` is missing; apt-get install linux-source-6.1"));
        }
        let mut builder = KernelBuilder::new(Context::new(support::workspace()).unwrap());
        builder.source(KernelSource::Tarball(DEBIAN_SOURCE.into()));
        let sh = xshell::Shell::new().unwrap();
        Ok(builder.prepare_source(&sh, &Eprint).expect("unpack the kernel source"))
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(Clone::clone)
}

/// This workspace with the fragments in `fragments` and a throw-away target directory, so the
/// workspace's own kernel build is left alone.
fn workspace_with(fragments: &Path, target: &Path) -> Workspace {
    let mut ws = support::workspace();
    ws.target_dir = target.to_path_buf();
    ws.config.kernel.fragments = Some(fragments.to_path_buf());
    ws
}

/// A builder configuring `tree` for `arch` in [`workspace_with`].
fn builder(tree: &Path, arch: Arch, fragments: &Path, target: &Path) -> KernelBuilder {
    let mut builder =
        KernelBuilder::new(Context::for_arch(workspace_with(fragments, target), arch));
    builder.source(KernelSource::Tree(tree.to_path_buf()));
    builder
}

/// The toolchain for `arch`, or why there is none.
fn toolchain(arch: Arch) -> Result<Toolchain, String> {
    Toolchain::find(arch).map_err(|e| e.to_string())
}

#[test]
fn shipped_fragments_survive_the_merge_on_every_arch_with_a_compiler() {
    let test = "shipped_fragments_survive_the_merge_on_every_arch_with_a_compiler";
    if busyroot::testing::slow(test) {
        return;
    }
    let Some(tree) = support::or_skip(test, source_tree()) else { return };
    let fragments = support::workspace().root.join("kernel-config");
    let sh = xshell::Shell::new().unwrap();
    for arch in Arch::ALL {
        if let Err(reason) = toolchain(arch) {
            // Only the host's own compiler is required; cross compilers are optional.
            if Arch::host() == Some(arch) {
                return skip(test, &reason);
            }
            eprintln!("{test}: not checking {arch}: {reason}");
            continue;
        }
        let target = support::tempdir();
        let configured = builder(tree, arch, &fragments, target.path())
            .configure(&sh, &Eprint)
            .unwrap_or_else(|e| panic!("configure {arch}: {e}"));
        let config = std::fs::read_to_string(configured.build_dir.join(".config")).unwrap();
        for option in [
            "CONFIG_64BIT=y",
            "CONFIG_VIRTIO_BLK=y",
            "CONFIG_VIRTIO_CONSOLE=y",
            "CONFIG_VIRTIO_FS=y",
        ] {
            assert!(config.lines().any(|l| l == option), "{arch}: {option} missing");
        }
    }
}

#[test]
fn a_fragment_option_lost_in_the_merge_is_reported_by_name() {
    let test = "a_fragment_option_lost_in_the_merge_is_reported_by_name";
    if busyroot::testing::slow(test) {
        return;
    }
    let Some(tree) = support::or_skip(test, source_tree()) else { return };
    let Some(arch) = Arch::host() else { return skip(test, "unsupported host architecture") };
    if let Err(reason) = toolchain(arch) {
        return skip(test, &reason);
    }
    let dir = support::tempdir();
    let fragments = dir.path().join("kernel-config");
    support::copy_tree(&support::workspace().root.join("kernel-config"), &fragments);
    // virtio-net needs CONFIG_NETDEVICES, which nothing enables; the second option does not
    // exist at all.
    let arch_fragment = fragments.join(format!("{arch}.config"));
    let mut text = std::fs::read_to_string(&arch_fragment).unwrap();
    text.push_str("CONFIG_VIRTIO_NET=y\nCONFIG_BUSYROOT_NO_SUCH_OPTION=y\n");
    std::fs::write(&arch_fragment, text).unwrap();

    let sh = xshell::Shell::new().unwrap();
    let err = builder(tree, arch, &fragments, &dir.path().join("target"))
        .configure(&sh, &Eprint)
        .expect_err("a lost option must fail the configuration");
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    let err = err.to_string();
    let shown = arch_fragment.display();
    assert!(err.contains("lost 2 option(s)"), "only the two bad options are lost: {err}");
    assert!(
        err.contains(&format!(
            "CONFIG_VIRTIO_NET=y requested by `{shown}` was dropped (unmet dependency?)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "CONFIG_BUSYROOT_NO_SUCH_OPTION=y requested by `{shown}` is not an option of this \
             kernel"
        )),
        "{err}"
    );
}

/// A tarball of a stand-in Linux tree: its Makefile answers the targets busyroot runs
/// (`allnoconfig` writing the options of `$KCONFIG_ALLCONFIG` but dropping
/// `CONFIG_NEEDS_MISSING`, and the image as a copy of `.config`), and counts builds in
/// `$(O)/builds`.
fn fake_linux_tarball(dir: &Path, arch: Arch) -> PathBuf {
    let image = arch.info().kernel_image;
    let image_dir = Path::new(image).parent().unwrap().display().to_string();
    let makefile = format!(
        "allnoconfig:\n\tprintf 'CONFIG_BASE=y\\n' > $(O)/.config\n\
         \tsed '/^CONFIG_NEEDS_MISSING=/d' $(KCONFIG_ALLCONFIG) >> $(O)/.config\n\
         bzImage Image:\n\tmkdir -p $(O)/{image_dir}\n\tcp $(O)/.config $(O)/{image}\n\
         \tprintf 'ELF of\\n' | cat - $(O)/.config > $(O)/vmlinux\n\
         \techo built >> $(O)/builds\n"
    );
    let files: [(&str, &str, u32); 2] = [
        ("linux-fake/Makefile", &makefile, 0o644),
        ("linux-fake/Kconfig", "config BASE\n\tbool\n", 0o644),
    ];
    let mut tar = tar::Builder::new(Vec::new());
    for (name, text, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, text.as_bytes()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
    let path = dir.join("linux-fake.tar.gz");
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    path
}

/// A fragments directory in `dir` for the stand-in source: `CONFIG_A=y` in common.config and
/// an empty fragment for `arch`, whose path is returned beside the directory's.
fn fake_fragments(dir: &Path, arch: Arch) -> (PathBuf, PathBuf) {
    let fragments = dir.join("kernel-config");
    std::fs::create_dir(&fragments).unwrap();
    std::fs::write(fragments.join("common.config"), "CONFIG_A=y\n").unwrap();
    let arch_fragment = fragments.join(format!("{arch}.config"));
    std::fs::write(&arch_fragment, "").unwrap();
    (fragments, arch_fragment)
}

#[test]
fn a_second_build_with_nothing_changed_is_fresh_and_a_changed_fragment_rebuilds() {
    let test = "a_second_build_with_nothing_changed_is_fresh_and_a_changed_fragment_rebuilds";
    let Some(arch) = Arch::host() else { return skip(test, "unsupported host architecture") };
    let dir = support::tempdir();
    let (fragments, arch_fragment) = fake_fragments(dir.path(), arch);
    let ws = workspace_with(&fragments, &dir.path().join("target"));
    let mut ctx = Context::for_arch(ws.clone(), arch);
    ctx.toolchain(Toolchain { cross_compile: String::new(), cc: "gcc".into() })
        .source_date_epoch(1_700_000_000);
    let mut builder = KernelBuilder::new(ctx);
    builder.source(KernelSource::Tarball(fake_linux_tarball(dir.path(), arch)));
    let sh = xshell::Shell::new().unwrap();
    let builds = builder.context().layout().kernel_build().join("builds");
    let count = || std::fs::read_to_string(&builds).unwrap().lines().count();

    let first = match builder.build(&sh, &Silent) {
        Err(e @ Error::MissingTools { .. }) => return skip(test, &e.to_string()),
        result => result.unwrap(),
    };
    assert!(!first.fresh);
    assert_eq!(first.image, builder.context().layout().kernel_image());
    assert!(first.image.is_file());
    assert_eq!(first.config, first.image.with_file_name(".config"));
    let image = std::fs::read_to_string(&first.image).unwrap();
    assert!(image.starts_with("CONFIG_BASE=y\nCONFIG_A=y\n"), "{image}");
    assert_eq!(std::fs::read_to_string(&first.config).unwrap(), image);
    // The ELF `vmlinux` the image's build linked is kept beside it.
    assert_eq!(first.vmlinux, first.image.with_file_name("vmlinux"));
    assert_eq!(std::fs::read_to_string(&first.vmlinux).unwrap(), format!("ELF of\n{image}"));

    let second = builder.build(&sh, &Silent).unwrap();
    assert!(second.fresh, "nothing changed, so nothing may run");
    assert_eq!(count(), 1);

    std::fs::write(&arch_fragment, "CONFIG_B=y\n").unwrap();
    let third = builder.build(&sh, &Silent).unwrap();
    assert!(!third.fresh);
    assert_eq!(count(), 2);
    assert!(std::fs::read_to_string(&third.image).unwrap().contains("CONFIG_B=y"));

    // A lost option stops the build before make and leaves the last good kernel in place.
    std::fs::write(&arch_fragment, "CONFIG_B=y\nCONFIG_NEEDS_MISSING=y\n").unwrap();
    let err = builder.build(&sh, &Silent).unwrap_err().to_string();
    assert!(err.contains("CONFIG_NEEDS_MISSING=y requested by"), "{err}");
    assert_eq!(count(), 2);
    assert!(std::fs::read_to_string(&third.image).unwrap().contains("CONFIG_B=y"));
}

#[test]
fn the_kernel_cache_serves_another_checkout_only_while_every_input_matches() {
    let test = "the_kernel_cache_serves_another_checkout_only_while_every_input_matches";
    let Some(arch) = Arch::host() else { return skip(test, "unsupported host architecture") };
    let dir = support::tempdir();
    let (fragments, arch_fragment) = fake_fragments(dir.path(), arch);
    let tarball = fake_linux_tarball(dir.path(), arch);
    // A compiler whose version the test changes: only `--version` is ever asked of it.
    let cc = dir.path().join("cc");
    let set_compiler_version = |version: &str| {
        std::fs::write(&cc, format!("#!/bin/sh\necho 'fake cc {version}'\n")).unwrap();
        std::fs::set_permissions(&cc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    set_compiler_version("1");
    let cache = dir.path().join("cache");
    // Each checkout has its own target directory; they share only the cache.
    let checkout = |name: &str| {
        let mut ctx = Context::for_arch(workspace_with(&fragments, &dir.path().join(name)), arch);
        ctx.toolchain(Toolchain { cross_compile: String::new(), cc: cc.display().to_string() })
            .source_date_epoch(1_700_000_000);
        let mut builder = KernelBuilder::new(ctx);
        builder.source(KernelSource::Tarball(tarball.clone())).cache(cache.clone());
        builder
    };
    let builds = |builder: &KernelBuilder| {
        std::fs::read_to_string(builder.context().layout().kernel_build().join("builds"))
            .map_or(0, |t| t.lines().count())
    };
    let sh = xshell::Shell::new().unwrap();

    let first = checkout("one");
    let built = match first.build(&sh, &Silent) {
        Err(e @ Error::MissingTools { .. }) => return skip(test, &e.to_string()),
        result => result.unwrap(),
    };
    assert_eq!(builds(&first), 1);

    // Same inputs in a new checkout: the kernel comes from the cache, make never runs.
    let second = checkout("two");
    let reused = second.build(&sh, &Silent).unwrap();
    assert_eq!(builds(&second), 0, "a matching cache entry must be reused");
    assert!(!reused.fresh);
    assert_eq!(std::fs::read(&reused.image).unwrap(), std::fs::read(&built.image).unwrap());
    assert_eq!(std::fs::read(&reused.config).unwrap(), std::fs::read(&built.config).unwrap());
    assert!(second.build(&sh, &Silent).unwrap().fresh, "and it is fresh from then on");

    // A changed fragment is a new key: the third checkout builds, and gets the new option.
    std::fs::write(&arch_fragment, "CONFIG_B=y\n").unwrap();
    let third = checkout("three");
    let rebuilt = third.build(&sh, &Silent).unwrap();
    assert_eq!(builds(&third), 1, "a changed fragment must never reuse a cached kernel");
    assert!(std::fs::read_to_string(&rebuilt.image).unwrap().contains("CONFIG_B=y"));

    // So is a new compiler version.
    set_compiler_version("2");
    let fourth = checkout("four");
    fourth.build(&sh, &Silent).unwrap();
    assert_eq!(builds(&fourth), 1, "a changed compiler must never reuse a cached kernel");
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries, 3, "one entry for each distinct set of inputs");
}

#[test]
fn the_pinned_release_is_fetched_like_busybox_with_mirror_and_offline_errors() {
    let test = "the_pinned_release_is_fetched_like_busybox_with_mirror_and_offline_errors";
    let Some(arch) = Arch::host() else { return skip(test, "unsupported host architecture") };
    let dir = support::tempdir();
    let ws = workspace_with(&support::workspace().root.join("kernel-config"), dir.path());
    let name = ws.config.kernel.source().file_name;
    let pinned = ws.config.kernel.sha256.clone();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    let mut ctx = Context::for_arch(ws, arch);
    ctx.toolchain(Toolchain { cross_compile: String::new(), cc: "gcc".into() });
    let fetch = |mirror: Option<&Path>| busyroot::host::fetch::FetchOptions {
        cache_dir: dir.path().join("cache"),
        mirror: mirror.map(|m| m.display().to_string()),
        offline: true,
    };
    let sh = xshell::Shell::new().unwrap();

    ctx.fetch_options(fetch(None));
    let err = match KernelBuilder::new(ctx.clone()).build(&sh, &Silent) {
        Err(e @ Error::MissingTools { .. }) => return skip(test, &e.to_string()),
        result => result.unwrap_err().to_string(),
    };
    assert!(err.contains(&format!("`{name}` is not available offline")), "{err}");
    assert!(err.contains(&pinned) && err.contains("BUSYROOT_MIRROR"), "{err}");

    std::fs::write(mirror.join(&name), b"not a kernel").unwrap();
    ctx.fetch_options(fetch(Some(&mirror)));
    let err = KernelBuilder::new(ctx).build(&sh, &Silent).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch") && err.contains(&pinned), "{err}");
    assert!(!dir.path().join("cache").join(&name).exists(), "a bad file must not be cached");
}
