//! Answers with a body of known length, and the headers every answer carries.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::HttpError;

/// Players in browsers fetch from other origins.
pub(super) const CORS: &str = "Access-Control-Allow-Origin: *\r\n";

pub(super) async fn not_found(
    socket: &mut TcpStream,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> Result<(), HttpError> {
    respond(
        socket,
        "404 Not Found",
        "text/plain",
        body,
        head_only,
        keep_alive,
    )
    .await
}

pub(super) fn connection_header(keep_alive: bool) -> &'static str {
    if keep_alive {
        "Connection: keep-alive\r\n"
    } else {
        "Connection: close\r\n"
    }
}

pub(super) async fn respond(
    socket: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> Result<(), HttpError> {
    respond_cached(
        socket,
        status,
        content_type,
        "no-cache",
        body,
        head_only,
        keep_alive,
    )
    .await
}

pub(super) async fn respond_cached(
    socket: &mut TcpStream,
    status: &str,
    content_type: &str,
    cache_control: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> Result<(), HttpError> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{CORS}Cache-Control: {cache_control}\r\n{}\r\n",
        body.len(),
        connection_header(keep_alive)
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    socket.write_all(&out).await?;
    Ok(())
}
