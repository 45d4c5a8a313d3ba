//! `cargo xtask test`: README's test command. Runs `cargo test --workspace`, with the slow tests
//! when asked, and ends with one line that sums up every skipped test and why.

use std::path::Path;

use anyhow::Context;
use busyroot::testing::{SKIP_LOG_VAR, SLOW_TESTS_VAR};
use xshell::{cmd, Shell};

/// Flags of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Run the slow tests too (those that call `busyroot::testing::slow`); CI does
    #[arg(long)]
    pub slow: bool,
    /// Arguments for `cargo test` (after a first `--`), e.g. `--locked`, or a filter and
    /// test-binary arguments after a second `--`
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

pub fn run(sh: &Shell, args: TestArgs) -> anyhow::Result<i32> {
    let ws = crate::rootfs::workspace()?;
    let _dir = sh.push_dir(&ws.root);
    let log = tempfile::Builder::new()
        .prefix("busyroot-skips-")
        .tempfile()
        .context("create the skip log in the temporary directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_args = &args.cargo_args;
    let mut test = cmd!(sh, "{cargo} test --workspace {cargo_args...}")
        .env(SKIP_LOG_VAR, log.path())
        .ignore_status();
    if args.slow {
        test = test.env(SLOW_TESTS_VAR, "1");
    }
    eprintln!("$ {test}");
    // cargo's own exit status is the result, so the command runs as a plain child.
    let status = std::process::Command::from(test).status().context("run `cargo test`")?;
    println!("{}", summary(log.path())?);
    Ok(status.code().unwrap_or(101))
}

/// `N skipped: test (reason); …`, in the order the skips happened.
fn summary(log: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("read the skip log `{}`", log.display()))?;
    let skips: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("skipping "))
        .map(|line| match line.split_once(": ") {
            Some((test, reason)) => format!("{test} ({reason})"),
            None => line.to_string(),
        })
        .collect();
    Ok(match skips.len() {
        0 => "0 skipped".to_string(),
        n => format!("{n} skipped: {}", skips.join("; ")),
    })
}
