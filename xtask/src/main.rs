//! `cargo xtask`: the command-line front end of busyroot; each subcommand lives in its own file.

mod bench;
mod kernel;
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
    /// Build a minimal boot-test kernel into target/busyroot/<arch>/kernel/.
    Kernel(kernel::KernelArgs),
    /// Boot the image under QEMU or kvmtool, interactively or as a smoke check (--check).
    Run(run::RunArgs),
    /// Time the edit-boot loop against the same work done by hand, measured in the same run.
    Bench(bench::BenchArgs),
    /// Open BusyBox's menuconfig on busybox-config/.config and write the result back.
    Menuconfig(rootfs::RootfsArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = (|| -> anyhow::Result<i32> {
        let sh = xshell::Shell::new()?;
        match cli.command {
            Command::Rootfs(args) => rootfs::run(&sh, args).map(|()| 0),
            Command::Kernel(args) => kernel::run(&sh, args).map(|()| 0),
            Command::Run(args) => run::run(&sh, args),
            Command::Bench(args) => bench::run(&sh, args).map(|()| 0),
            Command::Menuconfig(args) => rootfs::menuconfig(&sh, args).map(|()| 0),
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
