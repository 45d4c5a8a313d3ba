//! Faults: runs that are killed or race each other, downloads that fail, input that cannot go
//! into an image, and a disk that fills up. Each test names the row of docs/faults.md it proves.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use busyroot::config::Workspace;
use busyroot::context::Context;
use busyroot::host::fetch::{self, FetchOptions, Source};
use busyroot::image::Format;
use busyroot::pipeline::rootfs::{Outputs, RootfsBuilder};
use busyroot::progress::{Progress, Silent};

use crate::support::{self, run, skip};

const EPOCH: u64 = 1_700_000_000;

fn build(ws: &Workspace, progress: &dyn Progress) -> busyroot::Result<Outputs> {
    let mut ctx = Context::new(ws.clone()).unwrap();
    ctx.fetch_options(support::offline_fetch()).source_date_epoch(EPOCH);
    RootfsBuilder::new(ctx).build(&xshell::Shell::new().unwrap(), progress)
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

/// The sha256s of every output.
fn sums(outputs: &Outputs) -> Vec<String> {
    outputs.files.iter().map(|f| f.sha256.clone()).collect()
}

/// What a run after a fault must do: finish, leave no temporary in `out`, and leave every
/// stage fresh for the run after it. Returns its outputs.
fn recovers(ws: &Workspace, out: &Path) -> Outputs {
    let after = build(ws, &Silent).unwrap();
    assert!(leftovers(out).is_empty(), "leftovers: {:?}", leftovers(out));
    let again = build(ws, &Silent).unwrap();
    assert!(again.stages.iter().all(|s| s.fresh()), "{:?}", again.stages);
    after
}

/// Row "two runs at once": both finish, one after the other, with the same valid outputs.
#[test]
fn concurrent_runs_take_turns_and_both_succeed() {
    let test = "concurrent_runs_take_turns_and_both_succeed";
    let dir = support::tempdir();
    let Some(ws) = support::built_checkout_in(test, dir.path()) else { return };
    build(&ws, &Silent).unwrap();
    append(&ws.root.join("rootfs-skel/etc/profile"), "# concurrent edit\n");
    let runs: Vec<Outputs> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(|| build(&ws, &Silent).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sums(&runs[0]), sums(&runs[1]));
    // Exactly one of the two wrote the images; the other found them fresh.
    let wrote = runs.iter().filter(|o| !o.stages.last().unwrap().fresh()).count();
    assert_eq!(wrote, 1, "{:?}", runs.iter().map(|o| &o.stages).collect::<Vec<_>>());
    run("e2fsck", &["-fn", runs[0].path(Format::Ext4).to_str().unwrap()], None);
}

/// Set in the child process a kill test starts: the root of the workspace the child builds.
const CHILD_ENV: &str = "BUSYROOT_FAULTS_CHILD";

/// In a child process started by [`spawn_child`], builds the workspace named by [`CHILD_ENV`],
/// announcing each stage on stdout, and returns true; in a normal run returns false. Each
/// kill test calls this first, so the child is the test itself, running in another role.
fn act_as_child() -> bool {
    let Some(root) = child_role() else { return false };
    struct Announce;
    impl Progress for Announce {
        fn start(&self, step: &str) {
            println!("START {step}");
            std::io::stdout().flush().unwrap();
        }
    }
    let mut ws = support::workspace();
    ws.config = support::explicit_inputs(&ws);
    ws.root = root;
    ws.target_dir = ws.root.join("target");
    build(&ws, &Announce).unwrap();
    true
}

/// In a child process started by [`spawn_child`], the directory it works on.
fn child_role() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD_ENV).map(Into::into)
}

/// Starts this test binary running only `test` in the child role on `root`, its stderr going
/// to `log`; returns the child and its stdout's lines.
fn spawn_child(
    test: &str,
    root: &Path,
    log: &Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &format!("faults::{test}"), "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, root)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    // Read on even when the test stops listening, so the child never writes to a closed pipe.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, lines)
}

/// Row "killed while writing an image": the previous output stays under its final name and
/// the next run removes the leftovers and finishes.
#[test]
fn a_run_killed_while_writing_images_leaves_the_previous_outputs_and_recovers() {
    let test = "a_run_killed_while_writing_images_leaves_the_previous_outputs_and_recovers";
    if act_as_child() {
        return;
    }
    let dir = support::tempdir();
    let Some(ws) = support::built_checkout_in(test, dir.path()) else { return };
    let before = build(&ws, &Silent).unwrap();
    append(&ws.root.join("rootfs-skel/etc/profile"), "# edit before the kill\n");

    let child_log = dir.path().join("child.log");
    let (mut child, stdout) = spawn_child(test, &ws.root, &child_log);
    let out = &before.dir;
    // The ext4 writer's temporary image, named after the child's pid: it exists from the
    // moment mke2fs starts filling it until the rename that publishes it.
    let temp = before.path(Format::Ext4).with_file_name(format!(".rootfs.ext4.tmp-{}", child.id()));
    let started = stdout.iter().any(|line| line.contains("START rootfs.ext4"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while started && !temp.exists() && std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&child_log).unwrap_or_default();
    assert!(started, "the child never reached the ext4 stage; its stderr:\n{log}");
    // The kill landed inside the write: the temporary image is still there, never renamed.
    assert!(
        temp.exists(),
        "the kill did not land while `{}` was being written; the child's stderr:\n{log}",
        temp.display()
    );
    let sha = busyroot::host::fetch::sha256_file(before.path(Format::Ext4)).unwrap();
    assert_eq!(sha, before.get(Format::Ext4).sha256, "the previous rootfs.ext4 must stay as built");

    let after = recovers(&ws, out);
    assert_ne!(
        after.get(Format::Tar).sha256,
        before.get(Format::Tar).sha256,
        "the edit must reach the tar"
    );
    run("e2fsck", &["-fn", after.path(Format::Ext4).to_str().unwrap()], None);
}

/// The command lines of running processes that mention `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|line| line.contains(needle))
        .collect()
}

/// Waits until `done` holds or the child exits or ten minutes pass; panics with the child's
/// stderr unless `done` held.
fn wait_for(child: &mut std::process::Child, log: &Path, what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !done() {
        let exited = child.try_wait().unwrap();
        if exited.is_some() || std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("the child never got to {what} ({exited:?}); its stderr:\n{log}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Rows "killed during extraction" and "killed during make": one run is killed (SIGKILL)
/// while it unpacks the BusyBox source, the next while make compiles it. Nothing is left under
/// the tree's final name, make dies with the run, and the run after them unpacks, configures
/// and builds again and writes the very same images.
#[test]
fn runs_killed_during_extraction_and_during_make_are_finished_by_the_next_run() {
    let test = "runs_killed_during_extraction_and_during_make_are_finished_by_the_next_run";
    if act_as_child() {
        return;
    }
    if busyroot::testing::slow(test) {
        return;
    }
    let dir = support::tempdir();
    let Some(ws) = support::built_checkout_in(test, dir.path()) else { return };
    let before = build(&ws, &Silent).unwrap();
    let out = before.dir.clone();
    let src = out.join(format!("busybox-{}", ws.config.busybox.version));
    std::fs::remove_dir_all(&src).unwrap();

    // Killed while the tarball is being unpacked beside the tree's final name.
    let log = dir.path().join("child-extraction.log");
    let (mut child, _stdout) = spawn_child(test, &ws.root, &log);
    let unpacking = || {
        std::fs::read_dir(&out).unwrap().flatten().any(|e| {
            let hidden = e.file_name().to_string_lossy().starts_with('.');
            hidden && e.path().is_dir() && walk_count(&e.path()) > 20
        })
    };
    wait_for(&mut child, &log, "the extraction", unpacking);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!src.exists(), "a killed extraction must leave nothing under `{}`", src.display());

    // Killed while make compiles: wait for its first compiler lines in the build log.
    let log = dir.path().join("child-make.log");
    let make_log = out.join("busybox-build.log");
    let logged = std::fs::metadata(&make_log).map_or(0, |m| m.len() as usize);
    let (mut child, stdout) = spawn_child(test, &ws.root, &log);
    for line in stdout {
        if line.contains("START build busybox") {
            break;
        }
    }
    let compiling = || {
        let text = std::fs::read(&make_log).unwrap_or_default();
        String::from_utf8_lossy(&text[logged.min(text.len())..]).contains("  CC ")
    };
    wait_for(&mut child, &log, "compiling", compiling);
    child.kill().unwrap();
    child.wait().unwrap();
    let needle = src.to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !processes_mentioning(&needle).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "make outlived the killed run: {left:?}");

    let after = recovers(&ws, &out);
    let ran: Vec<&str> =
        after.stages.iter().filter(|s| !s.fresh()).map(|s| s.name.as_str()).collect();
    assert!(ran.contains(&"build busybox"), "make must run again: {:?}", after.stages);
    assert_eq!(sums(&after), sums(&before), "the recovered build must equal the first");
}

/// The number of entries under `dir`, recursively.
fn walk_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| 1 + if e.path().is_dir() { walk_count(&e.path()) } else { 0 })
            .sum()
    })
}

/// The pids of running programs named `qemu-*` whose parent is `parent`.
fn vmms_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            // "<pid> (<comm>) <state> <ppid> …"
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
            else {
                return false;
            };
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            comm.starts_with("qemu") && ppid == Some(parent)
        })
        .collect()
}

/// Row "Ctrl-C during a boot": SIGINT to the process group of `cargo xtask run --check` (what
/// a terminal's Ctrl-C does) while QEMU runs gives exit 130 and leaves no QEMU behind.
#[test]
fn ctrl_c_during_a_boot_exits_130_and_leaves_no_vmm() {
    let test = "ctrl_c_during_a_boot_exits_130_and_leaves_no_vmm";
    let Some((kernel, _)) = support::test_kernel_and_rootfs(test) else { return };
    use std::os::unix::process::CommandExt;
    let dir = support::tempdir();
    let log = dir.path().join("xtask.log");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut xtask = Command::new(cargo)
        .args(["xtask", "run", "--check", "--arch", "x86_64", "--kernel"])
        .arg(&kernel)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = xtask.id();
    // `cargo run` replaces itself with the xtask on Unix, so QEMU is the xtask's child.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    let vmm = loop {
        if let Some(&vmm) = vmms_of(pid).first() {
            break vmm;
        }
        let exited = xtask.try_wait().unwrap();
        if exited.is_some() || std::time::Instant::now() > deadline {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
            let _ = xtask.wait();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("QEMU never started ({exited:?}); `cargo xtask run` said:\n{log}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // SAFETY: kill has no memory-safety preconditions; the group is the xtask's own.
    assert_eq!(unsafe { libc::killpg(pid as i32, libc::SIGINT) }, 0);
    let status = loop {
        if let Some(status) = xtask.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
            panic!("`cargo xtask run` did not exit after SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(130), "exit status {status}; it said:\n{said}");
    let running = std::fs::read_to_string(format!("/proc/{vmm}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z "));
    assert!(!running, "QEMU (pid {vmm}) outlived the interrupted run; it said:\n{said}");
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

/// Row "run killed during download": a run killed (SIGKILL) while curl downloads leaves only its
/// `.name.tmp-<pid>` file, curl dies with it, and the next run removes that file and fetches.
#[test]
fn a_run_killed_during_download_leaves_a_partial_file_the_next_run_removes() {
    let test = "a_run_killed_during_download_leaves_a_partial_file_the_next_run_removes";
    if let Some(cache) = child_role() {
        let mirror = std::env::var("BUSYROOT_FAULTS_URL").ok();
        let opts = FetchOptions { cache_dir: cache, mirror, offline: false };
        let _ = fetch::fetch(&xshell::Shell::new().unwrap(), &source(), &opts, &Silent);
        return;
    }
    if !support::have("curl") {
        return skip(test, "curl is not installed");
    }
    // Sends the headers and a first part of the body, then holds the connection open.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let _ = conn.read(&mut [0u8; 4096]);
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n";
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(&[0x42; 4096]);
        let _ = released.recv();
    });
    let dir = support::tempdir();
    let cache = dir.path().join("cache");
    let log = dir.path().join("child.log");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &format!("faults::{test}"), "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &cache)
        .env("BUSYROOT_FAULTS_URL", &url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let part = cache.join(format!(".{}.tmp-{}", source().file_name, child.id()));
    wait_for(&mut child, &log, "downloading", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !processes_mentioning(&url).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = processes_mentioning(&url);
    release.send(()).unwrap();
    server.join().unwrap();
    assert!(left.is_empty(), "curl outlived the killed run: {left:?}");
    assert!(part.exists(), "the killed run's partial file stays until the next run");

    let mirror = dir.path().join("mirror");
    std::fs::create_dir_all(&mirror).unwrap();
    std::fs::write(mirror.join(source().file_name), b"the real tarball").unwrap();
    let opts = FetchOptions {
        cache_dir: cache.clone(),
        mirror: Some(mirror.to_string_lossy().into_owned()),
        offline: true,
    };
    let got = fetch::fetch(&xshell::Shell::new().unwrap(), &source(), &opts, &Silent).unwrap();
    assert_eq!(std::fs::read(got).unwrap(), b"the real tarball");
    assert!(!part.exists(), "the next run must remove the dead run's partial file");
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
        let why = "root can read every file; run the tests as an ordinary user, e.g. \
                   `su <user> -c 'cargo test --workspace'`";
        return skip("an_unreadable_skeleton_file_is_named", why);
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = support::tempdir();
    let secret = dir.path().join("etc/secret");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "x").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut m = busyroot::tree::manifest::Manifest::new(0);
    let err = busyroot::tree::skeleton::add_tree(&mut m, dir.path(), 0).unwrap_err().to_string();
    assert!(err.contains("etc/secret") && err.contains("cannot be read"), "{err}");
}

/// Row "BusyBox config that does not build static": refused before make runs.
#[test]
fn a_busybox_config_that_is_not_static_is_refused() {
    let dir = support::tempdir();
    let config = dir.path().join(".config");
    std::fs::write(&config, "# CONFIG_STATIC is not set\nCONFIG_ASH=y\n").unwrap();
    let bb = busyroot::pipeline::busybox::BusyboxBuild {
        src: dir.path().join("src"),
        install_dir: dir.path().join("install"),
        log: dir.path().join("log"),
        toolchain: busyroot::pipeline::busybox::Toolchain {
            cross_compile: String::new(),
            cc: "gcc".into(),
        },
        source_date_epoch: EPOCH,
    };
    let err =
        bb.configure(&xshell::Shell::new().unwrap(), &config, &Silent).unwrap_err().to_string();
    assert!(err.contains("CONFIG_STATIC") && err.contains(".config"), "{err}");
    assert!(err.contains("menuconfig"), "the error says how to fix it: {err}");
}

/// How an I/O error says ENOSPC.
const ENOSPC: &str = "No space left on device (os error 28)";

/// Row "disk full while writing an image": a clean error, the previous image intact, no
/// temporary file left. Needs a small file system: `.ci/run` mounts one (as root) and names
/// it in `$BUSYROOT_TEST_SMALL_FS`.
#[test]
fn a_full_disk_is_a_clean_error_and_keeps_the_previous_image() {
    let test = "a_full_disk_is_a_clean_error_and_keeps_the_previous_image";
    let Some(small) = std::env::var_os("BUSYROOT_TEST_SMALL_FS") else {
        let why = "$BUSYROOT_TEST_SMALL_FS is not set; as root, `mkdir -p /var/tmp/small && \
                   mount -t tmpfs -o size=8m small /var/tmp/small && chown <user>: \
                   /var/tmp/small`, then `BUSYROOT_TEST_SMALL_FS=/var/tmp/small cargo test \
                   --workspace`";
        return skip(test, why);
    };
    let Some(outputs) = support::or_skip(test, support::rootfs()) else { return };
    let small = Path::new(&small);
    let manifest = RootfsBuilder::new(Context::new(support::workspace()).unwrap())
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
    assert!(err.contains(ENOSPC), "{err}");
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
    assert!(err.contains(ENOSPC), "{err}");
    assert_eq!(std::fs::read(&ext4).unwrap(), b"the previous good ext4 image");
    let left: Vec<String> = std::fs::read_dir(small)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "filler" && !n.starts_with("rootfs."))
        .collect();
    assert!(left.is_empty(), "leftovers: {left:?}");
    std::fs::remove_file(&filler).unwrap();
}
