//! The metrics endpoint: `GET /metrics` over plain HTTP on `sluice.metrics.address`, served
//! on core 0, with bounded request heads and timeouts so a scraper cannot hold it.

use std::rc::Rc;
use std::time::Duration;

use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};

use super::gather::gather;
use super::text::render;
use crate::shard::Shard;

/// Largest HTTP request head read from a scraper.
const HTTP_REQUEST_BYTES_MAX: usize = 8192;
/// How long a scraper has to send its request head, and then to take the response: an idle
/// or stalled client is dropped after this, so it cannot hold a connection forever.
const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept. The usual cause is running out of file descriptors (EMFILE),
/// which retrying at once would only repeat at full speed on core 0.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Serves `GET /metrics` on `listener` until the broker stops. Runs on core 0.
pub async fn serve(core: Rc<Shard>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed; retrying shortly");
                compio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let core = core.clone();
        compio::runtime::spawn(async move {
            let _ = answer(&core, stream).await;
        })
        .detach();
    }
}

fn timed_out(_: compio::time::Elapsed) -> std::io::Error {
    std::io::ErrorKind::TimedOut.into()
}

async fn answer(core: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    let head = compio::time::timeout(HTTP_IO_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(timed_out)??;
    if head.is_empty() {
        return Ok(());
    }
    let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        let body = render(&gather(core).await);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let written = compio::time::timeout(HTTP_IO_TIMEOUT, stream.write_all(response.into_bytes()));
    written.await.map_err(timed_out)?.0?;
    Ok(())
}

/// Reads up to the end of an HTTP request head, at most [`HTTP_REQUEST_BYTES_MAX`] bytes;
/// empty when the client closed before sending anything.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HTTP_REQUEST_BYTES_MAX {
        let buffer = Vec::with_capacity(1024);
        let compio::BufResult(read, buffer) = stream.read(buffer).await;
        if read? == 0 {
            return Ok(Vec::new());
        }
        head.extend_from_slice(&buffer);
    }
    Ok(head)
}
