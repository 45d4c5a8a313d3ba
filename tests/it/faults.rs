//! Faults: runs that are killed or race each other, downloads that fail, input that cannot go
//! into an image, and a disk that fills up. Each test names the row of docs/faults.md it proves.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use busyroot::build::{Outputs, RootfsBuilder};
use busyroot::config::Workspace;
use busyroot::fetch::{self, FetchOptions, Source};
use busyroot::progress::{Progress, Silent};

use crate::support::{self, run, skip};

const EPOCH: u64 = 1_700_000_000;

fn build(ws: &Workspace, progress: &dyn Progress) -> busyroot::Result<Outputs> {
    let mut builder = RootfsBuilder::new(ws.clone()).unwrap();
    builder.fetch_options(support::offline_fetch()).source_date_epoch(EPOCH);
    builder.build(&xshell::Shell::new().unwrap(), progress)
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Row "two runs at once": both finish, one after the other, with the same valid outputs.
#[test]
fn concurrent_runs_take_turns_and_both_succeed() {
    let test = "concurrent_runs_take_turns_and_both_succeed";
    let dir = support::tempdir();
    let ws = match support::built_checkout(&dir.path().join("checkout")) {
        Ok(ws) => ws,
        Err(reason) => return skip(test, &reason),
    };
    build(&ws, &Silent).unwrap();
    append(&ws.root.join("rootfs-skel/etc/profile"), "# concurrent edit\n");
    let runs: Vec<Outputs> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(|| build(&ws, &Silent).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sums = |o: &Outputs| o.files.iter().map(|f| f.sha256.clone()).collect::<Vec<_>>();
    assert_eq!(sums(&runs[0]), sums(&runs[1]));
    // Exactly one of the two wrote the images; the other found them fresh.
    let wrote = runs.iter().filter(|o| !o.stages.last().unwrap().fresh()).count();
    assert_eq!(wrote, 1, "{:?}", runs.iter().map(|o| &o.stages).collect::<Vec<_>>());
    run("e2fsck", &["-fn", runs[0].ext4.to_str().unwrap()], None);
}

/// Entry point of the child process that `a_killed_run_...` kills: builds the workspace named
/// by `BUSYROOT_FAULTS_CHILD`, announcing each stage on stdout. Without the variable it is
/// not a test of its own and returns.
#[test]
fn child_build_for_the_kill_test() {
    let Some(root) = std::env::var_os("BUSYROOT_FAULTS_CHILD") else { return };
    struct Announce;
    impl Progress for Announce {
        fn start(&self, step: &str) {
            println!("START {step}");
            std::io::stdout().flush().unwrap();
        }
    }
    let mut ws = support::workspace();
    ws.config = support::explicit_inputs(&ws);
    ws.root = root.into();
    ws.target_dir = ws.root.join("target");
    build(&ws, &Announce).unwrap();
}

/// Row "killed while writing an image": the previous output stays under its final name and
/// the next run removes the leftovers and finishes.
#[test]
fn a_run_killed_while_writing_images_leaves_the_previous_outputs_and_recovers() {
    let test = "a_run_killed_while_writing_images_leaves_the_previous_outputs_and_recovers";
    let dir = support::tempdir();
    let ws = match support::built_checkout(&dir.path().join("checkout")) {
        Ok(ws) => ws,
        Err(reason) => return skip(test, &reason),
    };
    let before = build(&ws, &Silent).unwrap();
    append(&ws.root.join("rootfs-skel/etc/profile"), "# edit before the kill\n");

    let child_log = dir.path().join("child.log");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "faults::child_build_for_the_kill_test",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BUSYROOT_FAULTS_CHILD", &ws.root)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&child_log).unwrap())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut killed = false;
    for line in stdout.lines() {
        // Kill it as soon as it starts writing the ext4 image: mke2fs and debugfs are running.
        if line.unwrap().contains("START rootfs.ext4") {
            std::thread::sleep(std::time::Duration::from_millis(40));
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    child.wait().unwrap();
    let log = std::fs::read_to_string(&child_log).unwrap_or_default();
    assert!(killed, "the child never reached the ext4 stage; its stderr:\n{log}");

    let out = &before.dir;
    let sha = busyroot::fetch::sha256_file(&before.ext4).unwrap();
    // Either the old image is intact or the child had already renamed a complete new one.
    let fresh_enough = sha == before.files[0].sha256
        || std::process::Command::new(busyroot::hosttools::find_program("e2fsck").unwrap())
            .args(["-fn", before.ext4.to_str().unwrap()])
            .status()
            .unwrap()
            .success();
    assert!(fresh_enough, "rootfs.ext4 was left half-written");

    let after = build(&ws, &Silent).unwrap();
    assert!(leftovers(out).is_empty(), "leftovers: {:?}", leftovers(out));
    assert_ne!(after.files[2].sha256, before.files[2].sha256, "the edit must reach the tar");
    run("e2fsck", &["-fn", after.ext4.to_str().unwrap()], None);
    let again = build(&ws, &Silent).unwrap();
    assert!(again.stages.iter().all(|s| s.fresh()), "{:?}", again.stages);
}

/// A tiny HTTP server on loopback that answers every request with `body` (declaring
/// `declared` bytes), then closes the connection.
fn serve(body: Vec<u8>, declared: usize) -> (String, std::thread::JoinHandle<()>) {
    serve_status("200 OK", body, declared)
}

/// [`serve`] with the given HTTP status line (e.g. "404 Not Found").
fn serve_status(
    status: &'static str,
    body: Vec<u8>,
    declared: usize,
) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        // curl retries; answer a few requests, then stop.
        listener.set_nonblocking(false).unwrap();
        for _ in 0..4 {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
            if declared == body.len() {
                return;
            }
        }
    });
    (url, handle)
}

fn source() -> Source {
    Source {
        url: "http://127.0.0.1:9/unused/thing-1.0.tar.bz2".into(),
        mirrors: Vec::new(),
        file_name: "thing-1.0.tar.bz2".into(),
        sha256: fetch::sha256_bytes(b"the real tarball"),
    }
}

/// Row "tampered download": rejected by checksum, nothing kept in the cache.
#[test]
fn a_tampered_download_is_rejected_and_not_kept() {
    if !support::have("curl") {
        return skip("a_tampered_download_is_rejected_and_not_kept", "curl is not installed");
    }
    let cache = support::tempdir();
    let (url, server) = serve(b"evil tarball".to_vec(), 12);
    let opts = FetchOptions { cache_dir: cache.path().into(), mirror: Some(url), offline: false };
    let err = fetch::fetch(&xshell::Shell::new().unwrap(), &source(), &opts, &Silent)
        .unwrap_err()
        .to_string();
    server.join().unwrap();
    assert!(err.contains(&fetch::sha256_bytes(b"evil tarball")), "{err}");
    assert!(err.contains(&source().sha256), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "the cache must stay empty");
}

/// Collects the notes a fetch reports.
#[derive(Default)]
struct Notes(std::sync::Mutex<Vec<String>>);

impl Progress for Notes {
    fn note(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

/// Row "upstream unreachable": the backup sources are tried in order; each failure is one line
/// in words; the first source that has the right file wins.
#[test]
fn a_tarball_served_only_by_the_second_backup_source_is_fetched() {
    if !support::have("curl") {
        let test = "a_tarball_served_only_by_the_second_backup_source_is_fetched";
        return skip(test, "curl is not installed");
    }
    let cache = support::tempdir();
    let (missing, missing_server) = serve_status("404 Not Found", b"gone".to_vec(), 4);
    let (good, good_server) = serve(b"the real tarball".to_vec(), 16);
    let source = Source {
        mirrors: vec![format!("{missing}/pool/thing_1.0.orig.tar.bz2"), format!("{good}/t.bz2")],
        ..source()
    };
    let opts = FetchOptions { cache_dir: cache.path().into(), mirror: None, offline: false };
    let notes = Notes::default();
    let path = fetch::fetch(&xshell::Shell::new().unwrap(), &source, &opts, &notes).unwrap();
    missing_server.join().unwrap();
    good_server.join().unwrap();
    assert_eq!(path, cache.path().join("thing-1.0.tar.bz2"));
    assert_eq!(std::fs::read(&path).unwrap(), b"the real tarball");
    let notes = notes.0.into_inner().unwrap();
    assert_eq!(notes.len(), 2, "one line per failed source: {notes:#?}");
    assert!(notes[0].contains("127.0.0.1:9/unused") && notes[0].contains("could not connect"));
    assert!(notes[1].contains(&missing) && notes[1].ends_with("HTTP error 404"), "{notes:#?}");
}

/// Row "tampered download" with a backup source: the wrong file is rejected with both
/// checksums and the next source is used.
#[test]
fn a_wrong_file_at_the_first_source_is_rejected_and_the_next_used() {
    if !support::have("curl") {
        let test = "a_wrong_file_at_the_first_source_is_rejected_and_the_next_used";
        return skip(test, "curl is not installed");
    }
    let cache = support::tempdir();
    let (evil, evil_server) = serve(b"evil tarball".to_vec(), 12);
    let (good, good_server) = serve(b"the real tarball".to_vec(), 16);
    let source = Source { url: format!("{evil}/thing-1.0.tar.bz2"), ..source() };
    let source = Source { mirrors: vec![format!("{good}/thing-1.0.tar.bz2")], ..source };
    let opts = FetchOptions { cache_dir: cache.path().into(), mirror: None, offline: false };
    let notes = Notes::default();
    let path = fetch::fetch(&xshell::Shell::new().unwrap(), &source, &opts, &notes).unwrap();
    evil_server.join().unwrap();
    good_server.join().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"the real tarball");
    let notes = notes.0.into_inner().unwrap();
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(notes[0].contains(&evil) && notes[0].contains("wrong checksum"), "{notes:#?}");
    assert!(notes[0].contains(&fetch::sha256_bytes(b"evil tarball")), "{notes:#?}");
    assert!(notes[0].contains(&source.sha256), "{notes:#?}");
    let names: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(names.len(), 1, "only the good file is kept");
}

/// Rows "truncated download" and "network failure": the transfer is retried, then reported
/// with the URL and the offline alternative; nothing is kept.
#[test]
fn truncated_and_failed_downloads_name_the_url_and_the_way_offline() {
    if !support::have("curl") {
        let test = "truncated_and_failed_downloads_name_the_url_and_the_way_offline";
        return skip(test, "curl is not installed");
    }
    let cache = support::tempdir();
    let sh = xshell::Shell::new().unwrap();
    // Declares more bytes than it sends, on every try: curl sees a short transfer.
    let (url, server) = serve(b"the real tar".to_vec(), 16);
    let opts =
        FetchOptions { cache_dir: cache.path().into(), mirror: Some(url.clone()), offline: false };
    let err = fetch::fetch(&sh, &source(), &opts, &Silent).unwrap_err().to_string();
    drop(server);
    assert!(err.contains(&format!("{url}/thing-1.0.tar.bz2")), "{err}");
    assert!(err.contains("BUSYROOT_MIRROR"), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "the cache must stay empty");

    // Nothing listens on the discard port of loopback: connection refused.
    let opts = FetchOptions { mirror: Some("http://127.0.0.1:9".into()), ..opts };
    let err = fetch::fetch(&sh, &source(), &opts, &Silent).unwrap_err().to_string();
    assert!(err.contains("http://127.0.0.1:9/thing-1.0.tar.bz2"), "{err}");
    assert!(err.contains("BUSYROOT_MIRROR"), "{err}");
}

/// Row "unreadable skeleton file": named in the error. Root can read anything, so this runs
/// only as an unprivileged user (as CI runs it).
#[test]
fn an_unreadable_skeleton_file_is_named() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipping an_unreadable_skeleton_file_is_named: root can read every file");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = support::tempdir();
    let secret = dir.path().join("etc/secret");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "x").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut m = busyroot::manifest::Manifest::new(0);
    let err = busyroot::skeleton::add_tree(&mut m, dir.path(), 0).unwrap_err().to_string();
    assert!(err.contains("etc/secret") && err.contains("cannot be read"), "{err}");
}

/// Row "BusyBox config that does not build static": refused before make runs.
#[test]
fn a_busybox_config_that_is_not_static_is_refused() {
    let dir = support::tempdir();
    let config = dir.path().join(".config");
    std::fs::write(&config, "# CONFIG_STATIC is not set\nCONFIG_ASH=y\n").unwrap();
    let bb = busyroot::busybox::BusyboxBuild {
        src: dir.path().join("src"),
        install_dir: dir.path().join("install"),
        log: dir.path().join("log"),
        toolchain: busyroot::busybox::Toolchain { cross_compile: String::new(), cc: "gcc".into() },
        source_date_epoch: EPOCH,
    };
    let err =
        bb.configure(&xshell::Shell::new().unwrap(), &config, &Silent).unwrap_err().to_string();
    assert!(err.contains("CONFIG_STATIC") && err.contains(".config"), "{err}");
    assert!(err.contains("menuconfig"), "the error says how to fix it: {err}");
}

/// Row "disk full while writing an image": a clean error, the previous image intact, no
/// temporary file left. Needs a small file system: `.ci/run` mounts one (as root) and names
/// it in `$BUSYROOT_TEST_SMALL_FS`.
#[test]
fn a_full_disk_is_a_clean_error_and_keeps_the_previous_image() {
    let test = "a_full_disk_is_a_clean_error_and_keeps_the_previous_image";
    let Some(small) = std::env::var_os("BUSYROOT_TEST_SMALL_FS") else {
        return skip(test, "$BUSYROOT_TEST_SMALL_FS (a small, e.g. 8 MiB, tmpfs) is not set");
    };
    let outputs = match support::rootfs() {
        Ok(o) => o,
        Err(reason) => return skip(test, &reason),
    };
    let small = Path::new(&small);
    let manifest = RootfsBuilder::new(support::workspace())
        .unwrap()
        .manifest(&outputs.dir.join("install"), EPOCH)
        .unwrap();
    let out = small.join("rootfs.tar");
    std::fs::write(&out, b"the previous good image").unwrap();
    let ext4 = small.join("rootfs.ext4");
    std::fs::write(&ext4, b"the previous good ext4 image").unwrap();
    // Fill the file system so the new tar (about 2.5 MB) cannot fit.
    let filler = small.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x55u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    let result = busyroot::image::tar::write(&manifest, &out);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous good image");

    let opts = busyroot::image::ext4::Ext4Options {
        size: busyroot::image::ext4::ImageSize::Bytes(32 << 20),
        label: "rootfs".into(),
        uuid: "6b1f6e47-3e1c-4b8e-9a55-0d3c3b2f1a10".into(),
        hash_seed: "0f6d9c59-8e0a-4c47-b2b9-1f0f4f7b7c21".into(),
        timestamp: EPOCH,
    };
    let sh = xshell::Shell::new().unwrap();
    let err = busyroot::image::ext4::write(&sh, &manifest, &ext4, &opts).unwrap_err().to_string();
    assert!(err.contains("No space left") || err.contains("space"), "{err}");
    assert_eq!(std::fs::read(&ext4).unwrap(), b"the previous good ext4 image");
    let left: Vec<String> = std::fs::read_dir(small)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "filler" && !n.starts_with("rootfs."))
        .collect();
    assert!(left.is_empty(), "leftovers: {left:?}");
    std::fs::remove_file(&filler).unwrap();
}
