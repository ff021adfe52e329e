//! The boundaries ARCHITECTURE.md promises, checked against the code:
//!
//! - each crate depends only on what its allow-list names (storage knows nothing of sockets or
//!   Kafka, net nothing of storage, bench only net, the fuzz targets only net and storage),
//!   read from every Cargo.toml;
//! - inside the broker, every module sits on a layer and imports only from layers below its
//!   own, read from the `crate::` and `super::` paths of every source file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// (crate directory, the dependencies it may have, in any dependency table). A new dependency
/// must be added here, on purpose.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "storage",
        &[
            "compio",
            "crc-fast",
            "thiserror",
            "bytes",
            "tracing",
            "flate2",
            "lz4",
            "snap",
            "zstd",
            "crc32c",
            "proptest",
            "tempfile",
            "criterion",
            "libc",
        ],
    ),
    (
        "net",
        &[
            "compio",
            "kafka-protocol",
            "bytes",
            "thiserror",
            "rustix",
            "proptest",
            "tempfile",
        ],
    ),
    (
        "broker",
        &[
            "sluice-storage",
            "sluice-net",
            "compio",
            "kafka-protocol",
            "bytes",
            "thiserror",
            "rustix",
            "libc",
            "clap",
            "tracing",
            "tracing-subscriber",
            "flume",
            "futures-util",
            "proptest",
            "event-listener",
            "socket2",
            "uuid",
            "serde",
            "serde_json",
            "openraft",
            "tokio",
            "tempfile",
        ],
    ),
    (
        "bench",
        &[
            "sluice-net",
            "compio",
            "bytes",
            "clap",
            "hdrhistogram",
            "thiserror",
            "crc32c",
            "flume",
            "futures-util",
            "kafka-protocol",
            "toml",
            "plotters",
            "criterion",
            "tempfile",
        ],
    ),
    (
        "fuzz",
        &[
            "libfuzzer-sys",
            "bytes",
            "compio",
            "sluice-net",
            "sluice-storage",
        ],
    ),
];

/// Names of every dependency in a manifest: each `[*dependencies*]` table's keys.
fn dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            let table = line.trim_matches(['[', ']']);
            let mut parts = table.split('.');
            let last = parts.next_back().unwrap_or("");
            // `[dependencies.foo]` names the dependency in the header; its keys are its fields.
            if parts.any(|part| part.ends_with("dependencies")) && !last.ends_with("dependencies") {
                names.push(last.trim().to_owned());
                in_dependencies = false;
            } else {
                in_dependencies = last.ends_with("dependencies");
            }
            continue;
        }
        if in_dependencies {
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && !key.starts_with('#') {
                    names.push(key.split('.').next().unwrap_or(key).to_owned());
                }
            }
        }
    }
    names
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn crates_depend_only_on_what_they_allow() {
    let mut violations = Vec::new();
    for (crate_dir, allowed) in ALLOWED {
        let path = root().join(crate_dir).join("Cargo.toml");
        let manifest =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for name in dependencies(&manifest) {
            if !allowed.contains(&name.as_str()) {
                violations.push(format!("{crate_dir} depends on {name}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies not on the allow-list: {violations:?}"
    );
}

#[test]
fn the_parser_sees_every_table_form() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nsluice-net = { path = \"../net\" }\n\
                    [dev-dependencies]\ntempfile = \"3\"\n[target.'cfg(unix)'.dependencies]\nlibc = \"0.2\"\n\
                    [dependencies.kafka-protocol]\nversion = \"0.18\"\n";
    let names = dependencies(manifest);
    for expected in ["sluice-net", "tempfile", "libc", "kafka-protocol"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n == "name" || n == "version"),
        "{names:?}"
    );
}

/// The broker's layers, lowest first. A module imports only from layers below its own. The
/// modules of `groups`, `metadata`, `metrics` and `partition` sit on layers of their own (the
/// coordinator is high, the state it works on is low); every other folder is one module.
const LAYERS: &[&[&str]] = &[
    // Leaves: tables, configuration, small tools.
    &[
        "apis",
        "backend",
        "clock",
        "config",
        "descriptors",
        "error_codes",
        "ids",
        "memory",
        "order",
        "region",
    ],
    // The reactor mesh, and plain data.
    &[
        "core",
        "layout",
        "metadata::image",
        "partition::replica",
        "groups::records",
        "metrics::snapshot",
    ],
    &["metadata::delta", "groups::group", "metrics::cells"],
    // A partition's rules, the metadata source and image holder, a core's group state.
    &[
        "metadata",
        "metadata::local",
        "partition",
        "groups::state",
        "metrics",
    ],
    // The controller quorum, on its own thread.
    &["controller"],
    // One core's share of the broker.
    &["shard"],
    // Changes that reach every core: dynamic broker configs, then metadata deltas (which
    // carry them).
    &["dynamic"],
    &["cluster"],
    // Domain services over the shards.
    &["groups", "replication", "metrics::gather", "metrics::text"],
    &["metrics::http"],
    // Kafka requests, connections, start-up.
    &["handlers"],
    &["conn"],
    &["server"],
];

/// Modules whose files are layered one by one.
const SPLIT: &[&str] = &["groups", "metadata", "metrics", "partition"];

/// Files of the `sluice` binary rather than the library: `main.rs` and its modules. Their
/// `crate::` paths name the binary's own modules, and they reach the library only through its
/// public paths (`sluice_broker::`), so they sit on no layer.
const BINARY: &[&str] = &["main", "cli"];

/// The layered module a source file belongs to: its first path segment, or its first two for
/// the modules in `SPLIT`. `None` for the crate root and the binary.
fn module_of(relative: &Path) -> Option<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    let first = parts.first()?.clone();
    if first == "lib" || BINARY.contains(&first.as_str()) {
        return None;
    }
    match parts.get(1) {
        Some(second) if SPLIT.contains(&first.as_str()) => Some(format!("{first}::{second}")),
        _ => Some(first),
    }
}

/// The same for an import path below `crate::`, given as segments.
fn module_of_path(segments: &[&str]) -> Option<String> {
    let first = *segments.first()?;
    if SPLIT.contains(&first) {
        if let Some(second) = segments.get(1) {
            let candidate = format!("{first}::{second}");
            if layer(&candidate).is_some() {
                return Some(candidate);
            }
        }
    }
    Some(first.to_owned())
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The source without comments, string contents and the test module at its end.
fn code_of(source: &str) -> String {
    let body = match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    };
    let mut out = String::with_capacity(body.len());
    for line in body.lines() {
        let mut in_string = false;
        let mut previous = '\0';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_string && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && previous != '\\' {
                in_string = !in_string;
            } else if !in_string {
                out.push(c);
            }
            previous = c;
        }
        out.push('\n');
    }
    out
}

/// Every path that starts with `prefix` (`crate::` or `super::`) in `code`, with brace groups
/// expanded: `crate::a::{b, c::d}` gives `a::b` and `a::c::d`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        rest = &rest[at + prefix.len()..];
        if boundary {
            expand("", rest, &mut found);
        }
    }
    found
}

/// Reads one path (with an optional brace group) at the start of `text`, after `base`.
fn expand(base: &str, text: &str, found: &mut Vec<String>) {
    let path_len = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let path = text[..path_len].trim_end_matches(':');
    let full = match (base.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => base.to_owned(),
        (false, false) => format!("{base}::{path}"),
    };
    let after = &text[path_len..];
    if text[..path_len].ends_with("::") && after.starts_with('{') {
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &after[1..end];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&full, inner[start..i].trim(), found);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&full, inner[start..].trim(), found);
    } else if !full.is_empty() {
        found.push(full);
    }
}

/// Every broker source file with its layered module.
fn broker_sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read broker/src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = root().join("broker/src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).ok()?.to_owned();
            Some((relative, module_of(path.strip_prefix(&src).ok()?)?))
        })
        .collect()
}

#[test]
fn broker_modules_import_only_from_lower_layers() {
    let mut violations = Vec::new();
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (relative, module) in broker_sources() {
        let Some(own) = layer(&module) else {
            violations.push(format!(
                "{} ({module}) is on no layer: add it to LAYERS",
                relative.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(root().join("broker/src").join(&relative))
            .expect("read source");
        let code = code_of(&source);
        // `super::` from a file names its parent module (from a mod.rs, the grandparent).
        let mut parent: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        if parent.last().is_some_and(|p| p == "mod") {
            parent.pop();
        }
        parent.pop();
        let mut targets: Vec<String> = paths_after(&code, "crate::");
        for path in paths_after(&code, "super::") {
            let mut full = parent.clone();
            full.push(path);
            targets.push(full.join("::"));
        }
        for target in targets {
            let segments: Vec<&str> = target.split("::").collect();
            let Some(imported) = module_of_path(&segments) else {
                continue;
            };
            if imported == module {
                continue;
            }
            edges
                .entry(module.clone())
                .or_default()
                .push(imported.clone());
            match layer(&imported) {
                Some(theirs) if theirs < own => {}
                Some(theirs) => violations.push(format!(
                    "{} ({module}, layer {own}) imports crate::{target} ({imported}, layer {theirs})",
                    relative.display()
                )),
                None => violations.push(format!(
                    "{} imports crate::{target}, whose module {imported} is on no layer",
                    relative.display()
                )),
            }
        }
    }
    assert!(!edges.is_empty(), "the parser found no imports at all");
    assert!(
        edges
            .get("server")
            .is_some_and(|e| e.iter().any(|t| t == "shard")),
        "the parser missed server's import of shard: {edges:?}"
    );
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
}

/// What of the library the operator subcommands (`broker/src/cli/`) may use: the tables of
/// Kafka's API and error names. Anything more would tie them to Sluice's internals, and they
/// must administer any Kafka-compatible broker through the protocol alone.
const CLI_MAY_USE: &[&str] = &["apis", "error_codes"];

#[test]
fn operator_commands_use_only_the_protocol() {
    let dir = root().join("broker/src/cli");
    let mut files = 0;
    let mut violations = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .expect("read broker/src/cli")
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        files += 1;
        let code = code_of(&std::fs::read_to_string(&path).expect("read source"));
        for used in paths_after(&code, "sluice_broker::") {
            let module = used.split("::").next().unwrap_or_default();
            if !CLI_MAY_USE.contains(&module) {
                violations.push(format!("{} uses sluice_broker::{used}", path.display()));
            }
        }
    }
    assert!(files > 0, "no source files under {}", dir.display());
    assert!(
        violations.is_empty(),
        "the operator commands reach into the library:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_path_reader_expands_groups_and_skips_comments() {
    let code = code_of(
        "use crate::a::{b, c::{d, e as f}};\n// crate::hidden::x\nlet s = \"crate::text\";\nx = crate::g::h(1);\n",
    );
    let paths = paths_after(&code, "crate::");
    assert_eq!(paths, vec!["a::b", "a::c::d", "a::c::e", "g::h"]);
    assert_eq!(
        module_of_path(&["metrics", "cells", "Waiting"]).as_deref(),
        Some("metrics::cells")
    );
    assert_eq!(
        module_of_path(&["metrics", "Thing"]).as_deref(),
        Some("metrics")
    );
    assert_eq!(
        module_of(Path::new("handlers/fetch.rs")).as_deref(),
        Some("handlers")
    );
    assert_eq!(
        module_of(Path::new("groups/mod.rs")).as_deref(),
        Some("groups")
    );
    assert_eq!(
        module_of(Path::new("groups/state.rs")).as_deref(),
        Some("groups::state")
    );
    assert_eq!(module_of(Path::new("cli/topic.rs")), None);
}
