//! Rules about the code itself that the compiler does not check, checked
//! here so they hold as facts: fanin-core is pure (its dependency tree holds
//! no runtime crate, and its code outside tests names no clock, randomness,
//! file, socket, process or environment: a change that needs one belongs in
//! the runtime, which hands the core what it read), the runtime's modules
//! import only from lower layers (ARCHITECTURE.md names them), and no
//! function outside tests is longer than a screenful or two.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The runtime's layers, lowest first. A module may name its own layer's
/// modules only when they share a line here, and any module of a line
/// above it. fanin-core's modules, re-exported under their own names
/// (`crate::event`, `crate::sop`, …), sit below all of them.
const LAYERS: &[&[&str]] = &[
    &["backoff", "causes", "ids", "config", "sop", "test_support", "trust"],
    &["store"],
    &["cluster"],
    &["registries"],
    &["http"],
    &["dispatch"],
    &["deliver", "sources"],
    &["operations"],
    &["gateway"],
    &["console"],
    &["daemon"],
    &["cli"],
];

/// fanin-core's modules as the runtime re-exports them.
const CORE: &[&str] = &[
    "admission",
    "checks",
    "cron",
    "envelope",
    "event",
    "matching",
    "net",
    "proptest_support",
    "records",
    "runs",
    "topic",
];

/// Crates that do I/O or run tasks: none may be reachable from fanin-core
/// through normal dependencies.
const RUNTIME_CRATES: &[&str] = &[
    "tokio",
    "mio",
    "hyper",
    "axum",
    "tower",
    "reqwest",
    "rusqlite",
    "libsqlite3-sys",
    "rumqttc",
    "tokio-postgres",
    "postgres",
    "sqlx",
    "lapin",
    "async-imap",
    "notify",
    "tokio-serial",
    "uuid",
    "rand",
];

/// What pure code never names (outside tests).
const EFFECTS: &[&str] = &[
    "Utc::now",
    "Local::now",
    "SystemTime",
    "Instant::now",
    "now_v7",
    "new_v4",
    "std::fs",
    "std::env",
    "std::net::Tcp",
    "std::net::Udp",
    "std::process",
    "std::thread",
    "File::open",
    "rand::",
    "tracing::",
];

/// Longest a function outside tests may be, in lines.
const MAX_FUNCTION_LINES: usize = 100;

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

/// Whether a whole file is test code by the project's naming.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    ["tests.rs", "props.rs", "test_support.rs", "proptest_support.rs"].contains(&name.as_ref())
        || path.components().any(|c| c.as_os_str() == "tests")
}

/// `text` with comments, string and character literals blanked out (same
/// length, newlines kept), so braces and paths inside them do not count.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, from: &[char]| {
        out.extend(from.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
    };
    while i < chars.len() {
        let rest = &chars[i..];
        let next = |n: usize| rest.get(n).copied();
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let end = if rest.starts_with(&['/', '/']) {
            rest.iter().position(|&c| c == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            (2..rest.len()).find(|&j| rest[j - 1] == '*' && rest[j] == '/').map_or(rest.len(), |j| j + 1)
        } else if starts_word && (next(0) == Some('r') || (next(0) == Some('b') && next(1) == Some('r'))) {
            let start = if next(0) == Some('b') { 2 } else { 1 };
            let hashes = rest[start..].iter().take_while(|&&c| c == '#').count();
            if next(start + hashes) == Some('"') {
                let body = start + hashes + 1;
                let closing: Vec<char> = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
                (body..rest.len()).find(|&j| rest[j..].starts_with(&closing)).map_or(rest.len(), |j| j + closing.len())
            } else {
                0
            }
        } else if next(0) == Some('"') {
            let mut j = 1;
            while j < rest.len() && rest[j] != '"' {
                j += if rest[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if next(0) == Some('\'') {
            // A character literal ('{', '\n', '\u{7f}'), not a lifetime.
            match (next(1), next(2)) {
                (Some('\\'), _) => rest.iter().skip(2).position(|&c| c == '\'').map_or(0, |p| p + 3),
                (Some(_), Some('\'')) => 3,
                _ => 0,
            }
        } else {
            0
        };
        if end == 0 {
            out.push(chars[i]);
            i += 1;
        } else {
            let end = end.min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        }
    }
    out
}

/// The part of a source file that is not test code: test files are empty,
/// and a file's `#[cfg(test)] mod tests`, which sits at its end by the
/// project's convention, is cut off.
fn non_test_code(path: &Path) -> String {
    if is_test_file(path) {
        return String::new();
    }
    let code = code_only(&std::fs::read_to_string(path).unwrap());
    match code.find("#[cfg(test)]\nmod tests") {
        Some(at) => code[..at].to_string(),
        None => code,
    }
}

/// Every `crate::<name>` a piece of code names, groups (`crate::{a, b}`)
/// included.
fn crate_names(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                names.push(name);
            }
        } else {
            names.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The runtime module a file of `src/` belongs to (`src/gateway/auth.rs` is
/// `gateway`, `src/ids.rs` is `ids`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?.as_os_str().to_string_lossy().to_string();
    let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (module != "lib" && module != "main").then_some(module)
}

#[test]
fn runtime_modules_import_only_from_lower_layers() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let Some(own) = layer_of(&module) else {
            found.push(format!("{}: module `{module}` has no layer in tests/tidy.rs", file.display()));
            continue;
        };
        for name in crate_names(&non_test_code(file)) {
            if name == module || CORE.contains(&name.as_str()) {
                continue;
            }
            match layer_of(&name) {
                Some(layer) if layer < own || (layer == own && LAYERS[own].len() == 1) => {}
                Some(layer) if layer == own && own == 0 => {}
                _ => found.push(format!("{}: `{module}` names `crate::{name}`", file.display())),
            }
        }
    }
    found.sort();
    found.dedup();
    assert!(found.is_empty(), "imports against the layers:\n{}", found.join("\n"));
}

/// The length in lines of each function in `code` that has a body, with the
/// line it starts on and its name.
fn functions(code: &str) -> Vec<(usize, usize, String)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(fn_at) = words.iter().position(|w| *w == "fn") else { continue };
        let qualifiers = &words[..fn_at];
        if !qualifiers.iter().all(|w| ["pub", "pub(crate)", "pub(super)", "async", "const", "unsafe"].contains(w)) {
            continue;
        }
        let Some(name) = words.get(fn_at + 1) else { continue };
        let name: String = name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let mut depth = 0usize;
        let mut opened = false;
        'scan: for (offset, body_line) in lines[start..].iter().enumerate() {
            for c in body_line.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth = depth.saturating_sub(1),
                    ';' if !opened => break 'scan,
                    _ => {}
                }
            }
            if opened && depth == 0 {
                found.push((start + 1, offset + 1, name.clone()));
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_outside_tests_is_over_the_limit() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("crates"), &mut files);
    files.retain(|f| !f.components().any(|c| c.as_os_str() == "target"));
    let mut seen = 0;
    let mut found = Vec::new();
    for file in &files {
        for (line, length, name) in functions(&non_test_code(file)) {
            seen += 1;
            if length > MAX_FUNCTION_LINES {
                found.push(format!("{}:{line}: fn {name} is {length} lines", file.display()));
            }
        }
    }
    assert!(seen > 500, "the scan finds the project's functions ({seen})");
    assert!(found.is_empty(), "functions over {MAX_FUNCTION_LINES} lines:\n{}", found.join("\n"));
}

/// Whether `code` names `path` as a path of its own (`rand::`, not the end
/// of `Operand::`).
fn names(code: &str, path: &str) -> bool {
    code.match_indices(path)
        .any(|(at, _)| !code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_'))
}

#[test]
fn no_runtime_crate_is_reachable_from_the_core() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The host's tree through normal dependencies, as cargo resolves it.
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--locked", "-e", "normal", "--prefix", "none", "-p", "fanin-core"])
        .current_dir(root())
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).expect("cargo tree prints text");
    let reached: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(reached.contains(&"serde"), "the tree lists the core's dependencies: {reached:?}");
    let runtime: Vec<&&str> = reached.iter().filter(|n| RUNTIME_CRATES.contains(n)).collect();
    assert!(runtime.is_empty(), "fanin-core reaches runtime crates {runtime:?}");
}

#[test]
fn core_code_names_no_clock_randomness_file_socket_or_environment() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/fanin-core/src"), &mut files);
    assert!(files.len() > 10, "found the core's sources: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let code = non_test_code(file);
        for effect in EFFECTS {
            if names(&code, effect) {
                found.push(format!("{}: {effect}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "effects in pure code:\n{}", found.join("\n"));
}

#[test]
fn the_scanner_sees_through_literals_and_finds_lengths() {
    let code = code_only(
        "fn a() {\n    let s = \"}\"; let c = '{'; // }\n    let r = r#\"{\"#;\n}\nfn b<'x>(v: &'x str) {}\n",
    );
    assert_eq!(functions(&code), vec![(1, 4, "a".to_string()), (5, 1, "b".to_string())]);
    assert_eq!(crate_names("use crate::{store::Write, runs};\nlet x = crate::ids::fresh();"), ["store", "runs", "ids"]);
}
