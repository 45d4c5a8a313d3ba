//! `cargo xtask`: the command-line front end of busyroot; each subcommand lives in its own file.

mod progress;
mod rootfs;
mod run;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build and boot-test a BusyBox root filesystem")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build rootfs.ext4, rootfs.cpio.gz and rootfs.tar under target/busyroot/<arch>/.
    Rootfs(rootfs::RootfsArgs),
    /// Boot the image under QEMU or kvmtool, interactively or as a smoke check (--check).
    Run(run::RunArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = (|| -> anyhow::Result<i32> {
        let sh = xshell::Shell::new()?;
        match cli.command {
            Command::Rootfs(args) => rootfs::run(&sh, args).map(|()| 0),
            Command::Run(args) => run::run(&sh, args),
        }
    })();
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(2);
        }
    }
}
