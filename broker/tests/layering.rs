//! The crate boundaries ARCHITECTURE.md promises, checked against every Cargo.toml: storage
//! knows nothing of sockets or Kafka, net knows nothing of storage, bench uses only net.

use std::path::Path;

/// (crate directory, dependencies it must never have, in any dependency table)
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "storage",
        &[
            "sluice-net",
            "sluice-broker",
            "sluice-bench",
            "kafka-protocol",
            "socket2",
            "rdkafka",
        ],
    ),
    ("net", &["sluice-storage", "sluice-broker", "sluice-bench"]),
    ("bench", &["sluice-storage", "sluice-broker"]),
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

#[test]
fn crates_keep_their_boundaries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut violations = Vec::new();
    for (crate_dir, forbidden) in FORBIDDEN {
        let path = root.join(crate_dir).join("Cargo.toml");
        let manifest =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for name in dependencies(&manifest) {
            if forbidden.contains(&name.as_str()) {
                violations.push(format!("{crate_dir} depends on {name}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden dependencies: {violations:?}"
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
