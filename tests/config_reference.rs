//! README.md's configuration reference checked against the code, so it cannot drift:
//! the flag table under `## Configuration` against `ServeArgs` (both ways), the
//! `### Other commands` text against the binary's `--help`, and every environment
//! variable named in README.md, src/, helm/ or the Dockerfile against the two tables.
//!
//! Rule for the default cell: clap's literal default in backticks (several joined with
//! `,`); `off` for a switch; empty when clap has none, the meaning then says what unset
//! does. No exceptions, so `--catalogue` shows an empty default, not `built-in`.

use std::{collections::BTreeSet, fs, path::Path, process::Command as Process};

use clap::{Arg, ArgAction, Args, Command};
use tenantry::config::ServeArgs;

const BIN: &str = env!("CARGO_BIN_EXE_tenantry");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Variables read by tests or by the example clients (`clients/`), never by the service.
const NOT_SERVER_VARIABLES: [&str; 4] = [
    "TENANTRY_TEST_DATABASE_URL",
    "TENANTRY_CRASH_SEED",
    "TENANTRY_ADDR",
    "TENANTRY_TOKEN",
];

/// A markdown table row: its README line number and trimmed cells.
struct Row {
    line: usize,
    cells: Vec<String>,
}

/// The `## Configuration` section: README line numbers with text, up to the next `## `.
fn configuration_section() -> Vec<(usize, String)> {
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).expect("read README.md");
    let lines: Vec<(usize, String)> = readme
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.to_owned()))
        .skip_while(|(_, l)| l.trim() != "## Configuration")
        .collect();
    assert!(
        !lines.is_empty(),
        "README.md has no `## Configuration` heading"
    );
    let end = lines[1..]
        .iter()
        .position(|(_, l)| l.starts_with("## "))
        .map_or(lines.len(), |i| i + 1);
    lines[..end].to_vec()
}

/// The lines of the `### title` subsection, or the part before the first `###` if `None`.
fn part(section: &[(usize, String)], title: Option<&str>) -> Vec<(usize, String)> {
    let mut current = None;
    let mut out = Vec::new();
    for (n, line) in &section[1..] {
        if let Some(heading) = line.strip_prefix("### ") {
            current = Some(heading.trim().to_owned());
        } else if current.as_deref() == title {
            out.push((*n, line.clone()));
        }
    }
    out
}

/// Cells of a table line, split on unescaped `|` as GitHub does.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '|' => cells.push(String::new()),
            '\\' if chars.next_if_eq(&'|').is_some() => cells.last_mut().expect("a cell").push('|'),
            c => cells.last_mut().expect("a cell").push(c),
        }
    }
    cells.iter().map(|c| c.trim().to_owned()).collect()
}

/// The one table in `lines`, checked to have `header`; its body rows.
fn table(lines: &[(usize, String)], header: &[&str], place: &str) -> Vec<Row> {
    let rows: Vec<Row> = lines
        .iter()
        .filter(|(_, l)| l.trim_start().starts_with('|'))
        .map(|(n, l)| Row {
            line: *n,
            cells: cells(l),
        })
        .collect();
    assert!(
        rows.len() > 2,
        "README.md {place}: expected a table with columns {header:?}"
    );
    assert_eq!(
        rows[0].cells, header,
        "README.md line {}: the table {place} must have the columns {header:?}",
        rows[0].line
    );
    rows.into_iter().skip(2).collect()
}

/// `text` in backticks, or empty.
fn code(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("`{text}`")
    }
}

/// A cell for a message: as written, or `(empty)`.
fn shown(cell: &str) -> &str {
    if cell.is_empty() { "(empty)" } else { cell }
}

/// The arguments of `tenantry serve` as built from the code, without help and version.
fn serve_arguments() -> Vec<Arg> {
    let mut command = ServeArgs::augment_args(Command::new("serve"));
    command.build();
    command
        .get_arguments()
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        .filter(|a| !a.is_hide_set())
        .cloned()
        .collect()
}

/// The environment variable of `arg`, if any.
fn env_of(arg: &Arg) -> Option<String> {
    arg.get_env().map(|e| e.to_string_lossy().into_owned())
}

/// What the default cell must say for `arg` (see the rule at the top).
fn default_cell(arg: &Arg) -> String {
    match arg.get_action() {
        ArgAction::SetTrue => "off".into(),
        ArgAction::SetFalse => "on".into(),
        _ => match arg.get_default_values() {
            [] => String::new(),
            [one] if one.is_empty() => "`\"\"`".into(),
            values => code(
                &values
                    .iter()
                    .map(|v| v.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        },
    }
}

#[test]
fn the_configuration_table_matches_the_flags_of_serve_both_ways() {
    let section = configuration_section();
    let rows = table(
        &part(&section, None),
        &["flag", "env", "default", "meaning"],
        "under `## Configuration`",
    );
    let mut problems = Vec::new();
    for row in rows.iter().filter(|r| r.cells.len() != 4) {
        problems.push(format!("line {}: a row needs 4 cells", row.line));
    }
    let arguments = serve_arguments();
    let mut matched = BTreeSet::new();
    for arg in &arguments {
        let Some(long) = arg.get_long() else {
            problems.push(format!(
                "`{}` is positional: give it a --long flag",
                arg.get_id()
            ));
            continue;
        };
        let flag = code(&format!("--{long}"));
        let env = code(&env_of(arg).unwrap_or_default());
        let default = default_cell(arg);
        let found: Vec<&Row> = rows.iter().filter(|r| r.cells[0] == flag).collect();
        let row = match found.as_slice() {
            [] => {
                let meaning = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let row = format!("| {flag} | {env} | {default} | {meaning} |");
                problems.push(format!(
                    "{flag} (src/config.rs) has no row; add: {}",
                    row.replace("|  |", "| |")
                ));
                continue;
            }
            [row] => row,
            more => {
                let lines: Vec<usize> = more.iter().map(|r| r.line).collect();
                matched.extend(lines.iter().copied());
                problems.push(format!("{flag} has rows on lines {lines:?}; keep one"));
                continue;
            }
        };
        matched.insert(row.line);
        let n = row.line;
        let Some([_, row_env, row_default, meaning]) = row.cells.get(..4) else {
            continue;
        };
        if *row_env != env {
            problems.push(format!(
                "line {n}, {flag}: env cell is {}; the code's is {}, write that",
                shown(row_env),
                shown(&env)
            ));
        }
        if *row_default != default {
            problems.push(format!(
                "line {n}, {flag}: default cell is {}; the code's is {}, write that \
                 (clap's literal default, `off` for a switch, empty when none)",
                shown(row_default),
                shown(&default)
            ));
        }
        if meaning.is_empty() {
            problems.push(format!("line {n}, {flag}: the meaning cell is empty"));
        }
        for value in arg
            .get_possible_values()
            .iter()
            .filter(|_| arg.get_action().takes_values())
        {
            let value = code(value.get_name());
            if !value.is_empty() && !meaning.contains(&value) {
                problems.push(format!("line {n}, {flag}: the meaning must list {value}"));
            }
        }
    }
    for row in rows.iter().filter(|r| !matched.contains(&r.line)) {
        problems.push(format!(
            "line {}: {} is not a flag of `tenantry serve` (ServeArgs in src/config.rs); \
             remove the row or add the flag",
            row.line, row.cells[0]
        ));
    }
    assert!(
        problems.is_empty(),
        "README.md's `## Configuration` table has drifted from src/config.rs:\n- {}",
        problems.join("\n- ")
    );
}

/// Names in backticks of the telemetry table, checked to be no flag's variable.
fn telemetry_variables() -> Vec<String> {
    let section = configuration_section();
    let rows = table(
        &part(&section, Some("Telemetry environment")),
        &["variable", "default", "meaning"],
        "under `### Telemetry environment`",
    );
    let flag_variables: BTreeSet<String> = serve_arguments().iter().filter_map(env_of).collect();
    rows.iter()
        .map(|row| {
            let name = row.cells[0].trim_matches('`').to_owned();
            assert!(
                row.cells.len() == 3 && !row.cells[2].is_empty() && !name.is_empty(),
                "README.md line {}: a telemetry row needs `NAME`, a default and a meaning",
                row.line
            );
            assert!(
                !flag_variables.contains(&name),
                "README.md line {}: {name} sets a flag; document it in the flag table only",
                row.line
            );
            name
        })
        .collect()
}

/// Identifiers that look like tenantry's environment variables in `text`.
fn variables_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            w.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .filter(|w| {
            ["TENANTRY_", "OTEL_", "STRIPE_"]
                .iter()
                .any(|p| w.starts_with(p))
                || matches!(*w, "DATABASE_URL" | "RUST_LOG")
        })
        .map(str::to_owned)
        .collect()
}

/// Text files under `dir` (bounded depth), or `dir` itself when it is a file.
fn files(dir: &Path, depth: u32, out: &mut Vec<std::path::PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_owned());
    } else if let (true, Ok(entries)) = (depth > 0, fs::read_dir(dir)) {
        for entry in entries.flatten() {
            files(&entry.path(), depth - 1, out);
        }
    }
}

#[test]
fn every_environment_variable_named_in_the_repository_is_documented() {
    let mut documented: BTreeSet<String> = telemetry_variables().into_iter().collect();
    documented.extend(serve_arguments().iter().filter_map(env_of));
    documented.extend(NOT_SERVER_VARIABLES.map(String::from));
    let mut paths = Vec::new();
    for place in ["README.md", "Dockerfile", "helm", "src"] {
        files(&Path::new(ROOT).join(place), 8, &mut paths);
    }
    // A family such as `OTEL_BSP_*` (written `OTEL_BSP_` once split) is documented by
    // naming it with its `*` anywhere in the section.
    let section: String = configuration_section()
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    let mut problems = Vec::new();
    for path in &paths {
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        for name in variables_in(&text).difference(&documented) {
            if !(name.ends_with('_') && section.contains(&format!("{name}*"))) {
                let place = path.strip_prefix(ROOT).unwrap_or(path).display();
                problems.push(format!("{place} names {name}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "environment variables missing from README.md's `## Configuration`: add each as a flag \
         row (if it is a clap `env`) or a row of `### Telemetry environment` (a family \
         `X_*` may be named in its text):\n- {}",
        problems.join("\n- ")
    );
}

/// Subcommands, positional arguments and `--long` options listed by `tenantry PATH -h`.
fn help(path: &[String]) -> [Vec<String>; 3] {
    let output = Process::new(BIN)
        .args(path)
        .arg("-h")
        .output()
        .expect("run tenantry -h");
    assert!(output.status.success(), "tenantry {path:?} -h failed");
    let text = String::from_utf8(output.stdout).expect("utf-8 help");
    let (mut commands, mut arguments, mut options) = (Vec::new(), Vec::new(), Vec::new());
    let mut heading = "";
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        match (indent, heading) {
            (0, _) => heading = line.strip_suffix(':').unwrap_or(""),
            (7.., _) => {}
            (_, "Commands") if first != "help" => commands.push(first.to_owned()),
            (_, "Arguments") => arguments.push(first.trim_matches(['<', '>', '[', ']', '.'])),
            (_, "Options") => options.extend(
                std::iter::once(first)
                    .chain(words.next())
                    .map(|w| w.trim_end_matches(','))
                    .filter(|w| w.starts_with("--") && !["--help", "--version"].contains(w))
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    let arguments = arguments.into_iter().map(str::to_owned).collect();
    [commands, arguments, options]
}

#[test]
fn every_command_of_the_binary_and_its_own_flags_are_described() {
    let section = configuration_section();
    let text: String = section.iter().map(|(_, l)| format!("{l} ")).collect();
    let spans: Vec<Vec<&str>> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|s| {
            s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .filter(|w| !w.is_empty())
                .collect()
        })
        .collect();
    let table_flags: BTreeSet<String> = serve_arguments()
        .iter()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let [top, _, _] = help(&[]);
    assert!(
        top.contains(&"serve".to_owned()),
        "tenantry -h lists no `serve`: {top:?}"
    );
    let mut problems = Vec::new();
    for command in top.iter().filter(|c| *c != "serve") {
        let words: BTreeSet<&str> = spans
            .iter()
            .filter(|s| s.starts_with(&["tenantry", command]))
            .flatten()
            .copied()
            .collect();
        if words.is_empty() {
            problems.push(format!("no `tenantry {command} …` in `### Other commands`"));
            continue;
        }
        let mut queue = vec![vec![command.clone()]];
        while let Some(path) = queue.pop().filter(|p| p.len() < 5) {
            let [commands, arguments, options] = help(&path);
            let own = options.into_iter().filter(|o| !table_flags.contains(o));
            for word in commands.iter().chain(&arguments).cloned().chain(own) {
                if !words.contains(word.as_str()) {
                    let path = path.join(" ");
                    problems.push(format!(
                        "`tenantry {path}` has {word}: name it in a `tenantry {command} …` \
                         code span under `### Other commands`"
                    ));
                }
            }
            queue.extend(
                commands
                    .into_iter()
                    .map(|c| [path.clone(), vec![c]].concat()),
            );
        }
    }
    assert!(
        problems.is_empty(),
        "README.md's `### Other commands` has drifted from `tenantry --help`:\n- {}",
        problems.join("\n- ")
    );
}
