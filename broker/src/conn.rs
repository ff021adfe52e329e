//! One client connection: reads frames, runs each request as its own task so slow ones (a
//! long-poll fetch) do not hold up the rest, and writes responses strictly in request order.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use sluice_net::{Chunk, Request, ZeroCopySender};

use crate::handlers::{self, Reply};
use crate::memory::{Permit, RequestMemory};
use crate::metrics::cells::{CoreMetrics, Timing};
use crate::order::Turns;
use crate::shard::Shard;

/// Size of the frame length prefix.
const FRAME_PREFIX_BYTES: usize = 4;

/// One request's place in the response order: still running, or already answered. A request
/// that ran carries its API key and timing, for the latency metrics.
enum Pending {
    Running(i16, compio::runtime::JoinHandle<(Reply, Timing)>),
    Done(Reply, Option<(i16, Timing)>),
}

/// A handler future that measures itself: when it first ran, how long its polls took (time
/// on this core) and how long it was suspended (waiting on other cores, a long poll, I/O).
struct Timed<F> {
    handler: Pin<Box<F>>,
    read_at: Instant,
    started_at: Option<Instant>,
    local: Duration,
}

impl<F: Future<Output = Reply>> Timed<F> {
    fn new(handler: F, read_at: Instant) -> Self {
        Self {
            handler: Box::pin(handler),
            read_at,
            started_at: None,
            local: Duration::ZERO,
        }
    }
}

impl<F: Future<Output = Reply>> Future for Timed<F> {
    type Output = (Reply, Timing);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled_at = Instant::now();
        let started_at = *self.started_at.get_or_insert(polled_at);
        let polled = self.handler.as_mut().poll(cx);
        let now = Instant::now();
        self.local += now - polled_at;
        let Poll::Ready(reply) = polled else {
            return Poll::Pending;
        };
        let timing = Timing {
            read_at: self.read_at,
            queue: started_at.saturating_duration_since(self.read_at),
            local: self.local,
            remote: now
                .saturating_duration_since(started_at)
                .saturating_sub(self.local),
            handled_at: now,
        };
        Poll::Ready((reply, timing))
    }
}

/// Serves one accepted connection; `peer` is the client's address, which group members are
/// described by.
/// What `connections.max.idle.ms` looks at: requests read and not yet answered, and when a
/// frame was last read or a reply last written.
#[derive(Clone)]
struct Activity {
    outstanding: Rc<Cell<usize>>,
    last: Rc<Cell<Instant>>,
}

impl Activity {
    fn new() -> Self {
        Self {
            outstanding: Rc::new(Cell::new(0)),
            last: Rc::new(Cell::new(Instant::now())),
        }
    }

    fn read(&self) {
        self.outstanding.set(self.outstanding.get() + 1);
        self.last.set(Instant::now());
    }

    fn answered(&self) {
        self.outstanding
            .set(self.outstanding.get().saturating_sub(1));
        self.last.set(Instant::now());
    }
}

pub async fn serve_connection(core: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    set_buffer_sizes(&stream, &core.shared.config);
    let in_flight_max = core.shared.config.requests_in_flight_max;
    // Each entry is one request's task, in arrival order; the writer awaits them in turn.
    let (pending, in_order) = flume::bounded::<Pending>(in_flight_max);
    let activity = Activity::new();
    let writer = compio::runtime::spawn(write_replies(
        core.clone(),
        stream.clone(),
        in_order,
        activity.clone(),
    ));
    let idle = Duration::from_millis(core.shared.config.connections_max_idle_ms);
    let watchdog = Box::pin(until_idle(activity.clone(), idle));
    let requests = Box::pin(read_requests(core, stream, pending, peer, activity));
    // An idle connection ends the reader, its pending read with it; with nothing outstanding
    // the writer then has nothing left to send, and the connection closes.
    let reader = Box::pin(async move {
        if let futures_util::future::Either::Right(_) =
            futures_util::future::select(requests, watchdog).await
        {
            tracing::debug!(%peer, "closing a connection idle for connections.max.idle.ms");
        }
    });
    // The writer ends first when it must close the connection: the pending read is then
    // cancelled, and with the last handle to the socket gone the connection closes fully.
    // When the reader ends first (the client closed), the writer drains what is queued.
    if let futures_util::future::Either::Right((reader, _)) =
        futures_util::future::select(reader, writer).await
    {
        drop(reader);
    }
}

/// `socket.send.buffer.bytes` and `socket.receive.buffer.bytes`, where set. A size the
/// kernel refuses is reported, never fatal: the connection keeps the OS default.
fn set_buffer_sizes(stream: &TcpStream, config: &crate::config::BrokerConfig) {
    use rustix::net::sockopt;
    if let Some(size) = config.socket_send_buffer_bytes {
        if let Err(error) = sockopt::set_socket_send_buffer_size(stream, size) {
            tracing::warn!(%error, size, "cannot set socket.send.buffer.bytes");
        }
    }
    if let Some(size) = config.socket_receive_buffer_bytes {
        if let Err(error) = sockopt::set_socket_recv_buffer_size(stream, size) {
            tracing::warn!(%error, size, "cannot set socket.receive.buffer.bytes");
        }
    }
}

async fn read_requests(
    core: Rc<Shard>,
    mut stream: TcpStream,
    pending: flume::Sender<Pending>,
    peer: SocketAddr,
    activity: Activity,
) {
    let frame_max = core.shared.config.socket_request_max_bytes;
    let memory = core.shared.request_memory.clone();
    // Produce requests run concurrently but post their appends in the order they were read,
    // so batches pipelined on one connection keep their order in each partition.
    let produce_turns = Turns::default();
    loop {
        let (frame, permit) = match read_frame(&mut stream, frame_max, &memory).await {
            Ok(Some(read)) => read,
            Ok(None) => return,
            Err(reason) => {
                activity.read();
                let _ = pending
                    .send_async(Pending::Done(Reply::Close(reason), None))
                    .await;
                return;
            }
        };
        activity.read();
        let read_at = Instant::now();
        let (header, request) = match handlers::decode(frame) {
            Ok(decoded) => decoded,
            Err(reply) => {
                let closing = matches!(reply, Reply::Close(_));
                // Nothing read after a frame that closes the connection may run.
                if pending
                    .send_async(Pending::Done(reply, None))
                    .await
                    .is_err()
                    || closing
                {
                    return;
                }
                continue;
            }
        };
        let api_key = header.api_key;
        let turn = matches!(request, Request::Produce(_)).then(|| produce_turns.take());
        if matches!(&request, Request::Produce(p) if p.acks == 0) {
            // An acks=0 produce that fails closes the connection; requests behind it must not
            // run, so it runs to completion before the next frame is read.
            let handler = handlers::handle(core.clone(), header, request, turn, peer, permit);
            let (reply, timing) = Timed::new(handler, read_at).await;
            let closing = matches!(reply, Reply::Close(_));
            let done = Pending::Done(reply, Some((api_key, timing)));
            if pending.send_async(done).await.is_err() || closing {
                return;
            }
            continue;
        }
        let handler = handlers::handle(core.clone(), header, request, turn, peer, permit);
        let task = compio::runtime::spawn(Timed::new(handler, read_at));
        // A full queue means the client pipelines more than queued.max.requests: stop reading
        // until the writer catches up.
        if pending
            .send_async(Pending::Running(api_key, task))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Returns once the connection has been idle for `idle`: no request outstanding, and no frame
/// read nor reply written since (a frame stalled halfway counts as idle). One timer per
/// connection, woken at most once per `idle` while busy, so the request path pays nothing.
async fn until_idle(activity: Activity, idle: Duration) {
    loop {
        let quiet = activity.last.get().elapsed();
        let wait = if activity.outstanding.get() > 0 {
            idle
        } else if quiet >= idle {
            return;
        } else {
            idle - quiet
        };
        compio::time::sleep(wait).await;
    }
}

/// Reads one frame and the permit its bytes hold in the request memory pool (taken before the
/// body is read); `Ok(None)` at a clean end of stream, `Err` for a frame to close on.
async fn read_frame(
    stream: &mut TcpStream,
    frame_max: usize,
    memory: &Arc<RequestMemory>,
) -> Result<Option<(Bytes, Permit)>, &'static str> {
    let prefix = [0u8; FRAME_PREFIX_BYTES];
    let compio::BufResult(result, prefix) = stream.read_exact(prefix).await;
    if result.is_err() {
        return Ok(None);
    }
    let length = i32::from_be_bytes(prefix);
    if length < 0 || length as usize > frame_max {
        return Err("frame length negative or above socket.request.max.bytes");
    }
    // The length was checked against socket.request.max.bytes above; the body is read once
    // the pool can hold it.
    let permit = memory.take(length as usize).await;
    let body = Vec::with_capacity(length as usize);
    let compio::BufResult(result, body) = stream.read_exact(body.slice(..length as usize)).await;
    if result.is_err() {
        return Err("connection closed inside a frame");
    }
    Ok(Some((Bytes::from(body.into_inner()), permit)))
}

async fn write_replies(
    core: Rc<Shard>,
    mut stream: TcpStream,
    in_order: flume::Receiver<Pending>,
    activity: Activity,
) {
    let mut sender = match ZeroCopySender::new() {
        Ok(sender) => sender,
        Err(error) => {
            tracing::warn!(%error, "cannot create splice pipe; closing connection");
            return;
        }
    };
    while let Ok(pending) = in_order.recv_async().await {
        let (reply, measured) = match pending {
            Pending::Running(api_key, task) => match task.await {
                Ok((reply, timing)) => (reply, Some((api_key, timing))),
                Err(_) => (Reply::Close("request handler panicked"), None),
            },
            Pending::Done(reply, measured) => (reply, measured),
        };
        let sent = match reply {
            Reply::Frame(frame) => stream.write_all(frame).await.0.map(|_| ()),
            Reply::Chunks(chunks) => {
                let metrics = &core.metrics;
                let (mut total, mut records) = (0, 0);
                for chunk in &chunks {
                    total += chunk.len();
                    if let Chunk::Region(region) = chunk {
                        records += sluice_net::Region::len(region);
                    }
                }
                let before = sender.zero_copy_bytes();
                let sent = sender.send(&mut stream, chunks).await;
                CoreMetrics::add(&metrics.zero_copy_bytes, sender.zero_copy_bytes() - before);
                if sent.is_ok() {
                    CoreMetrics::add(&metrics.fetch_record_bytes, records);
                    CoreMetrics::add(&metrics.bytes_out, total);
                }
                sent
            }
            Reply::Nothing => Ok(()),
            Reply::Close(reason) => {
                tracing::debug!(reason, "closing connection");
                break;
            }
        };
        if sent.is_err() {
            break;
        }
        activity.answered();
        if let Some((api_key, timing)) = measured {
            core.metrics
                .record_request(api_key, &timing, Instant::now());
        }
    }
}
