//! Small per-partition checkpoint files (recovery point, log start offset, high watermark),
//! written atomically: temp file, fsync, rename over the old file, fsync the directory.
//!
//! The format is Kafka's text style: a version line, then the value. A file that does not parse
//! is treated as absent, so a damaged checkpoint costs a longer recovery, never wrong data.

use std::io;
use std::path::Path;

use crate::disk::{Disk, DiskFile};

pub const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset-checkpoint";
pub const HIGH_WATERMARK_FILE: &str = "replication-offset-checkpoint";
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
pub const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.snapshot";
/// Present only between a clean close and the next open.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// Suffix of a checkpoint being written; leftovers are deleted on open.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Checkpoints are tiny; anything bigger is not ours.
pub const CHECKPOINT_BYTES_MAX: u64 = 16 << 20;

/// Replaces `dir/name` with `contents` so that a crash leaves either the old or the new file.
pub async fn write_atomic<D: Disk>(
    disk: &D,
    dir: &Path,
    name: &str,
    contents: Vec<u8>,
) -> io::Result<()> {
    let temp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let file = disk.open_small(&temp, true).await?;
    file.set_len(0).await?;
    file.write_at(contents.into(), 0).await?;
    file.sync_data().await?;
    drop(file);
    disk.rename(&temp, &dir.join(name)).await?;
    disk.sync_dir(dir).await
}

/// The whole file, or `None` if it does not exist.
pub async fn read_optional<D: Disk>(disk: &D, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match disk.open_small(path, false).await {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let len = file.len().await?;
    if len > CHECKPOINT_BYTES_MAX {
        return Ok(Some(Vec::new()));
    }
    let len = usize::try_from(len).map_err(io::Error::other)?;
    Ok(Some(file.read_at(len, 0).await?))
}

const VERSION: &str = "0";

pub fn encode_offset(offset: i64) -> Vec<u8> {
    format!("{VERSION}\n{offset}\n").into_bytes()
}

pub fn decode_offset(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != VERSION {
        return None;
    }
    let offset = lines.next()?.trim().parse().ok()?;
    if lines.next().is_some() {
        return None;
    }
    Some(offset)
}

/// Reads a single-offset checkpoint; a missing or malformed file gives `None`.
pub async fn read_offset<D: Disk>(disk: &D, dir: &Path, name: &str) -> io::Result<Option<i64>> {
    let bytes = read_optional(disk, &dir.join(name)).await?;
    let offset = bytes.as_deref().and_then(decode_offset);
    if bytes.is_some() && offset.is_none() {
        tracing::warn!(dir = %dir.display(), name, "ignoring malformed checkpoint");
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::SimDisk;

    fn check(input: &[u8], expected: Option<i64>) {
        assert_eq!(decode_offset(input), expected);
    }

    #[test]
    fn offsets_round_trip() {
        check(&encode_offset(42), Some(42));
        check(&encode_offset(-1), Some(-1));
        check(b"", None);
        check(b"1\n5\n", None);
        check(b"0\nx\n", None);
        check(b"0\n5\n6\n", None);
        check(&[0xff, 0xfe], None);
    }

    #[test]
    fn atomic_write_replaces() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let disk = SimDisk::new();
            let dir = Path::new("/p");
            disk.create_dir_all(dir).await.unwrap();
            assert_eq!(read_offset(&disk, dir, "c").await.unwrap(), None);
            write_atomic(&disk, dir, "c", encode_offset(7))
                .await
                .unwrap();
            write_atomic(&disk, dir, "c", encode_offset(9))
                .await
                .unwrap();
            disk.crash();
            assert_eq!(read_offset(&disk, dir, "c").await.unwrap(), Some(9));
            assert_eq!(disk.list_dir(dir).await.unwrap(), vec!["c".to_string()]);
        });
    }
}
