//! RTMP handshake (C0/C1/C2 and S0/S1/S2), sans-IO, server and client side.
//!
//! Two flavours exist in the wild. The plain one is the RTMP 1.0 spec: S2 echoes C1.
//! The "digest" (complex) one is what Flash Player, librtmp (OBS) and ffmpeg send:
//! C1 carries an HMAC-SHA256 digest and some of those clients expect S1/S2 signed the
//! same way, so the server answers in kind whenever C1's digest validates.
//!
//! Randomness comes from the caller so everything here is deterministic and testable.

use bytes::{Buf, BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The only protocol version we speak (plain, unencrypted RTMP).
pub const RTMP_VERSION: u8 = 3;
/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// Size of the random part of C1/S1 (everything after time and version).
pub const RANDOM_SIZE: usize = HANDSHAKE_SIZE - 8;
/// Size of an HMAC-SHA256 digest.
pub const DIGEST_SIZE: usize = 32;

/// Each of the key and digest blocks of a complex C1/S1.
const BLOCK_SIZE: usize = 764;
/// Range of the digest offset inside a digest block (764 - 4 offset bytes - 32 digest).
const DIGEST_RANGE: usize = 728;
/// Version field we put in a complex S1 (any non-zero value marks "digest" to clients).
const SERVER_VERSION: [u8; 4] = [0x0D, 0x0E, 0x0A, 0x0D];
/// Version field of our complex C1 (a Flash Player 9+ version, which servers expect).
const CLIENT_VERSION: [u8; 4] = [0x80, 0x00, 0x07, 0x02];

/// Public part of the Flash Player key: signs C1.
const FP_KEY_TEXT: &[u8; 30] = b"Genuine Adobe Flash Player 001";
/// Public part of the Flash Media Server key: signs S1.
const FMS_KEY_TEXT: &[u8; 36] = b"Genuine Adobe Flash Media Server 001";
/// Fixed suffix completing both keys; the full keys derive the S2/C2 signing keys.
const KEY_SUFFIX: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
    0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// C0/S0 other than 3. 6 (RTMPE, encrypted) lands here too: we do not implement it.
    #[error("unsupported RTMP version {0} (only 3, plain RTMP, is supported; 6 is RTMPE)")]
    UnsupportedVersion(u8),
    /// `ClientHandshake::feed` called before `start`: C0+C1 were never sent.
    #[error("client handshake fed before start()")]
    NotStarted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// RTMP 1.0 spec handshake: S2 echoes C1.
    Simple,
    /// Digest handshake (Flash Player, librtmp, ffmpeg).
    Complex,
}

/// Where the digest block sits in a complex C1/S1. Both occur in the wild, and the
/// server must sign S1 with the schema the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestSchema {
    /// time, version, key block, digest block (Flash Player 10+; "schema 0" in some docs).
    KeyFirst,
    /// time, version, digest block, key block (librtmp/OBS, ffmpeg; "schema 1" in some docs).
    DigestFirst,
}

impl DigestSchema {
    /// Order in which a received C1/S1 is tried.
    const ALL: [DigestSchema; 2] = [DigestSchema::KeyFirst, DigestSchema::DigestFirst];

    fn digest_block_start(self) -> usize {
        match self {
            DigestSchema::KeyFirst => 8 + BLOCK_SIZE,
            DigestSchema::DigestFirst => 8,
        }
    }

    /// Position of the 32-byte digest in `packet`: block start + 4 + (sum of the
    /// block's first 4 bytes mod 728). Always `<= HANDSHAKE_SIZE - DIGEST_SIZE`.
    pub fn digest_offset(self, packet: &[u8; HANDSHAKE_SIZE]) -> usize {
        let base = self.digest_block_start();
        let sum: usize = packet[base..base + 4].iter().map(|&b| usize::from(b)).sum();
        base + 4 + sum % DIGEST_RANGE
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_SIZE] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn fms_full_key() -> [u8; 68] {
    let mut key = [0u8; 68];
    key[..36].copy_from_slice(FMS_KEY_TEXT);
    key[36..].copy_from_slice(&KEY_SUFFIX);
    key
}

fn fp_full_key() -> [u8; 62] {
    let mut key = [0u8; 62];
    key[..30].copy_from_slice(FP_KEY_TEXT);
    key[30..].copy_from_slice(&KEY_SUFFIX);
    key
}

/// HMAC of `packet` with the 32 bytes at `pos` left out.
fn packet_digest(packet: &[u8; HANDSHAKE_SIZE], pos: usize, key: &[u8]) -> [u8; DIGEST_SIZE] {
    hmac_sha256(key, &[&packet[..pos], &packet[pos + DIGEST_SIZE..]])
}

/// Finds a valid digest in a C1 (key: FP 30 bytes) or S1 (key: FMS 36 bytes).
/// Returns the schema and the digest; `None` means "treat as simple handshake".
pub fn find_digest(
    packet: &[u8; HANDSHAKE_SIZE],
    key: &[u8],
) -> Option<(DigestSchema, [u8; DIGEST_SIZE])> {
    DigestSchema::ALL.into_iter().find_map(|schema| {
        let pos = schema.digest_offset(packet);
        let found = &packet[pos..pos + DIGEST_SIZE];
        let expected = packet_digest(packet, pos, key);
        // No secret is protected here, so a plain comparison is fine.
        (found == expected).then_some((schema, expected))
    })
}

/// Writes the digest of `packet` (keyed with `key`) at the schema's position.
fn imprint_digest(
    packet: &mut [u8; HANDSHAKE_SIZE],
    schema: DigestSchema,
    key: &[u8],
) -> [u8; DIGEST_SIZE] {
    let pos = schema.digest_offset(packet);
    let digest = packet_digest(packet, pos, key);
    packet[pos..pos + DIGEST_SIZE].copy_from_slice(&digest);
    digest
}

/// 1504 bytes of `random` followed by their HMAC keyed with HMAC(`full_key`, `peer_digest`):
/// the S2 (or C2) of a complex handshake.
fn signed_response(
    random: &[u8; RANDOM_SIZE],
    full_key: &[u8],
    peer_digest: &[u8; DIGEST_SIZE],
) -> [u8; HANDSHAKE_SIZE] {
    let mut packet = [0u8; HANDSHAKE_SIZE];
    // Reversed so S2 does not repeat S1's bytes verbatim; only unpredictability-free
    // filler is needed here.
    for (dst, src) in packet[..HANDSHAKE_SIZE - DIGEST_SIZE]
        .iter_mut()
        .zip(random.iter().rev())
    {
        *dst = *src;
    }
    let key = hmac_sha256(full_key, &[peer_digest]);
    let sig = hmac_sha256(&key, &[&packet[..HANDSHAKE_SIZE - DIGEST_SIZE]]);
    packet[HANDSHAKE_SIZE - DIGEST_SIZE..].copy_from_slice(&sig);
    packet
}

/// Builds a complex (digest) C1 as Flash Player/librtmp do: time 0, a Flash Player
/// version, `random`, and the FP-key digest placed according to `schema`.
pub fn make_complex_c1(random: &[u8; RANDOM_SIZE], schema: DigestSchema) -> [u8; HANDSHAKE_SIZE] {
    let mut c1 = [0u8; HANDSHAKE_SIZE];
    c1[4..8].copy_from_slice(&CLIENT_VERSION);
    c1[8..].copy_from_slice(random);
    imprint_digest(&mut c1, schema, FP_KEY_TEXT);
    c1
}

/// Checks a C0/S0 byte. RTMPE (6) is refused like any other version: not implemented.
fn check_version(v: u8) -> Result<(), HandshakeError> {
    if v == RTMP_VERSION {
        Ok(())
    } else {
        Err(HandshakeError::UnsupportedVersion(v))
    }
}

/// Moves up to `need - buf.len()` bytes from `input` into `buf`; true once `buf` is full.
fn fill(buf: &mut Vec<u8>, need: usize, input: &mut BytesMut) -> bool {
    let take = need.saturating_sub(buf.len()).min(input.len());
    buf.extend_from_slice(&input[..take]);
    input.advance(take);
    buf.len() >= need
}

/// Consumes up to `*remaining` bytes of `input`; true once nothing remains.
fn skip(remaining: &mut usize, input: &mut BytesMut) -> bool {
    let take = (*remaining).min(input.len());
    input.advance(take);
    *remaining -= take;
    *remaining == 0
}

#[derive(Debug)]
enum ServerState {
    /// Collecting C0+C1 (buffered internally, at most 1537 bytes).
    ReadC0C1,
    /// S0+S1+S2 sent, skipping C2.
    ReadC2 {
        remaining: usize,
    },
    Done,
    Failed(HandshakeError),
}

/// Server side: reads C0+C1, answers S0+S1+S2, then swallows C2.
#[derive(Debug)]
pub struct ServerHandshake {
    random: Box<[u8; RANDOM_SIZE]>,
    c0c1: Vec<u8>,
    state: ServerState,
    kind: Option<HandshakeKind>,
}

impl ServerHandshake {
    /// `random` fills S1's random part (and S2's for a complex handshake).
    pub fn new(random: [u8; RANDOM_SIZE]) -> Self {
        Self {
            random: Box::new(random),
            c0c1: Vec::new(),
            state: ServerState::ReadC0C1,
            kind: None,
        }
    }

    /// Simple or complex; known once C1 has been read.
    pub fn kind(&self) -> Option<HandshakeKind> {
        self.kind
    }

    /// Consumes handshake bytes from `input` (never past C2, so what follows stays
    /// there for the chunk reader) and appends S0+S1+S2 to `out` once C1 is in.
    /// Returns Ok(true) once C2 has been consumed. After an error, keeps returning it.
    pub fn feed(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<bool, HandshakeError> {
        loop {
            match &mut self.state {
                ServerState::Failed(e) => return Err(e.clone()),
                ServerState::Done => return Ok(true),
                ServerState::ReadC0C1 => {
                    if self.c0c1.is_empty() {
                        // Check C0 before buffering C1 so bad peers fail fast.
                        let Some(&c0) = input.first() else {
                            return Ok(false);
                        };
                        if let Err(e) = check_version(c0) {
                            self.state = ServerState::Failed(e.clone());
                            return Err(e);
                        }
                        self.c0c1.reserve_exact(1 + HANDSHAKE_SIZE);
                    }
                    if !fill(&mut self.c0c1, 1 + HANDSHAKE_SIZE, input) {
                        return Ok(false);
                    }
                    let mut c1 = [0u8; HANDSHAKE_SIZE];
                    c1.copy_from_slice(&self.c0c1[1..1 + HANDSHAKE_SIZE]);
                    self.c0c1 = Vec::new();
                    self.respond(&c1, out);
                    self.state = ServerState::ReadC2 {
                        remaining: HANDSHAKE_SIZE,
                    };
                }
                ServerState::ReadC2 { remaining } => {
                    if !skip(remaining, input) {
                        return Ok(false);
                    }
                    self.state = ServerState::Done;
                }
            }
        }
    }

    /// Writes S0+S1+S2 for `c1`, complex if its digest validates, simple otherwise.
    fn respond(&mut self, c1: &[u8; HANDSHAKE_SIZE], out: &mut BytesMut) {
        out.reserve(1 + 2 * HANDSHAKE_SIZE);
        out.put_u8(RTMP_VERSION);
        let mut s1 = [0u8; HANDSHAKE_SIZE];
        s1[8..].copy_from_slice(&self.random[..]);

        // A zero version field means the client did not sign C1 at all.
        let digest = if c1[4..8] == [0, 0, 0, 0] {
            None
        } else {
            find_digest(c1, FP_KEY_TEXT)
        };
        match digest {
            Some((schema, c1_digest)) => {
                self.kind = Some(HandshakeKind::Complex);
                s1[4..8].copy_from_slice(&SERVER_VERSION);
                imprint_digest(&mut s1, schema, FMS_KEY_TEXT);
                out.put_slice(&s1);
                out.put_slice(&signed_response(&self.random, &fms_full_key(), &c1_digest));
            }
            None => {
                self.kind = Some(HandshakeKind::Simple);
                out.put_slice(&s1);
                out.put_slice(c1);
            }
        }
    }
}

#[derive(Debug)]
enum ClientState {
    New,
    /// C0+C1 sent, collecting S0+S1 (buffered internally, at most 1537 bytes).
    ReadS0S1,
    /// C2 sent, skipping S2.
    ReadS2 {
        remaining: usize,
    },
    Done,
    Failed(HandshakeError),
}

/// Client side, for our test tools and load generator. S2 is not validated:
/// servers differ and nothing depends on it.
#[derive(Debug)]
pub struct ClientHandshake {
    random: Box<[u8; RANDOM_SIZE]>,
    schema: Option<DigestSchema>,
    s0s1: Vec<u8>,
    state: ClientState,
}

impl ClientHandshake {
    /// Simple handshake (zero version field in C1); `random` fills C1's random part.
    pub fn new(random: [u8; RANDOM_SIZE]) -> Self {
        Self {
            random: Box::new(random),
            schema: None,
            s0s1: Vec::new(),
            state: ClientState::New,
        }
    }

    /// Digest handshake as Flash Player/librtmp send it, to exercise servers' complex path.
    pub fn new_complex(random: [u8; RANDOM_SIZE], schema: DigestSchema) -> Self {
        Self {
            schema: Some(schema),
            ..Self::new(random)
        }
    }

    /// Appends C0+C1 to `out`. Only the first call writes anything.
    pub fn start(&mut self, out: &mut BytesMut) {
        if !matches!(self.state, ClientState::New) {
            return;
        }
        let c1 = match self.schema {
            Some(schema) => make_complex_c1(&self.random, schema),
            None => {
                let mut c1 = [0u8; HANDSHAKE_SIZE];
                c1[8..].copy_from_slice(&self.random[..]);
                c1
            }
        };
        out.reserve(1 + HANDSHAKE_SIZE);
        out.put_u8(RTMP_VERSION);
        out.put_slice(&c1);
        self.state = ClientState::ReadS0S1;
    }

    /// Consumes S0+S1+S2 from `input` (never past S2) and appends C2 to `out` as soon
    /// as S1 is in. Returns Ok(true) once S2 has been consumed.
    pub fn feed(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<bool, HandshakeError> {
        loop {
            match &mut self.state {
                ClientState::New => return Err(HandshakeError::NotStarted),
                ClientState::Failed(e) => return Err(e.clone()),
                ClientState::Done => return Ok(true),
                ClientState::ReadS0S1 => {
                    if self.s0s1.is_empty() {
                        let Some(&s0) = input.first() else {
                            return Ok(false);
                        };
                        if let Err(e) = check_version(s0) {
                            self.state = ClientState::Failed(e.clone());
                            return Err(e);
                        }
                        self.s0s1.reserve_exact(1 + HANDSHAKE_SIZE);
                    }
                    if !fill(&mut self.s0s1, 1 + HANDSHAKE_SIZE, input) {
                        return Ok(false);
                    }
                    let mut s1 = [0u8; HANDSHAKE_SIZE];
                    s1.copy_from_slice(&self.s0s1[1..1 + HANDSHAKE_SIZE]);
                    self.s0s1 = Vec::new();
                    out.reserve(HANDSHAKE_SIZE);
                    out.put_slice(&self.c2_for(&s1));
                    self.state = ClientState::ReadS2 {
                        remaining: HANDSHAKE_SIZE,
                    };
                }
                ClientState::ReadS2 { remaining } => {
                    if !skip(remaining, input) {
                        return Ok(false);
                    }
                    self.state = ClientState::Done;
                }
            }
        }
    }

    /// Signed C2 if we sent a digest C1 and S1 carries a valid FMS digest; else echo S1.
    fn c2_for(&self, s1: &[u8; HANDSHAKE_SIZE]) -> [u8; HANDSHAKE_SIZE] {
        if self.schema.is_some() && s1[4..8] != [0, 0, 0, 0] {
            if let Some((_, s1_digest)) = find_digest(s1, FMS_KEY_TEXT) {
                return signed_response(&self.random, &fp_full_key(), &s1_digest);
            }
        }
        *s1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic, non-constant filler.
    fn random(seed: u8) -> [u8; RANDOM_SIZE] {
        let mut r = [0u8; RANDOM_SIZE];
        let mut x: u32 = 0x9E37_79B9 ^ u32::from(seed);
        for b in r.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = (x >> 24) as u8;
        }
        r
    }

    fn c0c1(c1: &[u8; HANDSHAKE_SIZE]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(RTMP_VERSION);
        b.put_slice(c1);
        b
    }

    fn simple_c1() -> [u8; HANDSHAKE_SIZE] {
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        c1[0..4].copy_from_slice(&[0, 0, 0x12, 0x34]); // time
        c1[8..].copy_from_slice(&random(7));
        c1
    }

    /// Splits the server's single S0+S1+S2 answer.
    fn split_answer(out: &[u8]) -> (u8, [u8; HANDSHAKE_SIZE], [u8; HANDSHAKE_SIZE]) {
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
        let mut s1 = [0u8; HANDSHAKE_SIZE];
        let mut s2 = [0u8; HANDSHAKE_SIZE];
        s1.copy_from_slice(&out[1..1 + HANDSHAKE_SIZE]);
        s2.copy_from_slice(&out[1 + HANDSHAKE_SIZE..]);
        (out[0], s1, s2)
    }

    #[test]
    fn full_keys_are_the_published_ones() {
        let fms = fms_full_key();
        assert_eq!(&fms[..36], b"Genuine Adobe Flash Media Server 001");
        assert_eq!(fms[36], 0xF0);
        assert_eq!(fms[67], 0xAE);
        let fp = fp_full_key();
        assert_eq!(&fp[..30], b"Genuine Adobe Flash Player 001");
        assert_eq!(&fp[30..], &fms[36..]);
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let expected = [
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
            0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
            0x64, 0xec, 0x38, 0x43,
        ];
        assert_eq!(mac, expected);
    }

    #[test]
    fn digest_offsets_follow_the_byte_sum_rule() {
        let mut p = [0u8; HANDSHAKE_SIZE];
        assert_eq!(DigestSchema::DigestFirst.digest_offset(&p), 12);
        assert_eq!(DigestSchema::KeyFirst.digest_offset(&p), 776);
        // 4 * 255 = 1020; 1020 % 728 = 292.
        p[8..12].copy_from_slice(&[255; 4]);
        p[772..776].copy_from_slice(&[255; 4]);
        assert_eq!(DigestSchema::DigestFirst.digest_offset(&p), 12 + 292);
        assert_eq!(DigestSchema::KeyFirst.digest_offset(&p), 776 + 292);
        // Largest possible offset: sum 727; the digest still fits in its block.
        p[772..776].copy_from_slice(&[255, 255, 217, 0]);
        assert_eq!(DigestSchema::KeyFirst.digest_offset(&p), 1503);
        p[8..12].copy_from_slice(&[255, 255, 217, 0]);
        assert_eq!(DigestSchema::DigestFirst.digest_offset(&p), 739);
        // Sum 728 wraps to 0.
        p[8..12].copy_from_slice(&[255, 255, 218, 0]);
        assert_eq!(DigestSchema::DigestFirst.digest_offset(&p), 12);
    }

    #[test]
    fn complex_c1_validates_in_its_own_schema() {
        for schema in DigestSchema::ALL {
            let c1 = make_complex_c1(&random(1), schema);
            assert_eq!(&c1[4..8], &CLIENT_VERSION);
            let (found, digest) = find_digest(&c1, FP_KEY_TEXT).expect("digest validates");
            assert_eq!(found, schema);
            let pos = schema.digest_offset(&c1);
            assert_eq!(&c1[pos..pos + DIGEST_SIZE], &digest);
            // Wrong key does not validate.
            assert!(find_digest(&c1, FMS_KEY_TEXT).is_none());
        }
    }

    #[test]
    fn server_answers_complex_c1_in_kind() {
        for schema in DigestSchema::ALL {
            let c1 = make_complex_c1(&random(2), schema);
            let c1_digest = find_digest(&c1, FP_KEY_TEXT).expect("valid").1;
            let mut server = ServerHandshake::new(random(3));
            let mut input = c0c1(&c1);
            let mut out = BytesMut::new();
            assert_eq!(server.feed(&mut input, &mut out), Ok(false));
            assert!(input.is_empty());
            assert_eq!(server.kind(), Some(HandshakeKind::Complex));

            let (s0, s1, s2) = split_answer(&out);
            assert_eq!(s0, 3);
            assert_eq!(&s1[4..8], &[0x0D, 0x0E, 0x0A, 0x0D]);
            let (s1_schema, _) = find_digest(&s1, FMS_KEY_TEXT).expect("S1 digest validates");
            assert_eq!(s1_schema, schema, "S1 signed with the client's schema");
            assert!(find_digest(&s1, FP_KEY_TEXT).is_none());

            let key = hmac_sha256(&fms_full_key(), &[&c1_digest]);
            let sig = hmac_sha256(&key, &[&s2[..HANDSHAKE_SIZE - DIGEST_SIZE]]);
            assert_eq!(&s2[HANDSHAKE_SIZE - DIGEST_SIZE..], &sig);
            assert_ne!(&s2[..], &c1[..]);
        }
    }

    #[test]
    fn corrupted_digest_falls_back_to_simple() {
        let mut c1 = make_complex_c1(&random(4), DigestSchema::DigestFirst);
        let pos = DigestSchema::DigestFirst.digest_offset(&c1);
        c1[pos + 5] ^= 0x01;
        let mut server = ServerHandshake::new(random(5));
        let mut out = BytesMut::new();
        assert_eq!(server.feed(&mut c0c1(&c1), &mut out), Ok(false));
        assert_eq!(server.kind(), Some(HandshakeKind::Simple));
        let (s0, s1, s2) = split_answer(&out);
        assert_eq!(s0, 3);
        assert_eq!(&s1[..8], &[0; 8]);
        assert_eq!(&s1[8..], &random(5)[..]);
        assert_eq!(s2, c1);
    }

    #[test]
    fn zero_version_is_simple_even_with_a_valid_digest() {
        let mut c1 = make_complex_c1(&random(6), DigestSchema::KeyFirst);
        c1[4..8].copy_from_slice(&[0; 4]);
        let mut server = ServerHandshake::new(random(5));
        let mut out = BytesMut::new();
        server.feed(&mut c0c1(&c1), &mut out).expect("ok");
        assert_eq!(server.kind(), Some(HandshakeKind::Simple));
        assert_eq!(split_answer(&out).2, c1);
    }

    #[test]
    fn plain_spec_c1_gets_echo() {
        let c1 = simple_c1();
        let mut server = ServerHandshake::new(random(8));
        let mut out = BytesMut::new();
        server.feed(&mut c0c1(&c1), &mut out).expect("ok");
        assert_eq!(server.kind(), Some(HandshakeKind::Simple));
        assert_eq!(split_answer(&out).2, c1);
    }

    #[test]
    fn wrong_c0_is_rejected_early_and_sticks() {
        for bad in [0u8, 6, 4, 0xFF] {
            let mut server = ServerHandshake::new(random(1));
            let mut input = BytesMut::from(&[bad][..]);
            let mut out = BytesMut::new();
            assert_eq!(
                server.feed(&mut input, &mut out),
                Err(HandshakeError::UnsupportedVersion(bad))
            );
            assert!(out.is_empty());
            input.put_slice(&[0u8; 2000]);
            assert_eq!(
                server.feed(&mut input, &mut out),
                Err(HandshakeError::UnsupportedVersion(bad))
            );
            assert!(out.is_empty());
            assert_eq!(server.kind(), None);
        }
    }

    #[test]
    fn byte_at_a_time_and_trailing_bytes_stay() {
        let c1 = make_complex_c1(&random(9), DigestSchema::KeyFirst);
        let mut stream = c0c1(&c1).to_vec();
        stream.extend_from_slice(&[0xAB; HANDSHAKE_SIZE]); // C2
        stream.extend_from_slice(&[0x03, 0x00, 0x00, 0x00, 0x11]); // first chunk bytes

        let mut server = ServerHandshake::new(random(10));
        let mut input = BytesMut::new();
        let mut out = BytesMut::new();
        let mut done_at = None;
        for (i, &b) in stream.iter().enumerate() {
            input.put_u8(b);
            let done = server.feed(&mut input, &mut out).expect("no error");
            if i < 1 + HANDSHAKE_SIZE - 1 {
                assert!(out.is_empty(), "nothing sent before C1 is complete");
            }
            if done && done_at.is_none() {
                done_at = Some(i);
            }
        }
        assert_eq!(done_at, Some(1 + 2 * HANDSHAKE_SIZE - 1));
        assert_eq!(&input[..], &[0x03, 0x00, 0x00, 0x00, 0x11]);
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(server.kind(), Some(HandshakeKind::Complex));
    }

    #[test]
    fn whole_stream_at_once_leaves_trailing_bytes() {
        let mut input = c0c1(&simple_c1());
        input.put_slice(&[0u8; HANDSHAKE_SIZE]);
        input.put_slice(b"tail");
        let mut server = ServerHandshake::new(random(1));
        let mut out = BytesMut::new();
        assert_eq!(server.feed(&mut input, &mut out), Ok(true));
        assert_eq!(&input[..], b"tail");
        // Further feeds are no-ops.
        assert_eq!(server.feed(&mut input, &mut out), Ok(true));
        assert_eq!(&input[..], b"tail");
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
    }

    /// Shuttles bytes between the two sides, `step` bytes at a time, until both are done.
    fn run_pair(mut client: ClientHandshake, step: usize) -> (ServerHandshake, BytesMut, BytesMut) {
        let mut server = ServerHandshake::new(random(20));
        let mut to_server = BytesMut::new();
        let mut to_client = BytesMut::new();
        let mut server_in = BytesMut::new();
        let mut client_in = BytesMut::new();
        client.start(&mut to_server);
        let (mut s_done, mut c_done) = (false, false);
        for _ in 0..100_000 {
            let n = step.min(to_server.len());
            server_in.put_slice(&to_server.split_to(n));
            s_done = server.feed(&mut server_in, &mut to_client).expect("server");
            let n = step.min(to_client.len());
            client_in.put_slice(&to_client.split_to(n));
            if !c_done {
                c_done = client.feed(&mut client_in, &mut to_server).expect("client");
                if c_done {
                    to_server.put_slice(b"after-c2"); // what the client sends next
                }
            }
            if s_done && c_done && to_server.is_empty() && to_client.is_empty() {
                break;
            }
        }
        assert!(s_done && c_done);
        (server, server_in, client_in)
    }

    #[test]
    fn client_and_server_complete_simple() {
        for step in [1, 7, 1000, 5000] {
            let (server, server_in, client_in) = run_pair(ClientHandshake::new(random(21)), step);
            assert_eq!(server.kind(), Some(HandshakeKind::Simple));
            assert_eq!(&server_in[..], b"after-c2");
            assert!(client_in.is_empty());
        }
    }

    #[test]
    fn client_and_server_complete_complex() {
        for schema in DigestSchema::ALL {
            let client = ClientHandshake::new_complex(random(22), schema);
            let (server, server_in, _) = run_pair(client, 333);
            assert_eq!(server.kind(), Some(HandshakeKind::Complex));
            assert_eq!(&server_in[..], b"after-c2");
        }
    }

    #[test]
    fn complex_client_signs_c2_with_s1_digest() {
        let mut client = ClientHandshake::new_complex(random(23), DigestSchema::DigestFirst);
        let mut c0c1 = BytesMut::new();
        client.start(&mut c0c1);
        let mut server = ServerHandshake::new(random(24));
        let mut answer = BytesMut::new();
        server.feed(&mut c0c1, &mut answer).expect("server");
        let (_, s1, _) = split_answer(&answer);
        let s1_digest = find_digest(&s1, FMS_KEY_TEXT).expect("valid S1").1;
        let mut c2 = BytesMut::new();
        assert_eq!(client.feed(&mut answer, &mut c2), Ok(true));
        assert_eq!(c2.len(), HANDSHAKE_SIZE);
        let key = hmac_sha256(&fp_full_key(), &[&s1_digest]);
        let sig = hmac_sha256(&key, &[&c2[..HANDSHAKE_SIZE - DIGEST_SIZE]]);
        assert_eq!(&c2[HANDSHAKE_SIZE - DIGEST_SIZE..], &sig);
    }

    #[test]
    fn simple_client_sends_c0c1_and_echoes_s1() {
        let mut client = ClientHandshake::new(random(30));
        let mut out = BytesMut::new();
        assert_eq!(
            client.feed(&mut BytesMut::new(), &mut out),
            Err(HandshakeError::NotStarted)
        );
        client.start(&mut out);
        client.start(&mut out); // idempotent
        assert_eq!(out.len(), 1 + HANDSHAKE_SIZE);
        assert_eq!(&out[..9], &[3, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[9..], &random(30)[..]);

        let mut s1 = [0u8; HANDSHAKE_SIZE];
        s1[8..].copy_from_slice(&random(31));
        let mut input = BytesMut::new();
        input.put_u8(3);
        input.put_slice(&s1);
        input.put_slice(&[0u8; 100]); // part of S2
        let mut c2 = BytesMut::new();
        assert_eq!(client.feed(&mut input, &mut c2), Ok(false));
        assert_eq!(&c2[..], &s1[..]);
        input.put_slice(&[0u8; HANDSHAKE_SIZE - 100]);
        input.put_slice(b"x");
        assert_eq!(client.feed(&mut input, &mut c2), Ok(true));
        assert_eq!(&input[..], b"x");
    }

    #[test]
    fn client_rejects_bad_s0() {
        let mut client = ClientHandshake::new(random(1));
        let mut out = BytesMut::new();
        client.start(&mut out);
        let mut input = BytesMut::from(&[6u8, 0, 0][..]);
        assert_eq!(
            client.feed(&mut input, &mut out),
            Err(HandshakeError::UnsupportedVersion(6))
        );
    }

    proptest! {
        #[test]
        fn server_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            step in 1usize..4000,
            force_v3 in any::<bool>(),
        ) {
            let mut data = data;
            if force_v3 && !data.is_empty() {
                data[0] = 3;
            }
            let mut server = ServerHandshake::new(random(40));
            let mut input = BytesMut::new();
            let mut out = BytesMut::new();
            let mut consumed = 0usize;
            for chunk in data.chunks(step) {
                input.put_slice(chunk);
                let before = input.len();
                let res = server.feed(&mut input, &mut out);
                consumed += before - input.len();
                if res.is_err() {
                    break;
                }
            }
            prop_assert!(consumed <= 1 + 2 * HANDSHAKE_SIZE);
            prop_assert!(out.is_empty() || out.len() == 1 + 2 * HANDSHAKE_SIZE);
            if force_v3 && data.len() > 2 * HANDSHAKE_SIZE {
                prop_assert_eq!(consumed, 1 + 2 * HANDSHAKE_SIZE);
                prop_assert_eq!(input.len(), data.len() - consumed);
            }
        }
    }
}
