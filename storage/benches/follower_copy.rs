//! What it costs a follower to land the record bytes of a fetch response in its segment file,
//! per byte, three ways, over a loopback TCP connection from a sender thread:
//!
//! - `read_write`: read from the socket into a reused 1 MiB buffer, write it at the file's
//!   end (what a follower's append does with the bytes, less its checks);
//! - `read_crc_write`: the same with a CRC-32C over the bytes (a follower checks every
//!   batch's CRC before it appends);
//! - `splice`: socket -> pipe -> file with splice(2), the bytes never in user space, so
//!   nothing can check them on the way.
//!
//! Criterion measures each on its own; `side_by_side` then takes the three in turn, iteration
//! by iteration (drift on a shared machine cannot tilt them), and prints the median wall time
//! and the receiving thread's CPU time per iteration (`RUSAGE_THREAD`): the follower's share,
//! the sender's being the same for all three. Bytes land in the page cache, without fsync.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

mod support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Bytes moved per iteration.
const BYTES_PER_ITERATION: usize = 64 << 20;
/// The receiver's read size and the pipe's capacity.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    ReadWrite,
    ReadCrcWrite,
    Splice,
}

const WAYS: [(Way, &str); 3] = [
    (Way::ReadWrite, "read_write"),
    (Way::ReadCrcWrite, "read_crc_write"),
    (Way::Splice, "splice"),
];

/// A connection whose other end sends `BYTES_PER_ITERATION` bytes each time it is asked.
struct Link {
    socket: TcpStream,
    ask: mpsc::Sender<()>,
}

impl Link {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let (ask, asked) = mpsc::channel::<()>();
        thread::spawn(move || {
            let mut peer = TcpStream::connect(address).expect("connect");
            let bytes = vec![0x5a_u8; CHUNK];
            while asked.recv().is_ok() {
                for _ in 0..BYTES_PER_ITERATION / CHUNK {
                    if peer.write_all(&bytes).is_err() {
                        return;
                    }
                }
            }
        });
        let (socket, _) = listener.accept().expect("accept");
        Self { socket, ask }
    }
}

/// A pipe (read end, write end) of `CHUNK` bytes where the kernel allows it.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ on a pipe we own; failing only leaves the default size.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    (read, write)
}

/// splice(2) of up to `len` bytes from `from` to `to`, at `*offset` of `to` when given.
fn splice(from: RawFd, to: RawFd, offset: Option<&mut i64>, len: usize) -> usize {
    let offset = offset.map_or(std::ptr::null_mut(), |at| at as *mut i64);
    // SAFETY: both descriptors are open for the call; `offset` is null or points to an i64
    // that outlives it.
    let moved = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            offset,
            len,
            libc::SPLICE_F_MOVE,
        )
    };
    assert!(moved >= 0, "splice: {}", io::Error::last_os_error());
    moved as usize
}

/// The receiving side of one way, with what it reuses between iterations.
struct Receiver {
    file: File,
    buffer: Vec<u8>,
    pipe: (OwnedFd, OwnedFd),
    crc: u64,
}

impl Receiver {
    fn new(dir: &std::path::Path) -> Self {
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("00000000000000000000.log"))
            .expect("segment file");
        Self {
            file,
            buffer: vec![0; CHUNK],
            pipe: pipe(),
            crc: 0,
        }
    }

    /// Receives one iteration's bytes from `link` into the file, from its start.
    fn receive(&mut self, link: &mut Link, way: Way) {
        link.ask.send(()).expect("sender alive");
        let mut at = 0_u64;
        let end = BYTES_PER_ITERATION as u64;
        while at < end {
            let want = CHUNK.min((end - at) as usize);
            let moved = match way {
                Way::ReadWrite | Way::ReadCrcWrite => {
                    let read = link.socket.read(&mut self.buffer[..want]).expect("read");
                    assert!(read > 0, "sender closed");
                    let bytes = &self.buffer[..read];
                    if way == Way::ReadCrcWrite {
                        self.crc ^= crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes);
                    }
                    self.file.write_all_at(bytes, at).expect("write");
                    read
                }
                Way::Splice => {
                    let (socket, pipe_in) = (link.socket.as_raw_fd(), self.pipe.1.as_raw_fd());
                    let into_pipe = splice(socket, pipe_in, None, want);
                    assert!(into_pipe > 0, "sender closed");
                    let mut left = into_pipe;
                    let mut offset = at as i64;
                    while left > 0 {
                        let (pipe_out, file) = (self.pipe.0.as_raw_fd(), self.file.as_raw_fd());
                        left -= splice(pipe_out, file, Some(&mut offset), left);
                    }
                    into_pipe
                }
            };
            at += moved as u64;
        }
    }
}

fn each_way(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("follower_copy");
    group.throughput(Throughput::Bytes(BYTES_PER_ITERATION as u64));
    group.sample_size(10);
    for (way, name) in WAYS {
        let mut link = Link::new();
        let mut receiver = Receiver::new(dir.path());
        group.bench_function(name, |b| b.iter(|| receiver.receive(&mut link, way)));
    }
    group.finish();
}

fn side_by_side(_: &mut Criterion) {
    const ROUNDS: usize = 15;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut receivers: Vec<(Link, Receiver)> = WAYS
        .iter()
        .map(|_| (Link::new(), Receiver::new(dir.path())))
        .collect();
    let mut wall = vec![Vec::new(); WAYS.len()];
    let mut cpu = vec![Vec::new(); WAYS.len()];
    for round in 0..ROUNDS + 1 {
        for (i, (way, _)) in WAYS.iter().enumerate() {
            let (link, receiver) = &mut receivers[i];
            let (began, began_cpu) = (Instant::now(), support::cpu(libc::RUSAGE_THREAD));
            receiver.receive(link, *way);
            // The first round warms the page cache and the connections.
            if round > 0 {
                wall[i].push(began.elapsed());
                cpu[i].push(support::cpu(libc::RUSAGE_THREAD) - began_cpu);
            }
        }
    }
    let mib = (BYTES_PER_ITERATION >> 20) as f64;
    println!("follower_copy side by side, {ROUNDS} rounds of {mib} MiB each way, medians:");
    let base_cpu = support::median(cpu[0].clone());
    for (i, (_, name)) in WAYS.iter().enumerate() {
        let (wall, cpu) = (
            support::median(wall[i].clone()),
            support::median(cpu[i].clone()),
        );
        println!(
            "  {name:<15} {:>7.1} MiB/s wall  receiver CPU {:>6.1} ms ({:.2} of read_write)",
            mib / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e3,
            cpu.as_secs_f64() / base_cpu.as_secs_f64(),
        );
    }
}

criterion_group!(benches, each_way, side_by_side);
criterion_main!(benches);
