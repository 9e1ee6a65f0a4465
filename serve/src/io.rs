//! Socket helpers shared by the listeners. Sockets are used through shared references,
//! since a viewer's socket is also written by its stream's fan-out.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::fanout::{EgressError, WRITE_TIMEOUT};
use crate::metrics::Metrics;

/// Apply [`crate::NodeConfig::viewer_send_buffer`] to a socket that starts playing.
pub(crate) fn limit_send_buffer(socket: &TcpStream, bytes: usize) {
    if bytes > 0 {
        let _ = socket2::SockRef::from(socket).set_send_buffer_size(bytes);
    }
}

/// Read what `socket` has (waiting for something): the count, 0 at end of stream.
pub async fn read_some(socket: &TcpStream, buf: &mut bytes::BytesMut) -> std::io::Result<usize> {
    loop {
        socket.readable().await?;
        match socket.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

/// Write all of `data` to `socket`, giving up after [`WRITE_TIMEOUT`] without progress.
pub async fn write_all(
    socket: &TcpStream,
    mut data: &[u8],
    metrics: &Metrics,
) -> Result<(), EgressError> {
    while !data.is_empty() {
        tokio::time::timeout(WRITE_TIMEOUT, socket.writable())
            .await
            .map_err(|_| EgressError::WriteTimeout(WRITE_TIMEOUT))??;
        match socket.try_write(data) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
            Ok(n) => {
                Metrics::add(&metrics.bytes_out_total, n as u64);
                data = &data[n..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Close the sending side of `socket`, which the fan-out may still hold: the peer reads
/// the end of the stream.
pub fn shutdown_write(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write);
}

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client's first bytes are the HTTP/2 preface. Peeks, so hyper still reads
/// them; resolves as soon as the bytes so far differ from the preface.
pub async fn starts_as_http2(socket: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; HTTP2_PREFACE.len()];
    loop {
        let n = socket.peek(&mut first).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if first[..n] != HTTP2_PREFACE[..n] {
            return Ok(false);
        }
        if n == HTTP2_PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface: peeking again would return the same bytes at once, so wait
        // a moment for the rest (the caller's deadline bounds this).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
