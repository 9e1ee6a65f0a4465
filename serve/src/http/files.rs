//! Recorded files, served with byte ranges so that a browser's `<video>` can seek in them.
//!
//! A file still being recorded is served as long as it is when the request arrives.

use std::io::SeekFrom;
use std::path::Path;

use media::http::{byte_range, RequestHead};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::respond::{connection_header, Reply, CORS};
use super::HttpError;

/// Answer `request` for `file` (a path [`super::routes::recording_of`] accepted) under
/// `dir`.
pub(super) async fn serve_recording(
    socket: &mut TcpStream,
    dir: &Path,
    file: &str,
    request: &RequestHead,
    head_only: bool,
    keep_alive: bool,
) -> Result<(), HttpError> {
    let path = dir.join(file);
    let opened = match tokio::fs::File::open(&path).await {
        Ok(opened) => opened,
        Err(_) => {
            return Reply::not_found("recording")
                .write(socket, head_only, keep_alive)
                .await
        }
    };
    let len = match opened.metadata().await {
        Ok(meta) if meta.is_file() => meta.len(),
        _ => {
            return Reply::not_found("recording")
                .write(socket, head_only, keep_alive)
                .await
        }
    };
    let content_type = if file.ends_with(".mp4") {
        "video/mp4"
    } else {
        "video/x-flv"
    };
    let (status, first, body_len, content_range) = match byte_range(request.range.as_deref(), len) {
        Ok(None) => ("200 OK", 0, len, String::new()),
        Ok(Some((first, last))) => (
            "206 Partial Content",
            first,
            last + 1 - first,
            format!("Content-Range: bytes {first}-{last}/{len}\r\n"),
        ),
        Err(_) => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n{CORS}{}\r\n",
                connection_header(keep_alive)
            );
            socket.write_all(head.as_bytes()).await?;
            return Ok(());
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\nAccept-Ranges: bytes\r\n{content_range}{CORS}Cache-Control: no-cache\r\n{}\r\n",
        connection_header(keep_alive)
    );
    socket.write_all(head.as_bytes()).await?;
    if head_only || body_len == 0 {
        return Ok(());
    }
    let mut opened = opened;
    opened.seek(SeekFrom::Start(first)).await?;
    let copied = tokio::io::copy(&mut opened.take(body_len), socket).await?;
    if copied < body_len {
        // The file shrank (deleted or cut) while being sent: the answer is short, so the
        // connection cannot carry another.
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(())
}
