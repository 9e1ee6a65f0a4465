//! HTTP/1.x responses, sans-IO, for the one client ferrolive has: a relay pulling HTTP-FLV.
//! [`take_response_head`] takes a status line and headers off the front of what was read
//! (skipping `1xx` interim responses) and says how the body is framed; [`ChunkedDecoder`]
//! turns a chunked body back into the bytes it carries.

use bytes::{Buf, BytesMut};

/// Most headers accepted in one response.
pub const MAX_RESPONSE_HEADERS: usize = 64;
/// Longest chunk size line or trailer line accepted.
const MAX_LINE: usize = 1024;

/// Why a response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("response head over {0} bytes")]
    HeadTooLarge(usize),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// `Transfer-Encoding: chunked`: read with a [`ChunkedDecoder`].
    Chunked,
    /// `Content-Length`.
    Length(u64),
    /// Neither: the body runs until the server closes the connection.
    UntilClose,
}

/// One parsed (final, not `1xx`) response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub body: BodyLength,
    /// The `Location` header (redirects).
    pub location: Option<String>,
}

/// Take one final response head off the front of `buf` (interim `1xx` heads before it are
/// consumed and dropped as soon as they are whole); heads may be at most `max_head` bytes.
/// `Ok(None)` while it is incomplete (read more and call again); once complete, its bytes
/// are consumed and what follows (the body) stays in `buf`.
pub fn take_response_head(
    buf: &mut BytesMut,
    max_head: usize,
) -> Result<Option<ResponseHead>, ResponseError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let end = match response.parse(buf) {
            Ok(httparse::Status::Complete(end)) if end <= max_head => end,
            Ok(httparse::Status::Partial) if buf.len() < max_head => return Ok(None),
            Ok(_) => return Err(ResponseError::HeadTooLarge(max_head)),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ResponseError::Malformed("too many headers"))
            }
            Err(_) => return Err(ResponseError::Malformed("unparsable response head")),
        };
        let status = response.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            buf.advance(end);
            continue;
        }
        let head = read_head(&response)?;
        buf.advance(end);
        return Ok(Some(head));
    }
}

fn read_head(response: &httparse::Response<'_, '_>) -> Result<ResponseHead, ResponseError> {
    let text = |value: &[u8]| String::from_utf8_lossy(value).trim().to_owned();
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut location = None;
    for h in response.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked is the last coding whenever it is used at all.
            chunked = text(h.value)
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            let value = text(h.value);
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ResponseError::Malformed("invalid Content-Length"));
            }
            let value = value
                .parse()
                .map_err(|_| ResponseError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != value) {
                return Err(ResponseError::Malformed(
                    "conflicting Content-Length headers",
                ));
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("location") {
            location = Some(text(h.value));
        }
    }
    let body = match (chunked, length) {
        (true, _) => BodyLength::Chunked,
        (false, Some(length)) => BodyLength::Length(length),
        (false, None) => BodyLength::UntilClose,
    };
    Ok(ResponseHead {
        status: response.code.unwrap_or(0),
        reason: response.reason.unwrap_or("").to_owned(),
        body,
        location,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Waiting for a chunk size line.
    Size,
    /// This many bytes of the chunk's data to go.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (empty) chunk: trailer lines until an empty one.
    Trailer,
    Done,
}

/// Decoder of a chunked body: feed it what was read, it moves the data to `out`.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }

    /// Consume what can be decoded from `input`, appending the body's bytes to `out`.
    /// `Ok(true)` once the body is complete (what follows it stays in `input`).
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<bool, ResponseError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(input)? else {
                        return Ok(false);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let take = left.min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..take]);
                    input.advance(take);
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    let Some(line) = take_line(input)? else {
                        return Ok(false);
                    };
                    if !line.is_empty() {
                        return Err(ResponseError::Malformed("chunk longer than its size"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(line) = take_line(input)? else {
                        return Ok(false);
                    };
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(true),
            }
        }
    }
}

/// One line (CRLF or bare LF) off the front of `input`, without its end; `None` while
/// incomplete.
fn take_line(input: &mut BytesMut) -> Result<Option<BytesMut>, ResponseError> {
    let searched = &input[..input.len().min(MAX_LINE + 2)];
    let Some(end) = searched.iter().position(|&b| b == b'\n') else {
        if input.len() > MAX_LINE + 1 {
            return Err(ResponseError::Malformed("chunk line too long"));
        }
        return Ok(None);
    };
    let mut line = input.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line))
}

/// A chunk size line: hex digits, then optional whitespace and `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ResponseError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
    if digits == 0 || digits > 15 || !rest_ok {
        return Err(ResponseError::Malformed("invalid chunk size"));
    }
    // At most 15 hex digits: the value fits.
    line[..digits]
        .iter()
        .try_fold(0u64, |size, &b| {
            Some(size * 16 + u64::from(char::from(b).to_digit(16)?))
        })
        .ok_or(ResponseError::Malformed("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(bytes: &[u8]) -> Result<Option<ResponseHead>, ResponseError> {
        take_response_head(&mut BytesMut::from(bytes), 4096)
    }

    #[test]
    fn heads_say_how_the_body_ends() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: video/x-flv\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.status, h.reason.as_str()), (200, "OK"));
        assert_eq!(h.body, BodyLength::Chunked);
        let h = head(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyLength::Length(12));
        let h = head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, BodyLength::UntilClose);
        let h =
            head(b"HTTP/1.1 302 Found\r\nLocation: http://b/x.flv\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            (h.status, h.location.as_deref()),
            (302, Some("http://b/x.flv"))
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(ResponseError::Malformed(
                "conflicting Content-Length headers"
            ))
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(ResponseError::Malformed("invalid Content-Length"))
        );
        assert!(head(b"FLV\x01\x05\0\0\0\x09").is_err());
    }

    #[test]
    fn interim_responses_are_skipped_and_the_body_stays() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nFLV"[..]);
        let h = take_response_head(&mut buf, 4096).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(&buf[..], b"FLV");
    }

    #[test]
    fn incomplete_and_oversized_heads() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nServer: x\r\n"[..]);
        assert_eq!(take_response_head(&mut buf, 4096), Ok(None));
        assert_eq!(buf.len(), 28);
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(200));
        assert_eq!(
            take_response_head(&mut BytesMut::from(big.as_bytes()), 100),
            Err(ResponseError::HeadTooLarge(100))
        );
        let endless = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(200));
        assert_eq!(
            take_response_head(&mut BytesMut::from(endless.as_bytes()), 100),
            Err(ResponseError::HeadTooLarge(100))
        );
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool, Vec<u8>), ResponseError> {
        let mut decoder = ChunkedDecoder::new();
        let mut input = BytesMut::from(input);
        let mut out = BytesMut::new();
        let done = decoder.decode(&mut input, &mut out)?;
        Ok((out.to_vec(), done, input.to_vec()))
    }

    #[test]
    fn chunked_bodies() {
        let (body, done, rest) =
            decode_all(b"5\r\nhello\r\n1;ext=1\r\n \r\n0\r\nTrailer: x\r\n\r\nnext").unwrap();
        assert_eq!(
            (&body[..], done, &rest[..]),
            (&b"hello "[..], true, &b"next"[..])
        );
        // Bare LF line ends are read too.
        let (body, done, _) = decode_all(b"3\nabc\n0\n\n").unwrap();
        assert_eq!((&body[..], done), (&b"abc"[..], true));
        let (body, done, _) = decode_all(b"A\r\n01234").unwrap();
        assert_eq!((&body[..], done), (&b"01234"[..], false));
        assert!(decode_all(b"x\r\n").is_err());
        assert!(decode_all(b"\r\n").is_err());
        assert!(decode_all(b"3\r\nabcd\r\n").is_err());
        assert!(decode_all(b"ffffffffffffffff\r\n").is_err());
        assert!(decode_all(&[b'1'; 2000]).is_err());
    }

    proptest! {
        #[test]
        fn chunked_bodies_decode_however_they_are_split(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..6),
            cuts in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let mut encoded = Vec::new();
            for chunk in &chunks {
                encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                encoded.extend_from_slice(chunk);
                encoded.extend_from_slice(b"\r\n");
            }
            encoded.extend_from_slice(b"0\r\n\r\n");
            let mut decoder = ChunkedDecoder::new();
            let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
            let mut rest = &encoded[..];
            let mut done = false;
            for cut in cuts.iter().cycle() {
                let n = (*cut).min(rest.len());
                input.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                done = decoder.decode(&mut input, &mut out).unwrap();
                if rest.is_empty() {
                    break;
                }
            }
            prop_assert!(done);
            prop_assert_eq!(out.to_vec(), chunks.concat());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = take_response_head(&mut BytesMut::from(&data[..]), 256);
            let _ = decode_all(&data);
        }
    }
}
