//! fanin-core is pure, and this test is what makes that a fact rather than a
//! convention: its dependency tree holds no runtime crate, and its non-test
//! code names no clock, randomness, file, socket, process or environment.
//! A change that needs one of those belongs in the runtime crate, which
//! hands the core what it read (time, ids, text) as arguments.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn core_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_runtime_crate_is_reachable_from_the_core() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The host's tree through normal dependencies, as cargo resolves it.
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--locked", "-e", "normal", "--prefix", "none", "-p", "fanin-core"])
        .current_dir(core_dir())
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).expect("cargo tree prints text");
    let reached: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(reached.contains(&"serde"), "the tree lists the core's dependencies: {reached:?}");
    let runtime: Vec<&&str> = reached.iter().filter(|n| RUNTIME_CRATES.contains(n)).collect();
    assert!(runtime.is_empty(), "fanin-core reaches runtime crates {runtime:?}");
}

/// The non-test part of one source file: files that are tests or test
/// support are skipped whole, and a file's `#[cfg(test)]` modules, which sit
/// at its end by the crate's convention, are cut off.
fn non_test_code(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    if ["tests.rs", "props.rs", "test_support.rs", "proptest_support.rs"].contains(&name.as_ref()) {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let code = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Whether `code` names `path` as a path of its own (`rand::`, not the end
/// of `Operand::`).
fn names(code: &str, path: &str) -> bool {
    code.match_indices(path)
        .any(|(at, _)| !code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_'))
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
fn core_code_names_no_clock_randomness_file_socket_or_environment() {
    let mut files = Vec::new();
    rust_files(&core_dir().join("src"), &mut files);
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
