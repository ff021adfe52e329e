//! Writing response chunks to a socket. Bytes chunks go out with ordinary writes; file
//! regions go file -> pipe -> socket by splice, so record bytes never enter user space.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use compio::driver::op::Splice;
use compio::driver::{DriverType, ToSharedFd};
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;
use compio::runtime::Runtime;
use compio::BufResult;
use rustix::pipe::{PipeFlags, SpliceFlags};

use crate::fetch::{Chunk, Region};

/// A file region that can be spliced: the file, and where the region starts in it.
pub trait SpliceSource: Region {
    fn fd(&self) -> BorrowedFd<'_>;
    fn position(&self) -> u64;
}

/// The pipe buffer we ask for. A larger pipe means fewer splice round trips per region;
/// 1 MiB is the default `/proc/sys/fs/pipe-max-size`, so unprivileged processes get it.
pub const PIPE_SIZE_WANTED: usize = 1024 * 1024;

/// Per-connection sender. Sends Bytes chunks with ordinary writes and Region chunks with
/// splice(file -> pipe) then splice(pipe -> socket). Counts bytes sent by splice.
///
/// After an error the pipe may hold bytes of a half-sent region and the socket holds half a
/// response: the caller must close the connection, and further sends are refused.
pub struct ZeroCopySender {
    pipe_read: Rc<OwnedFd>,
    pipe_write: Rc<OwnedFd>,
    pipe_capacity: usize,
    zero_copy_bytes: u64,
    broken: bool,
}

impl ZeroCopySender {
    pub fn new() -> io::Result<Self> {
        let (pipe_read, pipe_write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
        // The size request may be refused (a lower pipe-max-size, or the user's pipe quota);
        // the default pipe still works, only with more round trips.
        let pipe_capacity = match rustix::pipe::fcntl_setpipe_size(&pipe_write, PIPE_SIZE_WANTED) {
            Ok(size) => size,
            Err(_) => rustix::pipe::fcntl_getpipe_size(&pipe_write)?,
        };
        assert!(pipe_capacity > 0);
        Ok(Self {
            pipe_read: Rc::new(pipe_read),
            pipe_write: Rc::new(pipe_write),
            pipe_capacity,
            zero_copy_bytes: 0,
            broken: false,
        })
    }

    /// The bytes that reached a socket by splice, over this sender's life.
    pub fn zero_copy_bytes(&self) -> u64 {
        self.zero_copy_bytes
    }

    pub fn pipe_capacity(&self) -> usize {
        self.pipe_capacity
    }

    /// Sends all chunks, in order.
    pub async fn send<R: SpliceSource>(
        &mut self,
        stream: &mut TcpStream,
        chunks: Vec<Chunk<R>>,
    ) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier send failed; the connection must be closed",
            ));
        }
        self.broken = true;
        for chunk in chunks {
            match chunk {
                Chunk::Bytes(bytes) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    let BufResult(result, _) = stream.write_all(bytes).await;
                    result?;
                }
                Chunk::Region(region) => self.send_region(stream, &region).await?,
            }
        }
        self.broken = false;
        Ok(())
    }

    async fn send_region<R: SpliceSource>(
        &mut self,
        stream: &TcpStream,
        region: &R,
    ) -> io::Result<()> {
        let polling = Runtime::with_current(|runtime| runtime.driver_type()) == DriverType::Poll;
        // The operation owns its descriptors until the kernel is done with them, even if this
        // future is dropped, so it gets its own duplicate of the file descriptor.
        let file = Rc::new(region.fd().try_clone_to_owned()?);
        let mut position = region.position();
        let mut remaining = region.len();
        while remaining > 0 {
            let want = remaining.min(self.pipe_capacity as u64) as usize;
            let filled = if polling {
                self.fill_on_blocking_pool(&file, &mut position, want)
                    .await?
            } else {
                let offset = i64::try_from(position)
                    .map_err(|_| io::Error::other("file position above i64::MAX"))?;
                let op = Splice::new(
                    file.clone(),
                    offset,
                    self.pipe_write.clone(),
                    -1,
                    want,
                    SpliceFlags::empty(),
                );
                let BufResult(result, _) = compio::runtime::submit(op).await;
                let filled = result?;
                position += filled as u64;
                filled
            };
            if filled == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file region ends before its length",
                ));
            }
            debug_assert!(filled as u64 <= remaining);
            remaining -= filled as u64;
            self.drain(stream, filled, polling).await?;
        }
        Ok(())
    }

    /// The file -> pipe leg without io_uring. A regular file cannot wait in epoll, and a
    /// page-cache miss would hold the reactor inside splice until the disk answers, so the call
    /// runs on the runtime's blocking pool, with its own duplicates of the descriptors. The
    /// pipe is empty, and NONBLOCK keeps a page-straddling region from waiting for pipe slots:
    /// it returns what fitted instead.
    async fn fill_on_blocking_pool(
        &self,
        file: &OwnedFd,
        position: &mut u64,
        want: usize,
    ) -> io::Result<usize> {
        let (source, sink) = (file.try_clone()?, self.pipe_write.try_clone()?);
        let mut at = *position;
        let (result, at) = compio::runtime::spawn_blocking(move || {
            let result = rustix::pipe::splice(
                &source,
                Some(&mut at),
                &sink,
                None,
                want,
                SpliceFlags::NONBLOCK,
            );
            (result, at)
        })
        .await
        .map_err(|_| io::Error::other("splice on the blocking pool panicked"))?;
        *position = at;
        Ok(result?)
    }

    /// Moves `in_pipe` bytes from the pipe to the socket.
    async fn drain(
        &mut self,
        stream: &TcpStream,
        mut in_pipe: usize,
        polling: bool,
    ) -> io::Result<()> {
        let flags = if polling {
            SpliceFlags::NONBLOCK
        } else {
            SpliceFlags::empty()
        };
        while in_pipe > 0 {
            let op = Splice::new(
                self.pipe_read.clone(),
                -1,
                stream.to_shared_fd(),
                -1,
                in_pipe,
                flags,
            );
            let BufResult(result, _) = compio::runtime::submit(op).await;
            let sent = result?;
            if sent == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket took no bytes",
                ));
            }
            debug_assert!(sent <= in_pipe);
            in_pipe -= sent;
            self.zero_copy_bytes += sent as u64;
        }
        Ok(())
    }
}

impl AsFd for ZeroCopySender {
    /// The pipe's write end, for diagnostics.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pipe_write.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use compio::driver::ProactorBuilder;
    use compio::io::AsyncReadExt;
    use compio::net::TcpListener;
    use compio::runtime::RuntimeBuilder;
    use std::io::Write;

    struct FileRegion {
        file: Rc<std::fs::File>,
        position: u64,
        len: u64,
    }

    impl Region for FileRegion {
        fn len(&self) -> u64 {
            self.len
        }
    }

    impl SpliceSource for FileRegion {
        fn fd(&self) -> BorrowedFd<'_> {
            self.file.as_fd()
        }
        fn position(&self) -> u64 {
            self.position
        }
    }

    fn runtime(driver: DriverType) -> Option<Runtime> {
        let mut proactor = ProactorBuilder::new();
        proactor.driver_type(driver);
        let runtime = RuntimeBuilder::new().with_proactor(proactor).build().ok()?;
        // The fusion driver may fall back; only run where we got what we asked for.
        (runtime.driver_type() == driver).then_some(runtime)
    }

    /// Sends `chunks` over a loopback pair and returns what the peer read.
    async fn send_over_loopback(chunks: Vec<Chunk<FileRegion>>) -> (Vec<u8>, u64) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = compio::runtime::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let BufResult(result, received) = client.read_to_end(Vec::new()).await;
            result.unwrap();
            received
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let mut sender = ZeroCopySender::new().unwrap();
        sender.send(&mut server, chunks).await.unwrap();
        drop(server);
        let received = reader.await.unwrap();
        (received, sender.zero_copy_bytes())
    }

    fn check(driver: DriverType) {
        let Some(runtime) = runtime(driver) else {
            eprintln!("driver {driver:?} unavailable here; skipped");
            return;
        };
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&content).unwrap();
        let file = Rc::new(file);
        // Unaligned regions, one larger than the pipe, and bytes between them.
        let regions = [(17u64, 100u64), (4096 + 5, 2_500_000), (2_999_990, 10)];
        let mut chunks = vec![Chunk::Bytes(Bytes::from_static(b"head"))];
        let mut expected = b"head".to_vec();
        for (position, len) in regions {
            chunks.push(Chunk::Region(FileRegion {
                file: file.clone(),
                position,
                len,
            }));
            chunks.push(Chunk::Bytes(Bytes::from_static(b"-between-")));
            expected.extend_from_slice(&content[position as usize..(position + len) as usize]);
            expected.extend_from_slice(b"-between-");
        }
        let region_bytes: u64 = regions.iter().map(|(_, len)| len).sum();
        let (received, zero_copy_bytes) = runtime.block_on(send_over_loopback(chunks));
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes differ under {driver:?}");
        assert_eq!(zero_copy_bytes, region_bytes);
    }

    /// Thousands of small regions with bytes between them, as a fetch over many partitions
    /// is: each fill stops where the pipe's slots run out, mid-region or mid-bytes.
    fn check_many_small(driver: DriverType) {
        let Some(runtime) = runtime(driver) else {
            return;
        };
        let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&content).unwrap();
        let file = Rc::new(file);
        let mut chunks = Vec::new();
        let mut expected = Vec::new();
        let mut region_bytes = 0;
        for i in 0..3000u64 {
            let header = Bytes::from(vec![(i % 256) as u8; 1 + (i % 50) as usize]);
            expected.extend_from_slice(&header);
            chunks.push(Chunk::Bytes(header));
            let (position, len) = ((i * 331) % 990_000, 1 + (i * 97) % 9000);
            chunks.push(Chunk::Region(FileRegion {
                file: file.clone(),
                position,
                len,
            }));
            expected.extend_from_slice(&content[position as usize..(position + len) as usize]);
            region_bytes += len;
        }
        let (received, zero_copy_bytes) = runtime.block_on(send_over_loopback(chunks));
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes differ under {driver:?}");
        assert_eq!(zero_copy_bytes, region_bytes);
    }

    #[test]
    fn many_small_regions_under_io_uring() {
        check_many_small(DriverType::IoUring);
    }

    #[test]
    fn many_small_regions_under_polling() {
        check_many_small(DriverType::Poll);
    }

    #[test]
    fn splices_regions_under_io_uring() {
        check(DriverType::IoUring);
    }

    #[test]
    fn splices_regions_under_polling() {
        check(DriverType::Poll);
    }

    #[test]
    fn a_region_past_the_end_of_its_file_is_an_error() {
        let Some(runtime) = runtime(DriverType::Poll) else {
            return;
        };
        runtime.block_on(async {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(b"short").unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let _client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let mut sender = ZeroCopySender::new().unwrap();
            let region = FileRegion {
                file: Rc::new(file),
                position: 2,
                len: 10,
            };
            let error = sender
                .send(&mut server, vec![Chunk::Region(region)])
                .await
                .unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
            let again = sender.send::<FileRegion>(&mut server, vec![]).await;
            assert!(again.is_err());
        });
    }
}
