//! Reading a payload's TAP or KTAP output (kselftest, KUnit) as one test case per test point.
//!
//! [`parse_tap`] never fails: anything malformed lands in [`TapReport::problems`] and makes
//! [`TapReport::passed`] false. The rules, where the formats leave room:
//!
//! - Diagnostic lines (`# …`) and unknown lines (kernel messages) since the previous test point
//!   belong to the next one, as kselftest prints its diagnostics before the result. A TAP 13
//!   YAML block (`---` … `...`) belongs to the test point before it. Lines after the last test
//!   point are dropped unless a synthetic case (plan mismatch, bail out) takes them.
//! - Nested subtests (deeper indentation: KTAP's nested version line, TAP 14's `# Subtest:`)
//!   are named `parent/child` once the parent's result line arrives; the parent stays a case.
//! - Several top-level streams (a script running kselftests one after another) are read one
//!   after another: a version line after a plan or test point starts a new one.
//! - `SKIP`, `TODO` and `XFAIL` directives are recognised in any case; other text after `#`
//!   (`TIMEOUT 45 seconds`, kselftest's `error …`) keeps the `ok`/`not ok` verdict and is
//!   appended to the case's diagnostics. A point without a description is named after its
//!   directive text (kselftest prints `ok 3 # SKIP reason`), else after its number.
//! - kselftest's runner (`run_kselftest.sh`) prints each program's own TAP behind `# `: that
//!   stays diagnostics of the program's test point.

use serde::Serialize;

/// What a TAP stream said, as test cases in the order their result lines appeared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TapReport {
    /// Every test point, nested ones before their parent, plus the synthetic cases named
    /// `plan` (count mismatch, or `1..0 # SKIP`) and `bail out`.
    pub cases: Vec<TapCase>,
    /// The number of top-level tests announced, summed over the top-level streams.
    pub plan: Option<usize>,
    /// The reason given by `Bail out!`; the rest of the output was not read.
    pub bailed_out: Option<String>,
    /// Ways the output broke the format: no TAP at all, numbers out of sequence, …
    pub problems: Vec<String>,
}

/// One test point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TapCase {
    /// Its number within its own (sub)test; 0 for a case the parser made up.
    pub number: usize,
    /// Its description, prefixed `parent/` per nesting level.
    pub name: String,
    /// Its verdict.
    pub outcome: TapOutcome,
    /// The diagnostic and unknown lines printed before it, one per line, as printed.
    pub diagnostics: String,
}

/// The verdict of a test point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "lowercase")]
pub enum TapOutcome {
    /// `ok` without a directive.
    Pass,
    /// `not ok` without a directive, or a synthetic failure.
    Fail,
    /// `# SKIP reason`.
    Skip(String),
    /// `# TODO reason`: not expected to pass yet, so not a failure.
    Todo(String),
    /// `ok … # XFAIL reason`: failed as expected.
    XFail(String),
}

impl TapCase {
    /// Whether this case does not count as a failure.
    pub fn passed(&self) -> bool {
        self.outcome != TapOutcome::Fail
    }
}

impl TapReport {
    /// Whether the output was well-formed TAP with no failing case and no bail out.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
            && self.bailed_out.is_none()
            && self.cases.iter().all(TapCase::passed)
    }

    /// The cases that count as failures.
    pub fn failures(&self) -> impl Iterator<Item = &TapCase> {
        self.cases.iter().filter(|c| !c.passed())
    }
}

/// One (sub)test being read: its indentation, plan, progress and finished cases.
#[derive(Default)]
struct Level {
    indent: usize,
    plan: Option<usize>,
    /// How many test points this stream had, and the number of the last one.
    count: usize,
    last: usize,
    cases: Vec<TapCase>,
    /// Cases of closed subtests, waiting for this level's next result line to name them.
    children: Vec<TapCase>,
    pending: String,
}

impl Level {
    /// Checks the plan and leaves the level ready for another stream.
    fn finish(&mut self) {
        if let Some(plan) = self.plan.take() {
            if plan != self.count {
                let name = "plan".to_string();
                let diagnostics = std::mem::take(&mut self.pending)
                    + &format!("plan: expected {plan} tests, got {}\n", self.count);
                self.cases.push(TapCase {
                    number: 0,
                    name,
                    outcome: TapOutcome::Fail,
                    diagnostics,
                });
            }
        }
        (self.count, self.last) = (0, 0);
    }
}

/// Reads TAP 13/14 or KTAP output; see the module documentation for the rules.
pub fn parse_tap(output: &str) -> TapReport {
    let mut report = TapReport::default();
    let mut levels = vec![Level::default()];
    let mut seen_tap = false;
    let (mut in_yaml, mut after_result) = (false, false);
    for raw in output.lines() {
        let line = raw.trim_end_matches('\r');
        let text = line.trim_start();
        let indent = line.len() - text.len();
        if in_yaml {
            in_yaml = text.trim_end() != "...";
            let top = levels.last_mut().expect("the root level is never popped");
            if let Some(case) = top.cases.last_mut() {
                case.diagnostics.push_str(&format!("{text}\n"));
            }
            continue;
        }
        if let Some(reason) = text.strip_prefix("Bail out!") {
            let reason = reason.trim().to_string();
            let top = levels.last_mut().expect("the root level is never popped");
            let diagnostics = std::mem::take(&mut top.pending) + &reason;
            let outcome = TapOutcome::Fail;
            report.cases.push(TapCase { number: 0, name: "bail out".into(), outcome, diagnostics });
            report.bailed_out = Some(reason);
            break;
        }
        let version = text.starts_with("TAP version ") || text.starts_with("KTAP version ");
        let plan = parse_plan(text);
        let result = parse_result(text);
        if !version && plan.is_none() && result.is_none() {
            if after_result && text.trim_end() == "---" {
                in_yaml = true;
                let top = levels.last_mut().expect("the root level is never popped");
                if let Some(case) = top.cases.last_mut() {
                    case.diagnostics.push_str("---\n");
                }
                continue;
            }
            after_result = false;
            // A diagnostic belongs to the innermost level not deeper than itself; an unknown
            // line (kernel noise) to whatever runs now, as its indentation means nothing.
            let at = match text.starts_with('#') {
                true => levels.iter().rposition(|l| l.indent <= indent).unwrap_or(0),
                false => levels.len() - 1,
            };
            levels[at].pending.push_str(&format!("{text}\n"));
            continue;
        }
        if !seen_tap {
            seen_tap = true;
            levels[0].indent = indent;
        }
        after_result = result.is_some();
        close_levels(&mut levels, indent, &mut report.problems);
        if indent > levels.last().expect("root").indent {
            levels.push(Level { indent, ..Level::default() });
        }
        let at_root = levels.len() == 1;
        let top = levels.last_mut().expect("the root level is never popped");
        if version && (top.plan.is_some() || top.count > 0) {
            top.finish();
            top.pending.clear();
        } else if let Some((n, skip)) = plan {
            if top.plan.is_some() {
                report.problems.push(format!("a second plan `{}` in one stream", text.trim()));
            }
            top.plan = Some(n);
            if at_root {
                report.plan = Some(report.plan.unwrap_or(0) + n);
            }
            if let (0, Some(reason)) = (n, skip) {
                let (name, diagnostics) = ("plan".to_string(), std::mem::take(&mut top.pending));
                let outcome = TapOutcome::Skip(reason);
                top.cases.push(TapCase { number: 0, name, outcome, diagnostics });
            }
        } else if let Some((number, mut case)) = result {
            let expected = top.last + 1;
            let number = number.unwrap_or(expected);
            if number != expected {
                report.problems.push(format!(
                    "test {number} `{}` out of sequence: expected test {expected}",
                    case.name
                ));
            }
            (top.count, top.last) = (top.count + 1, number);
            case.number = number;
            if case.name.is_empty() {
                case.name = number.to_string();
            }
            case.diagnostics = std::mem::take(&mut top.pending) + &case.diagnostics;
            for mut child in top.children.drain(..) {
                child.name = format!("{}/{}", case.name, child.name);
                top.cases.push(child);
            }
            top.cases.push(case);
        }
    }
    // After a bail out, missing tests and parents are expected: the bail out says it all.
    let bailed = report.bailed_out.is_some();
    let mut root = Level::default();
    for mut level in levels.into_iter().rev() {
        level.children.append(&mut root.cases);
        level.children.append(&mut root.children);
        if !bailed {
            level.finish();
        }
        root = level;
    }
    if !root.children.is_empty() && !bailed {
        report.problems.push("the output ended inside a test that has subtests".into());
    }
    report.cases.splice(0..0, root.cases.into_iter().chain(root.children));
    if !seen_tap && !bailed {
        report.problems.push("no TAP found: no version line, plan or test point".into());
    }
    report
}

/// Closes the subtests deeper than `indent`, handing their cases to the parent.
fn close_levels(levels: &mut Vec<Level>, indent: usize, problems: &mut Vec<String>) {
    while levels.len() > 1 && levels.last().expect("root").indent > indent {
        let mut done = levels.pop().expect("checked above");
        done.finish();
        let parent = levels.last_mut().expect("checked above");
        if parent.indent < indent {
            problems.push(format!("a line indented by {indent} matches no open (sub)test"));
        }
        parent.children.append(&mut done.cases);
        parent.children.append(&mut done.children);
        parent.pending.insert_str(0, &done.pending);
    }
}

/// `1..N`, with the reason of a trailing `# SKIP reason`.
fn parse_plan(text: &str) -> Option<(usize, Option<String>)> {
    let (plan, comment) = split_comment(text.strip_prefix("1..")?);
    let n = plan.trim().parse().ok()?;
    let skip = comment.and_then(|c| directive(c, "SKIP")).map(str::to_string);
    Some((n, skip))
}

/// `ok`/`not ok`, an optional number, a description and directive; the number stays apart
/// so that a missing one can be inferred.
fn parse_result(text: &str) -> Option<(Option<usize>, TapCase)> {
    let (ok, rest) = match (text.strip_prefix("not ok"), text.strip_prefix("ok")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return None,
    };
    if !(rest.is_empty() || rest.starts_with([' ', '\t', '#'])) {
        return None;
    }
    let rest = rest.trim_start();
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let number = rest[..digits].parse().ok();
    let (description, comment) = split_comment(&rest[digits..]);
    let description = description.trim();
    let description = description.strip_prefix("- ").unwrap_or(description).trim();
    let comment = comment.map(str::trim).unwrap_or("");
    let mut diagnostics = String::new();
    let (outcome, text) = if let Some(reason) = directive(comment, "SKIP") {
        (TapOutcome::Skip(reason.into()), reason)
    } else if let Some(reason) = directive(comment, "TODO") {
        (TapOutcome::Todo(reason.into()), reason)
    } else if let Some(reason) = directive(comment, "XFAIL").filter(|_| ok) {
        (TapOutcome::XFail(reason.into()), reason)
    } else {
        if !comment.is_empty() {
            diagnostics = format!("# {comment}\n");
        }
        (if ok { TapOutcome::Pass } else { TapOutcome::Fail }, comment)
    };
    let name = match description {
        "" => text.into(),
        _ => description.into(),
    };
    Some((number, TapCase { number: 0, name, outcome, diagnostics }))
}

/// Splits at the first `#` not escaped as `\#`.
fn split_comment(text: &str) -> (&str, Option<&str>) {
    let hash = text.char_indices().find(|&(i, c)| c == '#' && !text[..i].ends_with('\\'));
    match hash {
        Some((i, _)) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    }
}

/// The text after `keyword` (any case, e.g. `skip`, `SKIPPED`) that starts `comment`.
fn directive<'a>(comment: &'a str, keyword: &str) -> Option<&'a str> {
    let comment = comment.trim_start();
    let head = comment.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = comment[keyword.len()..].trim_start_matches(|c: char| c.is_ascii_alphabetic());
    Some(rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use TapOutcome::*;

    /// `(name, outcome)` of every case, for compact assertions.
    fn summary(report: &TapReport) -> Vec<(&str, TapOutcome)> {
        report.cases.iter().map(|c| (c.name.as_str(), c.outcome.clone())).collect()
    }

    #[test]
    fn kselftest_output_gives_one_case_per_test_point() {
        let out = "TAP version 13\r\n1..5\n# starting\n# opening /dev/foo\nok 1 test_a\n\
                   not ok 2 test_b\nok 3 test_c # SKIP no device\nok 4 # XFAIL known bug\n\
                   not ok 5 # error setup failed\n\
                   # Totals: pass:1 fail:1 xfail:1 xpass:0 skip:1 error:1\n";
        let report = parse_tap(out);
        let skip = Skip("no device".into());
        let expected = [
            ("test_a", Pass),
            ("test_b", Fail),
            ("test_c", skip),
            ("known bug", XFail("known bug".into())),
            ("error setup failed", Fail),
        ];
        assert_eq!(summary(&report), expected);
        assert_eq!(report.cases[0].diagnostics, "# starting\n# opening /dev/foo\n");
        assert_eq!(report.cases[4].diagnostics, "# error setup failed\n");
        assert_eq!((report.plan, report.problems.len()), (Some(5), 0));
        assert!(!report.passed());
        let failed: Vec<_> = report.failures().map(|c| c.number).collect();
        assert_eq!(failed, [2, 5]);
    }

    #[test]
    fn all_passing_tap13_with_yaml_and_todo_passes() {
        let out = "TAP version 13\n1..4\nok 1 - first\n  ---\n  got: 1\n  ...\n\
                   not ok 2 - second # TODO not written\nok - third\nok # rcode=0\n";
        let report = parse_tap(out);
        let todo = Todo("not written".into());
        let expected = [("first", Pass), ("second", todo), ("third", Pass), ("rcode=0", Pass)];
        assert_eq!(summary(&report), expected);
        assert_eq!(report.cases[0].diagnostics, "---\ngot: 1\n...\n");
        assert_eq!((report.cases[2].number, report.cases[3].number), (3, 4));
        assert_eq!(report.cases[3].diagnostics, "# rcode=0\n");
        assert!(report.passed(), "{report:#?}");
    }

    #[test]
    fn nested_ktap_is_flattened_into_paths() {
        let out = "KTAP version 1\n1..1\n  KTAP version 1\n  1..2\n    KTAP version 1\n\
                   \x20   1..1\n    # test_1: initializing\n    ok 1 test_1\n  ok 1 suite_a\n\
                   \x20   KTAP version 1\n    1..2\n    ok 1 test_1 # SKIP no hw\n\
                   \x20   not ok 2 test_2\n  not ok 2 suite_b\n# main failed\nnot ok 1 main\n";
        let report = parse_tap(out);
        let expected = [
            ("main/suite_a/test_1", Pass),
            ("main/suite_a", Pass),
            ("main/suite_b/test_1", Skip("no hw".into())),
            ("main/suite_b/test_2", Fail),
            ("main/suite_b", Fail),
            ("main", Fail),
        ];
        assert_eq!(summary(&report), expected);
        assert_eq!(report.cases[0].diagnostics, "# test_1: initializing\n");
        assert_eq!(report.cases[5].diagnostics, "# main failed\n");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn tap14_subtest_nests_by_indentation() {
        let out = "TAP version 14\n1..1\n    # Subtest: group\n    1..1\n    ok 1 - inner\n\
                   ok 1 - group\n";
        let report = parse_tap(out);
        assert_eq!(summary(&report), [("group/inner", Pass), ("group", Pass)]);
        assert!(report.passed(), "{report:#?}");
    }

    #[test]
    fn bail_out_fails_and_stops_reading() {
        let out = "TAP version 13\n1..3\nok 1 a\n# no /sys/kernel/debug\nBail out! need debugfs\n\
                   ok 2 b\n";
        let report = parse_tap(out);
        assert_eq!(summary(&report), [("a", Pass), ("bail out", Fail)]);
        assert_eq!(report.bailed_out.as_deref(), Some("need debugfs"));
        assert_eq!(report.cases[1].diagnostics, "# no /sys/kernel/debug\nneed debugfs");
        assert!(report.problems.is_empty() && !report.passed());
    }

    #[test]
    fn fewer_test_points_than_planned_is_a_failed_case() {
        let report = parse_tap("TAP version 13\n1..3\nok 1 a\nok 2 b\nSegmentation fault\n");
        assert_eq!(summary(&report), [("a", Pass), ("b", Pass), ("plan", Fail)]);
        let diagnostics = &report.cases[2].diagnostics;
        assert_eq!(diagnostics, "Segmentation fault\nplan: expected 3 tests, got 2\n");
        assert!(!report.passed());
    }

    #[test]
    fn kernel_messages_interleaved_are_diagnostics_of_the_running_test() {
        let out =
            "[    1.0] virtio_blk virtio1: [vda] 8192 512-byte logical blocks\nTAP version 13\n\
                   1..2\n[   12.3] random: crng init done\nok 1 first\n\
                   [   12.9] BUG: kernel NULL pointer dereference\nnot ok 2 second\n";
        let report = parse_tap(out);
        assert_eq!(summary(&report), [("first", Pass), ("second", Fail)]);
        assert_eq!(report.cases[0].diagnostics, "[    1.0] virtio_blk virtio1: [vda] 8192 512-byte logical blocks\n[   12.3] random: crng init done\n");
        assert_eq!(report.cases[1].diagnostics, "[   12.9] BUG: kernel NULL pointer dereference\n");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn a_wholly_indented_stream_is_not_nested() {
        let report = parse_tap("  TAP version 13\n  1..2\n  ok 1 a\n\tnot ok 2 b\n");
        assert_eq!(summary(&report), [("a", Pass), ("b", Fail)]);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn output_without_tap_is_a_problem() {
        for out in ["", "hello\nworld\n", "okay then\n"] {
            let report = parse_tap(out);
            assert!(report.cases.is_empty(), "{out:?}: {report:?}");
            assert_eq!(report.problems, ["no TAP found: no version line, plan or test point"]);
            assert!(!report.passed());
        }
    }

    #[test]
    fn several_streams_skipped_plans_and_bad_numbers() {
        let out = "TAP version 13\n1..0 # SKIP not root\n# Totals: skip:1\nTAP version 13\n1..2\n\
                   ok 1 a\nok 3 b\nok 4 # SKIP\n";
        let report = parse_tap(out);
        let skip = Skip("not root".into());
        let expected =
            [("plan", skip), ("a", Pass), ("b", Pass), ("4", Skip("".into())), ("plan", Fail)];
        assert_eq!(summary(&report), &expected[..]);
        assert_eq!(report.cases[1].diagnostics, "");
        assert_eq!(report.cases[4].diagnostics, "plan: expected 2 tests, got 3\n");
        assert_eq!(report.plan, Some(2));
        assert_eq!(report.problems, ["test 3 `b` out of sequence: expected test 2"]);
        assert!(!report.passed());
    }
}
