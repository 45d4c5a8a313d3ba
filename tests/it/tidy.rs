//! Hygiene checks that run with the tests: formatting, file headers, the shipped config, and
//! README and CI agreeing on the test command.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let mut files = Vec::new();
    for dir in ["src", "xtask/src", "tests", "examples/vendoring/src", "examples/vendoring/tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    files.push(root().join("examples/vendoring/build.rs"));
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "add a `//!` line saying what the file is for: {missing:?}");
}

#[test]
fn code_is_formatted() {
    let sh = xshell::Shell::new().unwrap();
    let _dir = sh.push_dir(root());
    let out = xshell::cmd!(sh, "cargo fmt --all --check").quiet().ignore_status().output().unwrap();
    assert!(
        out.status.success(),
        "run `cargo fmt --all` to fix:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn shipped_busybox_config_is_static_without_nss_and_tc() {
    let text = std::fs::read_to_string(root().join("busybox-config/.config")).unwrap();
    let opts = busyroot::host::kconfig::set_options(&text);
    let set = |k: &str| opts.get(k).map(String::as_str);
    assert_eq!(set("CONFIG_STATIC"), Some("y"), "static glibc: the image has no libc");
    assert_eq!(set("CONFIG_USE_BB_PWD_GRP"), Some("y"), "static glibc cannot load NSS modules");
    assert_eq!(set("CONFIG_USE_BB_SHADOW"), Some("y"), "static glibc cannot load NSS modules");
    assert_eq!(set("CONFIG_TC"), None, "tc does not build with current kernel headers");
    assert!(!text.lines().nth(3).unwrap_or("").contains(':'), "strip the timestamp line");
}

#[test]
fn ci_runs_the_readmes_quick_start_and_test_command_from_the_readme_text() {
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let sh = xshell::Shell::new().unwrap();
    let extract = root().join(".ci/readme-block");
    for name in ["quick-start", "tests"] {
        assert!(
            ci.contains(&format!("$(.ci/readme-block {name})")),
            ".ci/run must run README's `{name}` block as `.ci/readme-block {name}` extracts it"
        );
        let block = xshell::cmd!(sh, "{extract} {name}").quiet().read().unwrap();
        assert!(!block.trim().is_empty(), "README's `{name}` block is empty");
    }
}

/// The body of `fn name(` in `source`: from its line to the closing brace at the same
/// indentation.
fn fn_body<'a>(source: &'a str, name: &str) -> Option<&'a str> {
    let at = source.find(&format!("fn {name}("))?;
    let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = &source[line_start..at];
    let indent = &indent[..indent.len() - indent.trim_start().len()];
    let end = source[at..].find(&format!("\n{indent}}}\n"))?;
    Some(&source[at..at + end])
}

/// Every row of docs/faults.md names tests that exist and that inject the fault: a test's body
/// (or a helper it calls) asserts something, and a row about killing or Ctrl-C names at least one test that sends a
/// signal (`.kill()`, `libc::kill`, `killpg`).
#[test]
fn every_fault_in_docs_faults_is_injected_by_a_named_test() {
    let doc = std::fs::read_to_string(root().join("docs/faults.md")).unwrap();
    let mut files = Vec::new();
    for dir in ["src", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    let sources: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    let mut problems = Vec::new();
    for row in doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| fault") && !l.starts_with("| ---"))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (fault, tests) = (cells[1], cells[3]);
        let mut bodies = Vec::new();
        for name in tests.split('`').skip(1).step_by(2).filter(|n| n.contains("::")) {
            let last = name.rsplit("::").next().unwrap();
            if last == "*" {
                let module =
                    name.split("::").take_while(|s| !["tests", "*"].contains(s)).last().unwrap();
                if !files.iter().any(|f| f.file_stem().is_some_and(|s| s == module)) {
                    problems.push(format!("`{name}`: no module `{module}`"));
                }
                continue;
            }
            let find = |name: &str| sources.iter().find_map(|s| fn_body(s, name));
            // A test asserts in its body or in a helper it calls (one level down).
            let asserts = |body: &str| {
                body.contains("assert") || body.contains("panic!") || {
                    let words = body.split(|c: char| !(c.is_alphanumeric() || c == '_'));
                    let called: Vec<&str> = words.filter(|w| !w.is_empty() && *w != last).collect();
                    called.iter().any(|w| {
                        body.contains(&format!("{w}("))
                            && find(w).is_some_and(|b| b.contains("assert") || b.contains("panic!"))
                    })
                }
            };
            match find(last) {
                Some(body) if asserts(body) => bodies.push(body),
                Some(_) => problems.push(format!("`{name}` asserts nothing")),
                None => problems.push(format!("`{name}` does not exist")),
            }
        }
        let signalled = ["killed", "kill ", "Ctrl-C"].iter().any(|w| fault.contains(w));
        let sends = |b: &&str| [".kill()", "libc::kill(", "killpg("].iter().any(|k| b.contains(k));
        if signalled && !bodies.iter().any(sends) {
            problems.push(format!("row `{fault}`: no named test sends a signal"));
        }
        if bodies.is_empty() && !tests.contains("::*") {
            problems.push(format!("row `{fault}` names no test"));
        }
    }
    assert!(problems.is_empty(), "docs/faults.md: {problems:#?}");
}

#[test]
fn architecture_md_names_every_source_file() {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let words: Vec<&str> = doc.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
    let unnamed: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|stem| stem != "mod" && !words.contains(&stem.as_str()))
        .collect();
    assert!(unnamed.is_empty(), "say in ARCHITECTURE.md what these are for: {unnamed:?}");
}

/// README's Quick start is one `sh` block that CI runs as written (extracted from README.md,
/// not copied): the set-up line as root (with or without sudo, no recommended packages), then
/// the main job, a kernel, a boot check and a command in the guest with a shared directory.
#[test]
fn the_quick_start_is_one_block_from_set_up_to_a_shared_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.lines().count() <= 200,
        "README.md is for the first steps; move reference text to docs/"
    );
    let section = readme.split("\n## Quick start").nth(1).expect("a `## Quick start` section");
    let section = section.split("\n## ").next().unwrap();
    assert_eq!(section.matches("```sh\n").count(), 1, "the Quick start is one block");
    assert!(section.contains("<!-- ci: quick-start -->\n```sh\n"), "marked for .ci/readme-block");
    let block = section.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let lines: Vec<&str> = block.lines().collect();
    assert!(lines[0].starts_with("$(command -v sudo) "), "set-up first, with or without sudo");
    assert!(lines[0].contains("--no-install-recommends"), "{}", lines[0]);
    let steps = [
        "cargo xtask rootfs",
        "cargo xtask kernel --distro debian",
        "cargo xtask run --check",
        "cargo xtask run --share",
    ];
    let mut at = 0;
    for step in steps {
        let found = lines[at..].iter().position(|l| l.starts_with(step));
        at += found.unwrap_or_else(|| panic!("the Quick start lacks `{step}` after line {at}"));
    }
    // Every page README points to exists.
    for link in readme.split("](").skip(1).filter_map(|s| s.split(')').next()) {
        if !link.contains("://") && !link.starts_with('#') {
            assert!(root().join(link).exists(), "README.md links to missing `{link}`");
        }
    }
}
