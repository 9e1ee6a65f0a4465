//! Reading back what a recording needs to be listed: box headers to walk a file, the
//! tracks in its `moov`, and how far a `moof` reaches in time. Never panics on malformed
//! input; what does not parse is `None`.

/// A box header (ISO/IEC 14496-12 4.2): its type, its whole size (header included) and
/// the header's length. `None` when `bytes` is too short or the size is impossible; a
/// size of 0 ("to the end of the file") is not something this reader follows.
pub fn box_header(bytes: &[u8]) -> Option<([u8; 4], u64, usize)> {
    let size = u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?);
    let kind: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
    let (size, header) = match size {
        1 => (u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?), 16),
        size => (u64::from(size), 8),
    };
    (size >= header as u64).then_some((kind, size, header))
}

/// Longest header [`box_header`] may need.
pub const BOX_HEADER_MAX: usize = 16;

/// The boxes directly inside `body`, as (type, body).
fn children(body: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (kind, size, header) = box_header(body.get(at..)?)?;
        let end = at.checked_add(usize::try_from(size).ok()?)?;
        let inner = body.get(at + header..end)?;
        at = end;
        Some((kind, inner))
    })
}

fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(body).find(|(k, _)| k == kind).map(|(_, b)| b)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// A track as its `trak` declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TrackInfo {
    id: u32,
    timescale: u32,
    /// The sample entry's type (`avc1`, `mp4a`, ...).
    entry: [u8; 4],
}

/// The tracks of a movie, from its `moov`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movie {
    tracks: Vec<TrackInfo>,
}

impl Movie {
    /// From the body of a `moov` box.
    pub fn parse(moov: &[u8]) -> Option<Movie> {
        let tracks = children(moov)
            .filter(|(kind, _)| kind == b"trak")
            .filter_map(|(_, trak)| {
                let tkhd = child(trak, b"tkhd")?;
                // version 1 has 64-bit times before the track ID.
                let id = u32_at(tkhd, if tkhd.first()? == &1 { 20 } else { 12 })?;
                let mdia = child(trak, b"mdia")?;
                let mdhd = child(mdia, b"mdhd")?;
                let timescale = u32_at(mdhd, if mdhd.first()? == &1 { 20 } else { 12 })?;
                let stbl = child(child(mdia, b"minf")?, b"stbl")?;
                // stsd: version/flags, entry count, then the first entry's header.
                let stsd = child(stbl, b"stsd")?;
                let (entry, _, _) = box_header(stsd.get(8..)?)?;
                Some(TrackInfo {
                    id,
                    timescale,
                    entry,
                })
            })
            .collect::<Vec<_>>();
        (!tracks.is_empty()).then_some(Movie { tracks })
    }

    /// Short codec names of the tracks (`h264`, `h265`, `av1`, `vp9`, `aac`, `opus`), in
    /// track order.
    pub fn codecs(&self) -> Vec<&'static str> {
        self.tracks
            .iter()
            .map(|t| match &t.entry {
                b"avc1" | b"avc3" => "h264",
                b"hvc1" | b"hev1" => "h265",
                b"av01" => "av1",
                b"vp09" => "vp9",
                b"mp4a" => "aac",
                b"Opus" => "opus",
                _ => "other",
            })
            .collect()
    }

    /// Where the body of a `moof` ends in time, in ms: the latest end of a track's run
    /// (its `tfdt` plus the durations in its `trun`).
    pub fn fragment_end_ms(&self, moof: &[u8]) -> Option<u64> {
        children(moof)
            .filter(|(kind, _)| kind == b"traf")
            .filter_map(|(_, traf)| {
                let tfhd = child(traf, b"tfhd")?;
                let id = u32_at(tfhd, 4)?;
                let track = self.tracks.iter().find(|t| t.id == id)?;
                let tfdt = child(traf, b"tfdt")?;
                let start = match tfdt.first()? {
                    1 => u64_at(tfdt, 4)?,
                    _ => u64::from(u32_at(tfdt, 4)?),
                };
                let duration = run_duration(child(traf, b"trun")?, tfhd)?;
                let end = u128::from(start) + u128::from(duration);
                u64::try_from(end * 1000 / u128::from(track.timescale.max(1))).ok()
            })
            .max()
    }
}

/// The sum of a `trun`'s sample durations (each sample's own, or the `tfhd` default).
fn run_duration(trun: &[u8], tfhd: &[u8]) -> Option<u64> {
    let flags = u32_at(trun, 0)? & 0x00FF_FFFF;
    let count = u32_at(trun, 4)?;
    let mut at = 8;
    if flags & 0x01 != 0 {
        at += 4; // data_offset
    }
    if flags & 0x04 != 0 {
        at += 4; // first_sample_flags
    }
    let per_sample = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count()
        * 4;
    if flags & 0x100 == 0 {
        return Some(u64::from(count) * u64::from(default_duration(tfhd)?));
    }
    let mut total = 0u64;
    for i in 0..count as usize {
        total += u64::from(u32_at(trun, at + i.checked_mul(per_sample)?)?);
    }
    Some(total)
}

/// `default_sample_duration` of a `tfhd`, when it carries one.
fn default_duration(tfhd: &[u8]) -> Option<u32> {
    let flags = u32_at(tfhd, 0)? & 0x00FF_FFFF;
    if flags & 0x08 == 0 {
        return None;
    }
    let mut at = 8; // version/flags, track_ID
    if flags & 0x01 != 0 {
        at += 8; // base_data_offset
    }
    if flags & 0x02 != 0 {
        at += 4; // sample_description_index
    }
    u32_at(tfhd, at)
}
