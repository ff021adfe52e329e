//! Segment log files held open under a budget. A segment opens its log file when it is first
//! read or written and keeps it until more log files are open than the budget allows; then
//! the ones not used since they opened or the sweep last passed them are closed (a clock
//! sweep, close to least recently used). An idle partition so costs no descriptor, and a broker can host
//! many more partitions than its open-files limit. Closing loses nothing: the bytes stay in
//! the page cache and an fsync through a later descriptor flushes them all the same.
//!
//! A reader holds the open file itself (`Arc<F>`, as a `FileRegion` does), never the slot,
//! so a descriptor that a region is about to splice from stays open until the region is
//! dropped, whatever the sweep does. The budget therefore counts what segments hold; regions
//! in flight briefly hold a few more.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
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
    /// Closes the file (what readers hold stays open until they let go).
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
        // Two turns of the ring: the first may only clear used marks.
        let mut steps = ring.len() * 2;
        while self.open() > self.max() && steps > 0 {
            steps -= 1;
            let Some(entry) = ring.pop_front() else {
                break;
            };
            let Some(candidate) = entry.upgrade() else {
                continue;
            };
            if candidate.is_open() {
                if candidate.take_used() {
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
                files,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.slot.path
    }

    /// Whether the file is open now.
    pub fn is_open(&self) -> bool {
        self.slot.file().is_some()
    }

    /// The open file, opening it first when it was closed (`create` makes it if missing).
    pub async fn open(&self, create: bool) -> io::Result<Arc<D::File>> {
        if let Some(file) = self.slot.file().as_ref() {
            self.slot.used.store(true, Ordering::Relaxed);
            return Ok(file.clone());
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{DiskFile, SimDisk};

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn files_over_the_budget_close_least_recently_used_first() {
        block_on(async {
            let disk = SimDisk::with_open_files_max(2);
            disk.create_dir_all(Path::new("/d")).await.unwrap();
            let files: Vec<LogFile<SimDisk>> = (0..4)
                .map(|i| LogFile::new(disk.clone(), PathBuf::from(format!("/d/{i}.log"))))
                .collect();
            files[0].open(true).await.unwrap();
            files[1].open(true).await.unwrap();
            // 0 is used again: the sweep passes it by and closes 1 when 2 opens.
            files[0].get().await.unwrap();
            files[2].open(true).await.unwrap();
            assert_eq!(disk.open_files().open(), 2);
            let open: Vec<bool> = files.iter().map(LogFile::is_open).collect();
            assert_eq!(open, [true, false, true, false]);
            // A reader's handle outlives the close, and a closed file opens again whole.
            let held = files[0].get().await.unwrap();
            held.write_at(bytes::Bytes::from_static(b"kept"), 0)
                .await
                .unwrap();
            files[3].open(true).await.unwrap();
            files[1].get().await.unwrap();
            assert_eq!(disk.open_files().open(), 2);
            assert_eq!(held.read_at(4, 0).await.unwrap(), b"kept");
            assert_eq!(
                files[0].get().await.unwrap().read_at(4, 0).await.unwrap(),
                b"kept"
            );
            drop(files);
            assert_eq!(disk.open_files().open(), 0);
        });
    }
}
