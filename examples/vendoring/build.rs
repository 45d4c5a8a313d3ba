//! Builds the root filesystem into `OUT_DIR` and exports its paths as `BUSYROOT_*` variables.

fn main() {
    if let Err(err) = busyroot::buildscript::BuildScript::from_env().and_then(|b| b.run()) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
