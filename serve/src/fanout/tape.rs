//! A tape: an append-only in-memory file (memfd) holding one shared encoding of a
//! stream's frames, so that the fan-out can send a viewer its bytes with `sendfile`. The
//! kernel then queues references to the tape's pages instead of copying the bytes into
//! every viewer's socket: a copy per viewer per write is the largest single cost of
//! fan-out once the writes themselves are few (see the README's Benchmark).
//!
//! Bytes once written are never changed, and space is only given back behind the oldest
//! byte any viewer still needs, a whole huge page at a time: a socket may still hold
//! references to pages given back, and the kernel keeps such a page as it was, whereas
//! punching a hole in part of a larger page would zero that part in place.

use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{FallocateFlags, MemfdFlags, OFlags};

/// Space is given back in steps of this much, aligned to it: the largest page a tmpfs file
/// may use (a PMD on x86_64 and on arm64 with 4 KiB pages), so that giving space back
/// never cuts into a page.
const RELEASE_STEP: u64 = 2 << 20;

pub struct Tape {
    file: OwnedFd,
    /// Where the next bytes go.
    end: u64,
    /// Everything before this has been given back.
    released: u64,
}

impl Tape {
    pub fn new() -> io::Result<Tape> {
        let file = rustix::fs::memfd_create("ferrolive-tape", MemfdFlags::CLOEXEC)?;
        // Otherwise every send checks whether to update the tape's access time (1% of the
        // CPU with 1000 viewers). Only a saving: the tape works without it.
        let _ = rustix::fs::fcntl_setfl(&file, OFlags::NOATIME);
        Ok(Tape {
            file,
            end: 0,
            released: 0,
        })
    }

    /// Append `slices`; returns where they are on the tape.
    pub fn append<'a>(
        &mut self,
        slices: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<Range<u64>> {
        let start = self.end;
        for mut bytes in slices {
            while !bytes.is_empty() {
                let n = rustix::io::pwrite(&self.file, bytes, self.end)?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                bytes = &bytes[n..];
                self.end += n as u64;
            }
        }
        Ok(start..self.end)
    }

    /// Send `range` of the tape to `socket`, which must be non-blocking: returns how much
    /// it took (0 when full).
    pub fn send(&self, socket: impl AsFd, range: Range<u64>) -> io::Result<usize> {
        let mut offset = range.start;
        let count = range.end.saturating_sub(range.start) as usize;
        match rustix::fs::sendfile(socket, &self.file, Some(&mut offset), count) {
            Ok(0) if count > 0 => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(n),
            Err(e) => {
                let e = io::Error::from(e);
                if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(0)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Nothing before `offset` is needed any more (`None`: nothing on the tape is).
    pub fn release_before(&mut self, offset: Option<u64>) -> io::Result<()> {
        let upto = offset.unwrap_or(self.end) / RELEASE_STEP * RELEASE_STEP;
        if upto > self.released {
            let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            rustix::fs::fallocate(&self.file, flags, self.released, upto - self.released)?;
            self.released = upto;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    /// Bytes that differ from one offset to the next, so a misplaced byte shows.
    fn pattern(start: u64, len: usize) -> Vec<u8> {
        (start..start + len as u64)
            .map(|i| (i % 251) as u8)
            .collect()
    }

    fn allocated(tape: &Tape) -> u64 {
        rustix::fs::fstat(&tape.file).unwrap().st_blocks as u64 * 512
    }

    #[test]
    fn sends_what_was_appended_where_it_was_appended() {
        let mut tape = Tape::new().unwrap();
        let (server, mut client) = socket_pair();
        let first = tape.append([&b"abc"[..], b"de"]).unwrap();
        let second = tape.append([&b"fghij"[..]]).unwrap();
        assert_eq!((first.clone(), second.clone()), (0..5, 5..10));
        assert_eq!(tape.send(&server, 3..8).unwrap(), 5);
        let mut got = [0; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"defgh");
    }

    /// Giving space back must not touch bytes a socket still holds: they were sent but the
    /// viewer has not read them yet.
    #[test]
    fn bytes_in_flight_survive_giving_their_space_back() {
        let mut tape = Tape::new().unwrap();
        let (server, mut client) = socket_pair();
        let len = 3 * RELEASE_STEP as usize;
        tape.append([&pattern(0, len)[..]]).unwrap();
        let before = allocated(&tape);
        let sent = tape.send(&server, 100_000..200_000).unwrap();
        assert!(sent > 0);

        tape.release_before(Some(RELEASE_STEP * 2 + 1)).unwrap();
        assert_eq!(tape.released, RELEASE_STEP * 2, "released in whole steps");
        assert!(
            allocated(&tape) <= before - RELEASE_STEP * 2,
            "memory given back"
        );
        tape.append([&pattern(len as u64, 4096)[..]]).unwrap();

        let mut got = vec![0; sent];
        client.read_exact(&mut got).unwrap();
        assert!(got == pattern(100_000, sent), "bytes in flight changed");

        tape.release_before(None).unwrap();
        assert_eq!(tape.released, tape.end / RELEASE_STEP * RELEASE_STEP);
    }

    #[test]
    fn sends_leave_the_access_time_alone() {
        let tape = Tape::new().unwrap();
        let flags = rustix::fs::fcntl_getfl(&tape.file).unwrap();
        assert!(flags.contains(OFlags::NOATIME));
    }

    #[test]
    fn a_full_socket_takes_nothing() {
        let mut tape = Tape::new().unwrap();
        let (server, _client) = socket_pair();
        server.set_nonblocking(true).unwrap();
        tape.append([&pattern(0, 1 << 20)[..]]).unwrap();
        let mut total = 0;
        loop {
            match tape.send(&server, 0..1 << 20).unwrap() {
                0 => break,
                n => total += n,
            }
        }
        assert!(total > 0);
    }
}
