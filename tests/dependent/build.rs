//! Builds the images into `OUT_DIR` with busyroot's built-in inputs, and tells the test where
//! each input came from.

fn main() {
    let outputs = match busyroot::buildscript::BuildScript::from_env().and_then(|b| b.run()) {
        Ok(outputs) => outputs,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    };
    let inputs: Vec<String> = outputs.inputs.iter().map(|i| i.to_string()).collect();
    println!("cargo:rustc-env=DEPENDENT_INPUTS={}", inputs.join(";"));
}
