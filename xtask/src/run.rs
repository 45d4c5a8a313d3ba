//! `cargo xtask run`: boot the image (stub, being written).

use xshell::Shell;

#[derive(clap::Args, Debug)]
pub struct RunArgs {}

pub fn run(_sh: &Shell, _args: RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not yet implemented")
}
