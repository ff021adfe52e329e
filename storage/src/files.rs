//! Segment log files held open under a budget. A segment opens its log file when it is first
//! read or written and keeps it until more log files are open than the budget allows; then
//! the ones not used since the sweep last passed them are closed (a clock sweep, close to
//! least recently used). An idle partition so costs no descriptor, and a broker can host
//! many more partitions than its open-files limit. Closing loses nothing: the bytes stay in
//! the page cache and an fsync through a later descriptor flushes them all the same.
//!
//! The sweep passes over a file that a reader or an operation still holds (closing it would
//! free no descriptor, and the next use would open a second one), and over a file written
//! since its last fsync until it has gone round twice: a writeback error is reported to the
//! next fsync through any descriptor only while the kernel keeps the inode, which it may
//! drop once no descriptor is open. A reader holds the open file itself (`Arc<F>`, as a
//! `FileRegion` does), never the slot, so a region keeps its descriptor until it is
//! dropped.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::disk::Disk;

/// How many segment log files may be open at once, and which are.
#[derive(Debug)]
pub struct OpenFiles {
    max: AtomicUsize,
    open: AtomicUsize,
    /// Slots that were open when last seen, in the order the sweep visits them. Entries of
    /// slots since closed or dropped are skipped when reached, and pruned when they pile up.
    ring: Mutex<VecDeque<Weak<dyn Closable>>>,
}

impl Default for OpenFiles {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

/// What the sweep needs of a slot.
trait Closable: Send + Sync {
    fn is_open(&self) -> bool;
    /// Clears the used mark; returns whether it was set.
    fn take_used(&self) -> bool;
    /// Whether something besides the slot holds the open file.
    fn is_held(&self) -> bool;
    /// Whether the file was written since its last fsync.
    fn is_dirty(&self) -> bool;
    /// Closes the file.
    fn close(&self);
}

impl OpenFiles {
    pub fn new(max: usize) -> Self {
        Self {
            max: AtomicUsize::new(max.max(1)),
            open: AtomicUsize::new(0),
            ring: Mutex::new(VecDeque::new()),
        }
    }

    /// Changes the budget; files over it are closed as the next ones open.
    pub fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Log files segments hold open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn ring(&self) -> MutexGuard<'_, VecDeque<Weak<dyn Closable>>> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a file just opened by `slot` and closes others while over the budget.
    fn opened(&self, slot: Weak<dyn Closable>) {
        self.open.fetch_add(1, Ordering::Relaxed);
        // Slots upgraded here are dropped after the lock is let go: dropping the last
        // reference to one gives its count back, which must not wait on the ring.
        let mut seen: Vec<Arc<dyn Closable>> = Vec::new();
        let mut ring = self.ring();
        ring.push_back(slot);
        // Three turns of the ring at most: the first may only clear used marks, and files
        // written since their last fsync are spared until the third.
        let turn = ring.len();
        let mut steps = turn * 3;
        while self.open() > self.max() && steps > 0 {
            steps -= 1;
            let Some(entry) = ring.pop_front() else {
                break;
            };
            let Some(candidate) = entry.upgrade() else {
                continue;
            };
            if candidate.is_open() {
                let spared = candidate.take_used()
                    || candidate.is_held()
                    || (candidate.is_dirty() && steps >= turn);
                if spared {
                    ring.push_back(entry);
                } else {
                    candidate.close();
                }
            }
            seen.push(candidate);
        }
        if ring.len() > 2 * self.open() + 64 {
            ring.retain(|entry| entry.upgrade().is_some_and(|slot| slot.is_open()));
        }
        drop(ring);
        drop(seen);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A segment's log file: its path, and the file while it is open.
#[derive(Debug)]
pub struct LogFile<D: Disk> {
    disk: D,
    slot: Arc<Slot<D::File>>,
}

#[derive(Debug)]
struct Slot<F> {
    path: PathBuf,
    file: Mutex<Option<Arc<F>>>,
    used: AtomicBool,
    dirty: AtomicBool,
    /// Set once the log's directory may be renamed or reused: the path may name another
    /// file, so a closed file is not opened again.
    detached: AtomicBool,
    files: Arc<OpenFiles>,
}

impl<F> Slot<F> {
    fn file(&self) -> MutexGuard<'_, Option<Arc<F>>> {
        self.file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<F: Send + Sync + 'static> Closable for Slot<F> {
    fn is_open(&self) -> bool {
        self.file().is_some()
    }

    fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }

    fn is_held(&self) -> bool {
        self.file()
            .as_ref()
            .is_some_and(|file| Arc::strong_count(file) > 1)
    }

    fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    fn close(&self) {
        let file = self.file().take();
        if file.is_some() {
            self.files.closed();
        }
    }
}

impl<F> Drop for Slot<F> {
    fn drop(&mut self) {
        if self.file().is_some() {
            self.files.closed();
        }
    }
}

impl<D: Disk> LogFile<D> {
    /// The log file at `path`, not opened yet.
    pub fn new(disk: D, path: PathBuf) -> Self {
        let files = disk.open_files().clone();
        Self {
            disk,
            slot: Arc::new(Slot {
                path,
                file: Mutex::new(None),
                used: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                detached: AtomicBool::new(false),
                files,
            }),
        }
    }

    /// Whether the file is open now.
    pub fn is_open(&self) -> bool {
        self.slot.file().is_some()
    }

    /// The open file, opening it first when it was closed (`create` makes it if missing).
    pub async fn open(&self, create: bool) -> io::Result<Arc<D::File>> {
        self.slot.used.store(true, Ordering::Relaxed);
        if let Some(file) = self.slot.file().as_ref() {
            return Ok(file.clone());
        }
        if self.slot.detached.load(Ordering::Relaxed) {
            let message = format!("{} is detached from its log", self.slot.path.display());
            return Err(io::Error::new(io::ErrorKind::NotFound, message));
        }
        let file = Arc::new(self.disk.open(&self.slot.path, create).await?);
        {
            let mut held = self.slot.file();
            if let Some(other) = held.as_ref() {
                // Opened meanwhile by another task on this log: use that one.
                return Ok(other.clone());
            }
            *held = Some(file.clone());
        }
        let slot: Arc<dyn Closable> = self.slot.clone();
        self.slot.files.opened(Arc::downgrade(&slot));
        Ok(file)
    }

    /// The open file (the log file exists once its segment does).
    pub async fn get(&self) -> io::Result<Arc<D::File>> {
        self.open(false).await
    }

    /// Notes a write not yet synced.
    pub fn wrote(&self) {
        self.slot.dirty.store(true, Ordering::Relaxed);
    }

    /// Notes that everything written is synced.
    pub fn synced(&self) {
        self.slot.dirty.store(false, Ordering::Relaxed);
    }

    /// The file is not opened again once closed: its directory is about to be renamed or
    /// removed, and its path may come to name another log's file.
    pub fn detach(&self) {
        self.slot.detached.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{DiskFile, SimDisk};
    use std::path::Path;

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(future)
    }

    fn four_files(disk: &SimDisk) -> Vec<LogFile<SimDisk>> {
        (0..4)
            .map(|i| LogFile::new(disk.clone(), PathBuf::from(format!("/d/{i}.log"))))
            .collect()
    }

    fn open_ones(files: &[LogFile<SimDisk>]) -> Vec<bool> {
        files.iter().map(LogFile::is_open).collect()
    }

    #[test]
    fn the_sweep_closes_what_was_not_used_since_it_last_passed() {
        block_on(async {
            let disk = SimDisk::with_open_files_max(2);
            disk.create_dir_all(Path::new("/d")).await.unwrap();
            let files = four_files(&disk);
            files[0].open(true).await.unwrap();
            files[1].open(true).await.unwrap();
            // Every mark is cleared, then the first in line closes.
            files[2].open(true).await.unwrap();
            assert_eq!(open_ones(&files), [false, true, true, false]);
            // 1 is used again: 2 closes in its place.
            files[1].get().await.unwrap();
            files[3].open(true).await.unwrap();
            assert_eq!(open_ones(&files), [false, true, false, true]);
            assert_eq!(disk.open_files().open(), 2);
            drop(files);
            assert_eq!(disk.open_files().open(), 0);
        });
    }

    #[test]
    fn files_held_or_not_synced_close_last() {
        block_on(async {
            let disk = SimDisk::with_open_files_max(2);
            disk.create_dir_all(Path::new("/d")).await.unwrap();
            let files = four_files(&disk);
            files[0].open(true).await.unwrap();
            files[0].wrote();
            files[1].open(true).await.unwrap();
            files[2].open(true).await.unwrap();
            assert_eq!(
                open_ones(&files),
                [true, false, true, false],
                "unsynced kept"
            );
            // A reader holds 2; 0 is synced.
            let held = files[2].get().await.unwrap();
            files[0].synced();
            files[3].open(true).await.unwrap();
            assert_eq!(open_ones(&files), [false, false, true, true]);
            files[1].open(false).await.unwrap();
            assert_eq!(open_ones(&files), [false, true, true, false], "held kept");
            assert_eq!(disk.open_files().open(), 2);
            // The reader's file is the one the log reads.
            held.write_at(bytes::Bytes::from_static(b"kept"), 0)
                .await
                .unwrap();
            let again = files[2].get().await.unwrap();
            assert_eq!(again.read_at(4, 0).await.unwrap(), b"kept");
            // A detached file is not opened again once closed.
            files[0].detach();
            assert!(files[0].get().await.is_err());
        });
    }
}
