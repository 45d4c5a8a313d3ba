//! `cargo xtask`: the command-line front end of busyroot; each subcommand lives in its own file.

mod bench;
mod bench_payload;
mod clean;
mod kernel;
mod lava;
mod matrix;
mod progress;
mod rootfs;
mod run;
mod runner;
mod soak;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", version, about = "Build and boot-test a BusyBox root filesystem")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build rootfs.ext4, rootfs.cpio.gz and rootfs.tar under target/busyroot/<arch>/.
    Rootfs(rootfs::Target),
    /// Build a minimal boot-test kernel into target/busyroot/<arch>/kernel/, or fetch a
    /// distribution's with --distro (seconds, no root).
    Kernel(kernel::KernelArgs),
    /// Boot the image under QEMU or kvmtool: interactively, as a smoke check (--check), or to
    /// run a command in the guest (-- CMD) and exit with its status.
    Run(run::RunArgs),
    /// Boot every cell of the matrix (or one CI shard of it), several at a time; one table.
    Matrix(matrix::MatrixArgs),
    /// Time the edit-boot loop against the same work done by hand, measured in the same run.
    Bench(bench::BenchArgs),
    /// Write a LAVA job, a QEMU device dictionary and an artifact directory; --run runs it.
    Lava(lava::LavaArgs),
    /// Open BusyBox's menuconfig on busybox-config/.config and write the result back.
    Menuconfig(rootfs::Target),
    /// Remove busyroot's outputs under target/busyroot/ (--arch: one architecture's); the
    /// download cache stays unless --all.
    Clean(clean::CleanArgs),
    /// Run busyroot's tests (`cargo test --workspace`; the slow ones too with --slow) and sum
    /// up every skipped test and why on the last line.
    Test(test::TestArgs),
}

fn main() {
    rootfs::take_launcher_metadata();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let usage = err.use_stderr();
            let _ = err.print();
            // With `-- CMD`, CMD's status is the only source of other codes; a usage error is
            // busyroot's own failure.
            if usage && run::has_command(std::env::args()) {
                eprintln!(
                    "busyroot: usage error, the command did not run (exit {})",
                    run::EXIT_NOT_RUN
                );
                std::process::exit(run::EXIT_NOT_RUN);
            }
            std::process::exit(if usage { 2 } else { 0 });
        }
    };
    let sh = xshell::Shell::new().unwrap_or_else(|err| {
        eprintln!("error: cannot start: {err}");
        std::process::exit(2)
    });
    let result = match cli.command {
        Command::Rootfs(args) => rootfs::run(&sh, args).map(|()| 0),
        Command::Kernel(args) => kernel::run(&sh, args).map(|()| 0),
        Command::Run(args) => {
            let failure = run::Failure::of(&args);
            match run::run(&sh, args) {
                Ok(code) => Ok(code),
                Err(err) => {
                    print_error(&err);
                    std::process::exit(failure.report(&err));
                }
            }
        }
        Command::Matrix(args) => matrix::run(&sh, args),
        Command::Bench(args) => bench::run(&sh, args).map(|()| 0),
        Command::Lava(args) => lava::run(&sh, args),
        Command::Menuconfig(args) => rootfs::menuconfig(&sh, args).map(|()| 0),
        Command::Clean(args) => clean::run(args).map(|()| 0),
        Command::Test(args) => test::run(&sh, args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            print_error(&err);
            std::process::exit(2);
        }
    }
}

/// Prints `error: …` with its causes, and the flag that helps where there is one.
fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err:#}");
    // The library names no flags; the command line says which one helps.
    let hint = err.chain().find_map(|e| match e.downcast_ref() {
        Some(busyroot::Error::UnsupportedHost { .. }) => Some("pass --arch"),
        Some(busyroot::Error::NeedsKvm { .. }) => Some("use --vmm qemu"),
        _ => None,
    });
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    fn help(command: &str, arg: &str) -> String {
        let cli = Cli::command();
        let sub = cli.find_subcommand(command).unwrap();
        let arg = sub.get_arguments().find(|a| a.get_id() == arg).unwrap();
        arg.get_help().unwrap().to_string()
    }

    #[test]
    fn kernel_source_help_lists_the_formats_the_library_accepts() {
        let help = help("kernel", "source");
        assert!(help.contains(busyroot::pipeline::kernel::TARBALL_NAMES), "{help}");
    }

    #[test]
    fn arch_help_names_the_aliases_the_parser_accepts() {
        for command in ["rootfs", "kernel", "run", "menuconfig"] {
            let help = help(command, "arch");
            for (alias, arch) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
                assert!(help.contains(alias), "{command}: {help}");
                assert_eq!(alias.parse::<busyroot::arch::Arch>().unwrap().name(), arch);
            }
        }
    }

    #[test]
    fn every_command_that_builds_takes_offline() {
        for command in ["rootfs", "kernel", "run", "menuconfig"] {
            let cli = Cli::command();
            let sub = cli.find_subcommand(command).unwrap();
            assert!(sub.get_arguments().any(|a| a.get_id() == "offline"), "{command}");
        }
    }
}
