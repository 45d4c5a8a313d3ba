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

/// `src/`'s modules, lowest layer first: a module names (`crate::…`, `super::…`, outside
/// `#[cfg(test)]`) only modules of lower layers. ARCHITECTURE.md gives the same order.
const LAYERS: &[&[&str]] = &[
    &["error", "progress", "testing"],
    &["arch"],
    &["host"],
    &["tree"],
    &["image"],
    &["config"],
    &["context", "inputs"],
    &["pipeline"],
    &["vm"],
    &["matrix", "lava", "buildscript"],
];

/// The same inside `src/vm/`.
const VM_LAYERS: &[&[&str]] = &[
    &["process", "tap", "kconfig", "event"],
    &["accel", "console", "share", "modules", "kernel"],
    &["report", "channel", "layer"],
    &["spec"],
    &["guest", "check"],
    &["qemu", "kvmtool", "firecracker", "cloud_hypervisor", "custom", "attach"],
    &["vmm"],
    &["session"],
    &["api"],
];

/// The code of `text`, line by line, without comments and string contents, and without the
/// items under `#[cfg(test)]`.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let (mut depth, mut skip_above, mut pending) = (0i32, None::<i32>, false);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut code = String::new();
        let mut in_str = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_str => {
                    chars.next();
                }
                '"' => in_str = !in_str,
                '/' if !in_str && chars.peek() == Some(&'/') => break,
                '\'' if !in_str => {
                    // A char literal ('{', '"') is skipped; a lifetime is kept.
                    let rest: String = chars.clone().take(3).collect();
                    if rest.chars().nth(1) == Some('\'') || rest.starts_with('\\') {
                        let len = if rest.starts_with('\\') { 3 } else { 2 };
                        chars.nth(len - 1);
                    }
                }
                _ if in_str => {}
                _ => code.push(c),
            }
        }
        let trimmed = code.trim();
        if skip_above.is_none() && trimmed.starts_with("#[cfg(test)]") {
            pending = true;
            continue;
        }
        let opens = code.matches('{').count() as i32 - code.matches('}').count() as i32;
        if pending && !trimmed.starts_with("#[") && !trimmed.is_empty() {
            pending = false;
            if opens > 0 {
                skip_above = Some(depth);
            }
            depth += opens;
            continue;
        }
        depth += opens;
        match skip_above {
            Some(level) if depth <= level => skip_above = None,
            Some(_) => {}
            None => out.push((n + 1, code)),
        }
    }
    out
}

/// The paths (their first `n + 1` names at most) the `use` tree or path at the start of `s`
/// names, `{…}` groups expanded.
fn paths(s: &str, n: usize) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' | ',' if depth == 0 => {
                    out.extend(paths(&group[start..i], n));
                    start = i + 1;
                    if c == '}' {
                        break;
                    }
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        return out;
    }
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    let name = s[..end].to_string();
    match s[end..].strip_prefix("::").filter(|_| n > 0) {
        Some(rest) => {
            paths(rest, n - 1).into_iter().map(|p| [vec![name.clone()], p].concat()).collect()
        }
        None if name.is_empty() => Vec::new(),
        None => vec![vec![name]],
    }
}

/// Every module-to-module reference in `src/` (outside tests) as (file:line, from, to), at the
/// top level (`scope` empty) or among the submodules of `scope`. A name the scope's `lib.rs`
/// or `mod.rs` re-exports counts as naming the module it comes from.
fn references(scope: &str) -> Vec<(String, String, String)> {
    let src = root().join("src");
    let facade = if scope.is_empty() { src.join("lib.rs") } else { src.join(scope).join("mod.rs") };
    let code_of = |file: &Path| code_lines(&std::fs::read_to_string(file).unwrap());
    let facade_code: String = code_of(&facade).into_iter().map(|(_, c)| c + "\n").collect();
    let reexports: Vec<(String, String)> = (facade_code.split("use ").skip(1))
        .flat_map(|statement| paths(statement, usize::MAX))
        .map(|p| (p.last().unwrap().clone(), p[0].clone()))
        .collect();
    let depth = usize::from(!scope.is_empty());
    let mut files = Vec::new();
    rust_files(&src.join(scope), &mut files);
    let mut out = Vec::new();
    for file in files.iter().filter(|f| **f != facade) {
        let rel = file.strip_prefix(&src).unwrap();
        let mut module: Vec<String> =
            rel.with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        // The whole file at once, so that a `use` group may span lines.
        let lines = code_of(file);
        let code: String = lines.iter().map(|(_, c)| format!("{c}\n")).collect();
        for (at, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
            let before = code[..at].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' || code[..at].ends_with("super::") {
                continue; // another crate's path, or counted from the first `super::`
            }
            let (mut base, mut rest) = (module.clone(), &code[at..]);
            if let Some(r) = rest.strip_prefix("crate::") {
                (base, rest) = (Vec::new(), r);
            }
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            for path in paths(rest, depth) {
                let target = [base.clone(), path].concat();
                if !scope.is_empty() && target[0] != scope {
                    continue;
                }
                let Some(name) = target.get(depth) else { continue };
                let to = reexports.iter().find(|(n, _)| n == name).map_or(name, |(_, m)| m);
                if *to != module[depth] {
                    let line = lines[code[..at].matches('\n').count()].0;
                    out.push((
                        format!("src/{}:{line}", rel.display()),
                        module[depth].clone(),
                        to.clone(),
                    ));
                }
            }
        }
    }
    out
}

/// The references among `scope`'s modules that go against `layers`.
fn upward_references(scope: &str, layers: &[&[&str]]) -> Vec<String> {
    let layer = |m: &str| layers.iter().position(|l| l.contains(&m));
    let mut problems = Vec::new();
    for (place, from, to) in references(scope) {
        match (layer(&from), layer(&to)) {
            (Some(a), Some(b)) if b < a => {}
            (Some(_), Some(_)) => problems.push(format!("{place}: `{from}` names `{to}`")),
            (None, _) => problems.push(format!("{place}: `{from}` is in no layer")),
            (_, None) => {} // a name re-exported from outside `scope` (`crate::Error`)
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

/// The top level in [`LAYERS`]' order, `src/vm/` in [`VM_LAYERS`]'.
#[test]
fn modules_depend_downward_only() {
    let mut problems = upward_references("", LAYERS);
    problems.extend(upward_references("vm", VM_LAYERS));
    assert!(
        problems.is_empty(),
        "a module names one of its own or a higher layer (tests/it/tidy.rs LAYERS and \
         VM_LAYERS, ARCHITECTURE.md): move the item down or the reference up:\n{}",
        problems.join("\n")
    );
}
