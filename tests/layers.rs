//! The layers run one way (src/lib.rs): this reads every source file's
//! paths into the crate (`use crate::...`, `crate::x::y` in code, `super::`
//! resolved) and fails when a module reaches one it may not. There is no
//! list of exceptions: a new dependency either fits the layering or the
//! layering changes here, on purpose.
//!
//! It also keeps the rules that make the layers mean something: blocking
//! work leaves the async threads through one adapter; no actor address
//! outside the actors; no hypervisor trait object above the drivers; no
//! source file much over 700 lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may reach, below it. The daemon, the shell's
/// top (`src/shell`) and the binaries sit on top of everything.
const LAYERS: &[(&str, &[&str])] = &[
    // The bottom: the xenstore vocabulary, config, paths, error helpers.
    ("error", &[]),
    ("paths", &["error"]),
    ("xs", &["error"]),
    ("config", &["error", "paths"]),
    // The xenstore database: the vocabulary only (no actix, no drivers).
    ("xenstored", &["xs", "error"]),
    // Drivers: the host (hypervisor, xenstore client, devices, processes).
    ("drivers", &["xs", "config", "paths", "error"]),
    // VM specs, records, the libxl layout: pure functions over the drivers' types.
    ("vm", &["drivers", "xs", "config", "paths", "error"]),
    // SRs and VDIs as data: the storage DTOs, validated; the records.
    ("storage", &["drivers", "xs", "config", "paths", "error"]),
    // The actors: state and orchestration.
    (
        "actors",
        &[
            "vm",
            "storage",
            "drivers",
            "xenstored",
            "xs",
            "config",
            "paths",
            "error",
        ],
    ),
    // The API: translation from calls to handles, errors to the wire's.
    (
        "api",
        &[
            "actors", "vm", "storage", "drivers", "xs", "config", "paths", "error",
        ],
    ),
    // Transports: they parse bytes into the API's calls.
    (
        "proto",
        &["api", "actors", "xs", "config", "paths", "error"],
    ),
];

/// Modules on top of every layer: the daemon (it composes the tree) and the
/// admin shell (an RPC client that reads VM files).
const TOP: &[&str] = &["daemon", "shell"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
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

/// The file's module path below the crate: src/actors/domain/mod.rs ->
/// ["actors", "domain"]; src/daemon.rs -> ["daemon"].
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The source without comments, string and char literals, and without its
/// test module (`#[cfg(test)]` to the end of the file, the convention here).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' || (b[i] == b'r' && b.get(i + 1) == Some(&b'"')) {
            // A string: skip to its end (raw strings of this crate have no #).
            let raw = b[i] == b'r';
            i += if raw { 2 } else { 1 };
            while i < b.len() && b[i] != b'"' {
                if !raw && b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3; // 'x'
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // '\n', '\u{..}'
            let end = text[i + 2..].find('\'').map_or(b.len(), |e| i + 2 + e + 1);
            i = end;
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The top-level modules a file's code reaches (other than its own).
fn reached(file: &Path, code: &str) -> BTreeSet<String> {
    let module = module_path(file);
    let mut out = BTreeSet::new();
    let mut push = |m: &str| {
        out.insert(m.to_owned());
    };
    for (i, _) in code.match_indices("crate::") {
        // Not `xenith::crate::` nor `$crate::` (a macro's own path).
        if i > 0 {
            let before = code.as_bytes()[i - 1];
            if before == b'$' || before.is_ascii_alphanumeric() || before == b'_' {
                continue;
            }
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // use crate::{a::x, b::{y, z}}: the first segment of each item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        if let Some(id) = ident_at(&group[j..]) {
                            push(id);
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else if let Some(id) = ident_at(rest) {
            push(id);
        }
    }
    // super::...: resolved from the file's module.
    for (i, _) in code.match_indices("super::") {
        if i > 0 && code.as_bytes()[i - 1] == b':' {
            continue; // the second super of super::super::, counted below
        }
        let mut rest = &code[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            up += 1;
            rest = r;
        }
        if up >= module.len() {
            // Above the top module: the crate root, then a module.
            if let Some(id) = ident_at(rest) {
                push(id);
            }
        }
    }
    out.retain(|m| Some(m) != module.first() && m != "self");
    out
}

fn layer_of(module: &str) -> Option<&'static [&'static str]> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, allowed)| *allowed)
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            (f, text)
        })
        .collect()
}

fn rel(file: &Path) -> String {
    file.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn layers_run_one_way() {
    let mut wrong = Vec::new();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in sources() {
        let module = module_path(&file);
        let Some(top) = module.first().cloned() else {
            continue;
        };
        if top == "bin" || top == "lib" || TOP.contains(&top.as_str()) {
            continue;
        }
        let allowed = layer_of(&top).unwrap_or_else(|| {
            panic!(
                "{}: module {top} has no layer in tests/layers.rs",
                rel(&file)
            )
        });
        for dep in reached(&file, &code(&text)) {
            seen.entry(top.clone()).or_default().insert(dep.clone());
            if !allowed.contains(&dep.as_str()) {
                wrong.push(format!("{} ({top}) reaches {dep}", rel(&file)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run against the layers:\n{}",
        wrong.join("\n")
    );
    // The checker sees what it should (it would pass vacuously otherwise).
    for (module, dep) in [
        ("actors", "drivers"),
        ("api", "actors"),
        ("proto", "api"),
        ("xenstored", "xs"),
    ] {
        assert!(
            seen.get(module).is_some_and(|d| d.contains(dep)),
            "{module} -> {dep} not seen: {seen:?}"
        );
    }
}

#[test]
fn the_checker_reads_groups_super_paths_and_skips_comments_and_tests() {
    let file = src().join("actors/domain/state.rs");
    let text = "use crate::{drivers::Hv, vm::{layout, VmSpec}};\n\
                use super::super::super::api::X; // crate::proto in a comment\n\
                use super::super::lifecycle;\n\
                let s = \"crate::shell\";\n\
                fn f() { crate::xs::XenbusState::parse(\"4\"); }\n\
                #[cfg(test)]\nmod tests { use crate::daemon; }\n";
    let got: Vec<String> = reached(&file, &code(text)).into_iter().collect();
    assert_eq!(got, ["api", "drivers", "vm", "xs"]);
}

/// Files where one thing is allowed that others may not do.
fn files_matching(needle: &str) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(_, text)| code(text).contains(needle))
        .map(|(f, _)| rel(&f))
        .collect()
}

#[test]
fn blocking_work_leaves_the_async_threads_through_one_adapter() {
    assert_eq!(
        files_matching("spawn_blocking"),
        ["src/drivers/blocking.rs"],
        "blocking work goes through drivers::blocking::run"
    );
}

#[test]
fn no_actor_address_and_no_hypervisor_object_above_their_layer() {
    for (file, text) in sources() {
        let top = module_path(&file).first().cloned().unwrap_or_default();
        let code = code(&text);
        if ["api", "shell"].contains(&top.as_str()) || rel(&file).starts_with("src/proto/rpc") {
            assert!(
                !code.contains("Addr<") && !code.contains("Addr::"),
                "{}: an actor's address outside the actors (use its typed handle)",
                rel(&file)
            );
        }
        if ["api", "proto", "shell", "actors"].contains(&top.as_str()) {
            assert!(
                !code.contains("dyn Hypervisor"),
                "{}: the hypervisor is reached through drivers::Hv",
                rel(&file)
            );
        }
    }
}

#[test]
fn no_source_file_is_much_over_700_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > 720)
        .map(|(f, text)| format!("{} ({} lines)", rel(&f), text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

#[test]
fn the_store_and_the_vocabulary_know_nothing_of_actors() {
    for (file, text) in sources() {
        let path = rel(&file);
        if path.starts_with("src/xenstored/") || path.starts_with("src/xs/") {
            assert!(
                !code(&text).contains("actix"),
                "{path}: the store and the xenstore vocabulary do not depend on actix"
            );
        }
    }
}
