//! Where things live under `log.dirs`: partition directories named `<topic>-<partition>`, the
//! broker's own metadata directory, and deleted partitions set aside; and Kafka's rule for topic
//! names, which become directory names.

use std::path::{Path, PathBuf};

use sluice_storage::checkpoint::CLEAN_SHUTDOWN_FILE;

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;

/// Directory under `log.dirs` that holds broker metadata; its name cannot parse as a partition.
pub const META_DIR: &str = "__sluice_meta";

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !name.is_empty()
        && name.len() <= TOPIC_NAME_LENGTH_MAX
        && name != "."
        && name != ".."
        && name.chars().all(allowed)
}

/// Path of a partition's directory: `<log.dirs>/<topic>-<partition>`.
pub fn partition_dir(log_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    log_dir.join(format!("{topic}-{partition}"))
}

/// Where a deleted topic's partition directory goes when it cannot be removed at once:
/// `<topic>-<partition>.<random hex>-delete`, as Kafka names them. The suffix keeps the name
/// from parsing as a partition directory.
pub fn set_aside_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}{SET_ASIDE_SUFFIX}",
        crate::ids::hex(&crate::ids::random_id())
    ));
    dir.with_file_name(name)
}

const SET_ASIDE_SUFFIX: &str = "-delete";

/// Removes the directories `set_aside_dir` named in `log_dir`. Runs at start-up, before any
/// reactor, so it may block.
pub fn remove_set_aside(log_dir: &Path) {
    for entry in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(SET_ASIDE_SUFFIX)) {
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), %error, "cannot remove a deleted partition");
            }
        }
    }
}

/// Whether the last run left `log_dir` closed cleanly, every partition log in it with its
/// checkpoints written and nothing pending. The marker is removed (durably) before any log
/// opens, so a crash from here on looks unclean. Runs at start-up, before any reactor.
pub fn take_clean_marker(log_dir: &Path) -> std::io::Result<bool> {
    let marker = log_dir.join(CLEAN_SHUTDOWN_FILE);
    match std::fs::remove_file(&marker) {
        Ok(()) => sync_dir(log_dir).map(|()| true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Marks `log_dir` closed cleanly: one marker for all its partition logs, which closed
/// without their own (`Log::close_unmarked`), as Kafka keeps one per log directory. Runs
/// after every reactor has stopped.
pub fn mark_clean(log_dir: &Path) -> std::io::Result<()> {
    std::fs::File::create(log_dir.join(CLEAN_SHUTDOWN_FILE))?.sync_all()?;
    sync_dir(log_dir)
}

/// Makes a creation or removal in `dir` durable (blocking).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The partition directories in `log_dir` (blocking: start-up and shutdown only).
pub fn partition_dirs(log_dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(log_dir).into_iter().flatten().flatten();
    entries
        .filter(|entry| match entry.file_type() {
            Ok(kind) if kind.is_symlink() => entry.path().is_dir(),
            Ok(kind) => kind.is_dir(),
            Err(_) => false,
        })
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(parse_partition_dir)
                .is_some()
        })
        .map(|entry| entry.path())
        .collect()
}

/// Splits a directory name `<topic>-<partition>` into its parts.
pub fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    (valid_topic_name(topic) && partition >= 0).then_some((topic, partition))
}

/// Replaces the file at `path` with `bytes` through storage's checkpoint writer (temp file,
/// fsync, rename, fsync of the directory), so a reader sees the old or the new file. On
/// failure the temp file is removed here: storage's recovery sweeps temp files out of log
/// directories, but nothing sweeps the broker's metadata directory.
pub async fn write_atomically(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    use sluice_storage::checkpoint::{write_atomic, TEMP_SUFFIX};
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    let name = path.file_name().and_then(|name| name.to_str());
    let (Some(dir), Some(name)) = (dir, name) else {
        let message = format!("{} names no file in a directory", path.display());
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            message,
        ));
    };
    let written = write_atomic(&sluice_storage::RealDisk, dir, name, bytes).await;
    if written.is_err() {
        let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
        if let Err(error) = compio::fs::remove_file(&temp).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %temp.display(), %error, "cannot remove a temp file");
            }
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expected: bool) {
        assert_eq!(valid_topic_name(name), expected, "{name:?}");
    }

    #[test]
    fn topic_names_follow_kafka() {
        check("orders", true);
        check("a.b_c-D9", true);
        check("", false);
        check(".", false);
        check("..", false);
        check("has space", false);
        check("slash/no", false);
        check(&"x".repeat(249), true);
        check(&"x".repeat(250), false);
    }

    #[test]
    fn set_aside_dirs_are_not_partition_dirs() {
        let aside = set_aside_dir(Path::new("/data/orders-3"));
        let name = aside.file_name().and_then(|n| n.to_str()).unwrap();
        assert!(
            name.starts_with("orders-3.") && name.ends_with("-delete"),
            "{name}"
        );
        assert_eq!(parse_partition_dir(name), None);
        assert_eq!(aside.parent(), Some(Path::new("/data")));
    }

    #[test]
    fn partition_dirs_round_trip() {
        assert_eq!(parse_partition_dir("my-topic-12"), Some(("my-topic", 12)));
        assert_eq!(parse_partition_dir(META_DIR), None);
        assert_eq!(parse_partition_dir("-1"), None);
        assert_eq!(parse_partition_dir("topic-x"), None);
        assert_eq!(parse_partition_dir("x--1"), Some(("x-", 1)));
    }

    fn run<T>(work: impl std::future::Future<Output = T>) -> T {
        compio::runtime::Runtime::new().unwrap().block_on(work)
    }

    #[test]
    fn replaces_the_file_and_cleans_up_after_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topic.properties");
        run(write_atomically(&path, b"old".to_vec())).unwrap();
        run(write_atomically(&path, b"new".to_vec())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");

        // A non-empty directory in the way makes the rename fail after the temp file exists.
        let blocked = dir.path().join("blocked.properties");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(run(write_atomically(&blocked, b"lost".to_vec())).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "no temp file is left behind: {left:?}");
    }
}
