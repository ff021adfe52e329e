//! The file-system seam: a small `Disk`/`DiskFile` pair that `Log` is generic over, with
//! `RealDisk` (compio files on io_uring) and `SimDisk` (in-memory files with crash injection).
//!
//! `RealDisk` sends open, positional read and write, fsync, ftruncate, statx, unlink, rename and
//! mkdir through io_uring (compio ops; under compio's polling driver some of these run on its
//! blocking pool instead). Directory listing has no io_uring op, so it runs on compio's blocking
//! pool (`spawn_blocking`). Nothing here calls `std::fs` on the reactor thread.
//!
//! `SimDisk` keeps, per file, the bytes a reader sees and the bytes that have been synced. A
//! simulated crash drops everything not synced; tests can also truncate a file at a byte or flip
//! a bit. Directory operations (create, rename, remove) are durable at once in the simulator,
//! which is the ordering a journaling file system gives after the directory is synced.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use crate::files::OpenFiles;
use bytes::{Buf, Bytes};
use compio::buf::{BufResult, IntoInner};
use compio::driver::op::{
    BufResultExt, CurrentDir, FileStat, Mode, OFlags, OpenFile, ReadAt, Sync as SyncOp,
    TruncateFile, WriteAt,
};

/// A directory tree of files. Cloning is cheap and shares the same tree.
#[allow(async_fn_in_trait)]
pub trait Disk: Clone + 'static {
    type File: DiskFile;

    /// Opens `path` for reading and writing, creating an empty file when `create` is set.
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// `open` for a small file that is read or written and closed at once (a checkpoint,
    /// an index file): its close is cheap wherever it runs.
    async fn open_small(&self, path: &Path, create: bool) -> io::Result<Self::File> {
        self.open(path, create).await
    }
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    async fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// File names (not paths) of the regular files directly inside `path`.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals inside `path` durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// The budget of segment log files held open on this disk.
    fn open_files(&self) -> &Arc<OpenFiles>;
}

/// One open file, shared by the log and by readers holding `FileRegion`s.
#[allow(async_fn_in_trait, clippy::len_without_is_empty)]
pub trait DiskFile: Send + Sync + 'static {
    /// Writes all of `buf` at `position`. `buf` is shared, so a caller can read its bytes while
    /// the write is in flight.
    async fn write_at(&self, buf: Bytes, position: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at `position`; fewer only at the end of the file.
    async fn read_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>>;
    async fn sync_data(&self) -> io::Result<()>;
    async fn len(&self) -> io::Result<u64>;
    async fn set_len(&self, len: u64) -> io::Result<()>;
    /// The descriptor for splice/sendfile: `Some` for real files, `None` for simulated ones.
    fn raw_fd(&self) -> Option<RawFd>;
}

/// Real files through compio (io_uring when available). Descriptors belong to the process, so
/// every `RealDisk` shares one budget of open log files (`RealDisk::open_files`); it starts
/// unlimited and the broker sets it from its open-files limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

static REAL_OPEN_FILES: LazyLock<Arc<OpenFiles>> = LazyLock::new(Arc::default);

/// A real file. compio's own `File` is reference-counted with `Rc` and so tied to one thread;
/// this keeps the descriptor in an `Arc<std::fs::File>` instead and submits compio ops on it, so
/// a `FileRegion` can cross cores and keeps the descriptor open after a segment is deleted.
/// The `std::fs::File` is only a descriptor holder: no blocking call is made through it.
#[derive(Debug)]
pub struct RealFile {
    /// Taken only in `Drop`.
    file: ManuallyDrop<Arc<std::fs::File>>,
    /// Closed where it is dropped, not on the blocking pool (`Disk::open_small`).
    small: bool,
}

impl Drop for RealFile {
    /// The last close of a deleted segment frees its blocks, file-system work that takes
    /// milliseconds for a large file and would run on whichever reactor dropped the last
    /// handle (a retention pass, or the connection that sent the last region). On a compio
    /// runtime the close goes to its blocking pool instead; elsewhere it happens here, as
    /// does a small file's (`Disk::open_small`), for which a trip to the pool costs more
    /// than the close.
    fn drop(&mut self) {
        // SAFETY: the only place `file` is taken; it is not touched afterwards.
        let file = unsafe { ManuallyDrop::take(&mut self.file) };
        if Arc::strong_count(&file) > 1 || self.small {
            // An operation in flight holds the descriptor and closes it when it completes;
            // or the file is small and its close cheap.
            return;
        }
        let _ = compio::runtime::Runtime::try_with_current(move |runtime| {
            runtime.spawn_blocking(move || drop(file)).detach();
        });
    }
}

impl RealFile {
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

async fn open_fd(path: &Path, flags: OFlags) -> io::Result<std::fs::File> {
    let op = OpenFile::new(
        CurrentDir,
        c_path(path)?,
        flags | OFlags::CLOEXEC,
        Mode::from_bits_retain(0o644),
    );
    let BufResult(result, op) = compio::runtime::submit(op).await;
    result?;
    Ok(std::fs::File::from(op.into_inner()))
}

impl Disk for RealDisk {
    type File = RealFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<RealFile> {
        let mut flags = OFlags::RDWR;
        if create {
            flags |= OFlags::CREATE;
        }
        let file = open_fd(path, flags).await?;
        Ok(RealFile {
            file: ManuallyDrop::new(Arc::new(file)),
            small: false,
        })
    }

    async fn open_small(&self, path: &Path, create: bool) -> io::Result<RealFile> {
        let mut file = self.open(path, create).await?;
        file.small = true;
        Ok(file)
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        compio::fs::remove_file(path).await
    }

    fn open_files(&self) -> &Arc<OpenFiles> {
        &REAL_OPEN_FILES
    }

    async fn remove_dir(&self, path: &Path) -> io::Result<()> {
        compio::fs::remove_dir(path).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        compio::fs::rename(from, to).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = path.to_path_buf();
        let listing = compio::runtime::spawn_blocking(move || -> io::Result<Vec<String>> {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&path)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    if let Some(name) = entry.file_name().to_str() {
                        names.push(name.to_string());
                    }
                }
            }
            Ok(names)
        })
        .await;
        listing.map_err(|_| io::Error::other("directory listing task panicked"))?
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        compio::fs::create_dir_all(path).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let dir = Arc::new(open_fd(path, OFlags::RDONLY | OFlags::DIRECTORY).await?);
        compio::runtime::submit(SyncOp::new(dir, false)).await.0?;
        Ok(())
    }
}

impl DiskFile for RealFile {
    async fn write_at(&self, mut buf: Bytes, position: u64) -> io::Result<()> {
        let mut position = position;
        while !buf.is_empty() {
            // A clone of `Bytes` shares the bytes; the op holds them until it completes.
            let op = WriteAt::new(Arc::clone(&self.file), position, buf.clone());
            let BufResult(written, _) = compio::runtime::submit(op).await.into_inner();
            let written = written?;
            if written == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
            }
            buf.advance(written.min(buf.len()));
            position += written as u64;
        }
        Ok(())
    }

    async fn read_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>> {
        let mut out: Vec<u8> = Vec::new();
        while out.len() < len {
            let chunk: Vec<u8> = Vec::with_capacity(len - out.len());
            let op = ReadAt::new(Arc::clone(&self.file), position + out.len() as u64, chunk);
            let result = compio::runtime::submit(op).await.into_inner();
            // SAFETY: on success the kernel initialised exactly `read` bytes of the buffer.
            let BufResult(read, chunk) = unsafe { result.map_advanced() };
            if read? == 0 {
                break;
            }
            // Usually one read returns everything; its buffer is then the answer, not a copy.
            if out.is_empty() {
                out = chunk;
            } else {
                out.extend_from_slice(&chunk);
            }
        }
        Ok(out)
    }

    async fn sync_data(&self) -> io::Result<()> {
        compio::runtime::submit(SyncOp::new(Arc::clone(&self.file), true))
            .await
            .0?;
        Ok(())
    }

    async fn len(&self) -> io::Result<u64> {
        let BufResult(result, op) =
            compio::runtime::submit(FileStat::new(Arc::clone(&self.file))).await;
        result?;
        let stat = op.into_inner();
        u64::try_from(stat.st_size).map_err(io::Error::other)
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        compio::runtime::submit(TruncateFile::new(Arc::clone(&self.file), len))
            .await
            .0?;
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}

/// In-memory file tree for tests and simulations, with crash injection.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
    open_files: Arc<OpenFiles>,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<PathBuf, Arc<Mutex<SimData>>>,
    dirs: BTreeSet<PathBuf>,
    syncs: u64,
}

#[derive(Debug, Default)]
struct SimData {
    /// What readers see now.
    data: Vec<u8>,
    /// What survives a crash: the contents at the last sync.
    durable: Vec<u8>,
}

/// An open simulated file. It keeps its contents alive after the path is removed, as an open
/// descriptor does.
#[derive(Debug)]
pub struct SimFile {
    data: Arc<Mutex<SimData>>,
    state: Arc<Mutex<SimState>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock already failed the test; keep going with the data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk whose segments hold at most `max` log files open at once.
    pub fn with_open_files_max(max: usize) -> Self {
        Self {
            open_files: Arc::new(OpenFiles::new(max)),
            ..Self::default()
        }
    }

    fn data(&self, path: &Path) -> Option<Arc<Mutex<SimData>>> {
        lock(&self.state).files.get(path).cloned()
    }

    /// Simulates power loss: every file reverts to its contents at its last sync.
    pub fn crash(&self) {
        let state = lock(&self.state);
        for data in state.files.values() {
            let mut data = lock(data);
            data.data = data.durable.clone();
        }
    }

    /// Cuts a file at `len` bytes, as a torn write leaves it; the cut is durable.
    pub fn truncate_file(&self, path: &Path, len: u64) {
        if let Some(data) = self.data(path) {
            let mut data = lock(&data);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            data.data.truncate(len);
            data.durable.truncate(len);
        }
    }

    /// Flips one bit of a file, durably. Out-of-range positions do nothing.
    pub fn flip_bit(&self, path: &Path, position: u64, bit: u8) {
        if let Some(data) = self.data(path) {
            let mut data = lock(&data);
            let Ok(at) = usize::try_from(position) else {
                return;
            };
            if let Some(byte) = data.data.get_mut(at) {
                *byte ^= 1 << (bit % 8);
            }
            let current = data.data.clone();
            data.durable = current;
        }
    }

    /// Makes the current contents of every file durable, as if all were synced.
    pub fn sync_everything(&self) {
        let state = lock(&self.state);
        for data in state.files.values() {
            let mut data = lock(data);
            data.durable = data.data.clone();
        }
    }

    /// The first byte of `path` that a crash could lose or change.
    pub fn unsynced_from(&self, path: &Path) -> Option<u64> {
        let data = self.data(path)?;
        let data = lock(&data);
        let common = data
            .data
            .iter()
            .zip(data.durable.iter())
            .take_while(|(a, b)| a == b)
            .count();
        Some(common as u64)
    }

    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let data = self.data(path)?;
        let len = lock(&data).data.len() as u64;
        Some(len)
    }

    /// A copy of the bytes readers see in `path`.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let data = self.data(path)?;
        let bytes = lock(&data).data.clone();
        Some(bytes)
    }

    pub fn files(&self) -> Vec<PathBuf> {
        lock(&self.state).files.keys().cloned().collect()
    }

    /// How many file or directory syncs have happened.
    pub fn sync_count(&self) -> u64 {
        lock(&self.state).syncs
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    fn open_files(&self) -> &Arc<OpenFiles> {
        &self.open_files
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        let mut state = lock(&self.state);
        let data = match state.files.get(path) {
            Some(data) => data.clone(),
            None if create => {
                let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if !state.dirs.contains(&parent) {
                    return Err(not_found(&parent));
                }
                let data = Arc::new(Mutex::new(SimData::default()));
                state.files.insert(path.to_path_buf(), data.clone());
                data
            }
            None => return Err(not_found(path)),
        };
        Ok(SimFile {
            data,
            state: self.state.clone(),
        })
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    async fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        if state.files.keys().any(|file| file.parent() == Some(path)) {
            return Err(io::Error::other("directory not empty"));
        }
        if state.dirs.remove(path) {
            Ok(())
        } else {
            Err(not_found(path))
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        let data = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), data);
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.state);
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        Ok(state
            .files
            .keys()
            .filter(|file| file.parent() == Some(path))
            .filter_map(|file| file.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        for ancestor in path.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        state.syncs += 1;
        Ok(())
    }
}

impl DiskFile for SimFile {
    async fn write_at(&self, buf: Bytes, position: u64) -> io::Result<()> {
        let mut data = lock(&self.data);
        let start = usize::try_from(position).map_err(io::Error::other)?;
        let end = start + buf.len();
        if data.data.len() < end {
            data.data.resize(end, 0);
        }
        data.data[start..end].copy_from_slice(&buf);
        Ok(())
    }

    async fn read_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>> {
        let data = lock(&self.data);
        let start = usize::try_from(position).map_err(io::Error::other)?;
        let start = start.min(data.data.len());
        let end = start.saturating_add(len).min(data.data.len());
        Ok(data.data[start..end].to_vec())
    }

    async fn sync_data(&self) -> io::Result<()> {
        {
            let mut data = lock(&self.data);
            data.durable = data.data.clone();
        }
        lock(&self.state).syncs += 1;
        Ok(())
    }

    async fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.data).data.len() as u64)
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        lock(&self.data).data.resize(len, 0);
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(future)
    }

    /// Whether this process still holds a descriptor of `path`.
    fn held(path: &Path) -> bool {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
    }

    /// Dropping the last handle of a real file closes it, on the blocking pool when a runtime
    /// runs and at once otherwise; a handle an operation still holds is closed after it.
    #[test]
    fn dropped_files_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("closing.log");
        block_on(async {
            let file = RealDisk.open(&path, true).await.unwrap();
            assert!(held(&path));
            drop(file);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while held(&path) {
                assert!(std::time::Instant::now() < deadline, "never closed");
                compio::runtime::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        let file = block_on(RealDisk.open(&path, false)).unwrap();
        assert!(held(&path));
        drop(file);
        assert!(!held(&path), "closed at once outside a runtime");
        block_on(async {
            let small = RealDisk.open_small(&path, false).await.unwrap();
            assert!(held(&path));
            drop(small);
            assert!(!held(&path), "a small file closes where it is dropped");
        });
    }

    async fn exercise<D: Disk>(disk: D, dir: &Path) {
        disk.create_dir_all(dir).await.unwrap();
        let path = dir.join("a.log");
        let file = disk.open(&path, true).await.unwrap();
        file.write_at(Bytes::from_static(b"hello world"), 0)
            .await
            .unwrap();
        file.write_at(Bytes::from_static(b"W"), 6).await.unwrap();
        assert_eq!(file.read_at(5, 6).await.unwrap(), b"World");
        assert_eq!(file.read_at(100, 6).await.unwrap(), b"World");
        assert_eq!(file.read_at(4, 100).await.unwrap(), b"");
        assert_eq!(file.len().await.unwrap(), 11);
        file.sync_data().await.unwrap();
        file.set_len(5).await.unwrap();
        assert_eq!(file.len().await.unwrap(), 5);
        disk.rename(&path, &dir.join("b.log")).await.unwrap();
        disk.sync_dir(dir).await.unwrap();
        assert_eq!(disk.list_dir(dir).await.unwrap(), vec!["b.log".to_string()]);
        assert!(disk.open(&path, false).await.is_err());
        disk.remove_file(&dir.join("b.log")).await.unwrap();
        // An open handle keeps the contents readable after the path is gone.
        assert_eq!(file.read_at(5, 0).await.unwrap(), b"hello");
        assert!(disk.list_dir(dir).await.unwrap().is_empty());
        disk.remove_dir(dir).await.unwrap();
    }

    #[test]
    fn real_disk_basics() {
        let tmp = tempfile::tempdir().unwrap();
        block_on(exercise(RealDisk, &tmp.path().join("p-0")));
    }

    #[test]
    fn sim_disk_basics() {
        block_on(exercise(SimDisk::new(), Path::new("/sim/p-0")));
    }

    #[test]
    fn sim_crash_drops_unsynced_tail() {
        block_on(async {
            let disk = SimDisk::new();
            let dir = Path::new("/d");
            disk.create_dir_all(dir).await.unwrap();
            let path = dir.join("f");
            let file = disk.open(&path, true).await.unwrap();
            file.write_at(Bytes::from_static(b"durable"), 0)
                .await
                .unwrap();
            file.sync_data().await.unwrap();
            file.write_at(Bytes::from_static(b"-lost"), 7)
                .await
                .unwrap();
            assert_eq!(disk.unsynced_from(&path), Some(7));
            disk.crash();
            assert_eq!(disk.contents(&path).unwrap(), b"durable");
            disk.flip_bit(&path, 0, 0);
            assert_eq!(disk.contents(&path).unwrap(), b"eurable");
            disk.truncate_file(&path, 3);
            assert_eq!(disk.contents(&path).unwrap(), b"eur");
        });
    }
}
