//! Running a job with a local `lava-run` (as root), stopped at its deadline through `host::exec`.

use super::*;

/// How a `lava-run` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LavaRun {
    /// Its exit status (`None` if it was killed).
    pub status: Option<i32>,
    /// Whether it was stopped at the deadline.
    pub timed_out: bool,
    /// Its process id.
    pub pid: u32,
    /// The command line, as printed.
    pub command: String,
    /// How long it ran.
    pub duration: Duration,
}

/// Fails unless we run as root, which `lava-run` needs: it keeps its work under
/// `/var/lib/lava` and manages the guest's processes itself.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    Err(Error::Other(
        "lava-run must run as root (it keeps its work under /var/lib/lava and starts the \
         guest's QEMU itself); run the job as root"
            .into(),
    ))
}

/// Runs `lava-run` on `job_file` and `device_file` with output in `output_dir`, its stdout
/// and stderr going to `log`. lava-run needs root (it writes under `/var/lib/lava` and
/// manages the guest's processes). It gets SIGTERM when we die; at `timeout` it gets SIGTERM
/// (LAVA then cancels the job and stops QEMU) and, 30 s later, SIGKILL.
pub fn run_lava(
    sh: &xshell::Shell,
    job_file: &Path,
    device_file: &Path,
    output_dir: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<LavaRun> {
    require_root()?;
    let program = crate::host::tools::require(&crate::host::tools::Tool {
        program: "lava-run",
        purpose: "running LAVA jobs locally",
        package: "lava-dispatcher",
    })?;
    // Two runs at once need different job ids: LAVA's scratch directory is named after it.
    let job_id = std::process::id().to_string();
    let cmd = xshell::cmd!(
        sh,
        "{program} --job-id {job_id} --output-dir {output_dir} --device {device_file} {job_file}"
    );
    let command_line = cmd.to_string();
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_path("create directory", dir)?;
    }
    let file = fs::File::create(log).with_path("create", log)?;
    let mut command = std::process::Command::from(cmd);
    command.stdin(Stdio::null()).stdout(file.try_clone().with_path("open", log)?).stderr(file);
    let failed = |details: String| Error::Command {
        command: command_line.clone(),
        status: String::new(),
        details,
    };
    let started = Instant::now();
    let mut child = exec::spawn(&mut command, libc::SIGTERM)
        .map_err(|e| failed(format!("could not start it: {e}")))?;
    let pid = child.id();
    let waited = exec::wait(&mut child, Some(started + timeout), || true)
        .map_err(|e| failed(format!("waiting for it failed: {e}")))?;
    let timed_out = waited.is_none();
    let status = match waited {
        Some(status) => status,
        None => {
            exec::terminate(&mut child, Duration::from_secs(30)).with_path("wait for", &program)?
        }
    };
    Ok(LavaRun {
        status: status.code(),
        timed_out,
        pid,
        command: command_line,
        duration: started.elapsed(),
    })
}
