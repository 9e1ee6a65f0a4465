//! Answers with a body of known length, and the headers every answer carries.

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::HttpError;

/// Players in browsers fetch from other origins.
pub(super) const CORS: &str = "Access-Control-Allow-Origin: *\r\n";

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
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{CORS}Cache-Control: {cache_control}\r\n{}\r\n",
        body.len(),
        connection_header(keep_alive)
    );
    let body = if head_only { &[][..] } else { body };
    // Head and body in one vectored write: a segment or part is not copied behind its head.
    let mut out = head.as_bytes().chain(body);
    socket.write_all_buf(&mut out).await?;
    Ok(())
}

/// An answer that is one body, as HTTP/1.1 and HTTP/2 both send it.
pub(super) struct Reply {
    /// Code and reason, as in an HTTP/1.1 status line.
    pub status: &'static str,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub body: Bytes,
}

impl Reply {
    pub fn text(status: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            cache_control: "no-cache",
            body: body.into(),
        }
    }

    /// The client asks too often: 429, and when to try again.
    pub fn too_many(wait: std::time::Duration) -> Reply {
        let seconds = wait.as_secs_f64().ceil().max(1.0);
        Reply::text(
            "429 Too Many Requests",
            format!("too many requests from this address; retry in {seconds} s\n"),
        )
    }

    /// `what` is not here (404).
    pub fn not_found(what: &'static str) -> Reply {
        Reply::text("404 Not Found", format!("{what} not found\n"))
    }

    /// Content whose URL is never reused for other content: cached for long.
    pub fn immutable(content_type: &'static str, body: Bytes) -> Reply {
        Reply {
            status: "200 OK",
            content_type,
            cache_control: "public, max-age=86400, immutable",
            body,
        }
    }

    /// The status code (the status line's first three digits).
    pub fn code(&self) -> u16 {
        self.status
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or(500)
    }

    pub async fn write(
        &self,
        socket: &mut TcpStream,
        head_only: bool,
        keep_alive: bool,
    ) -> Result<(), HttpError> {
        respond_cached(
            socket,
            self.status,
            self.content_type,
            self.cache_control,
            &self.body,
            head_only,
            keep_alive,
        )
        .await
    }
}
