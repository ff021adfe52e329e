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
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

mod support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rustix::pipe::{pipe, splice, SpliceFlags};

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

/// The receiving side of one way, with what it reuses between iterations.
struct Receiver {
    file: File,
    buffer: Vec<u8>,
    pipe: (rustix::fd::OwnedFd, rustix::fd::OwnedFd),
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
        let pipe = pipe().expect("pipe");
        let _ = rustix::pipe::fcntl_setpipe_size(&pipe.1, CHUNK);
        Self {
            file,
            buffer: vec![0; CHUNK],
            pipe,
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
                    let into_pipe = splice(
                        &link.socket,
                        None,
                        &self.pipe.1,
                        None,
                        want,
                        SpliceFlags::MOVE,
                    )
                    .expect("splice socket to pipe");
                    assert!(into_pipe > 0, "sender closed");
                    let mut left = into_pipe;
                    let mut offset = at;
                    while left > 0 {
                        let out = splice(
                            &self.pipe.0,
                            None,
                            &self.file,
                            Some(&mut offset),
                            left,
                            SpliceFlags::MOVE,
                        )
                        .expect("splice pipe to file");
                        left -= out;
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
