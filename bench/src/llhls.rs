//! The low-latency HLS player (RFC 8216bis): a media playlist with parts, blocking
//! playlist reloads, and parts of fragmented MP4 whose video samples carry the bench marker.
//!
//! Sans-IO pieces, each tested on its own: [`LlPlaylist::parse`], [`plan`] (what a player at
//! a given part does with a playlist), [`video_track`] (from the init segment) and
//! [`FragmentScanner`] (the marker of each video sample of `moof` + `mdat` fed in pieces).
//! [`llhls_player`] puts them on the network.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::http::Url;
use crate::marker;
use crate::players::Client;
use crate::stats::Tracker;

/// A part as a media playlist lists it (`#EXT-X-PART`).
#[derive(Debug, Clone, PartialEq)]
pub struct LlPart {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
}

/// A segment of a media playlist: finished (with its own URI) or the one being written
/// (only parts so far).
#[derive(Debug, Clone, PartialEq)]
pub struct LlSegment {
    /// Its media sequence number.
    pub msn: u64,
    /// The `EXT-X-MAP` URI in effect for it.
    pub map: Option<String>,
    /// Its parts, if the playlist lists them (only segments near the live edge have them).
    pub parts: Vec<LlPart>,
    /// `None` for the segment being written.
    pub uri: Option<String>,
    /// `EXTINF` (0 for the segment being written).
    pub duration: f64,
}

/// A low-latency media playlist, as far as a player needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LlPlaylist {
    pub target: Duration,
    /// `EXT-X-PART-INF:PART-TARGET` in seconds: `None` in a playlist without parts.
    pub part_target: Option<f64>,
    /// `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`.
    pub can_block_reload: bool,
    pub media_sequence: u64,
    /// In order; the last may be the one being written.
    pub segments: Vec<LlSegment>,
    /// The part `EXT-X-PRELOAD-HINT:TYPE=PART` names, as (segment, part index): the next
    /// part of the segment being written.
    pub preload_hint: Option<(u64, usize)>,
    pub ended: bool,
}

/// The value of attribute `name` in an attribute list (`A=1,B="x,y",C=NO`), unquoted.
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            let next = quoted[end + 1..].trim_start_matches(',');
            (&quoted[..end], next)
        } else {
            match after.split_once(',') {
                Some((value, next)) => (value, next),
                None => (after, ""),
            }
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

impl LlPlaylist {
    pub fn parse(text: &str) -> anyhow::Result<LlPlaylist> {
        if !text.starts_with("#EXTM3U") {
            bail!("not an M3U8 playlist");
        }
        let mut p = LlPlaylist {
            target: Duration::from_secs(2),
            part_target: None,
            can_block_reload: false,
            media_sequence: 0,
            segments: Vec::new(),
            preload_hint: None,
            ended: false,
        };
        let mut next_msn: Option<u64> = None;
        let mut map: Option<String> = None;
        let mut parts: Vec<LlPart> = Vec::new();
        let mut duration = 0.0;
        let mut hinted = false;
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                let secs = v.trim().parse::<f64>().unwrap_or(2.0).max(0.1);
                p.target = Duration::from_secs_f64(secs);
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = v.trim().parse().context("EXT-X-MEDIA-SEQUENCE")?;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
                let target = attribute(v, "PART-TARGET").and_then(|t| t.parse().ok());
                p.part_target = Some(target.context("EXT-X-PART-INF without PART-TARGET")?);
            } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
                p.can_block_reload = attribute(v, "CAN-BLOCK-RELOAD") == Some("YES");
            } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
                let skipped: u64 = attribute(v, "SKIPPED-SEGMENTS")
                    .and_then(|n| n.parse().ok())
                    .context("EXT-X-SKIP without SKIPPED-SEGMENTS")?;
                *next_msn.get_or_insert(p.media_sequence) += skipped;
            } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
                map = attribute(v, "URI").map(str::to_owned);
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
                parts.push(LlPart {
                    uri: attribute(v, "URI")
                        .context("EXT-X-PART without URI")?
                        .to_owned(),
                    duration: attribute(v, "DURATION")
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(0.0),
                    independent: attribute(v, "INDEPENDENT") == Some("YES"),
                });
            } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
                hinted |= attribute(v, "TYPE") == Some("PART");
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                let secs = v.split(',').next().unwrap_or("").trim();
                duration = secs.parse().unwrap_or(0.0);
            } else if line == "#EXT-X-ENDLIST" {
                p.ended = true;
            } else if line.starts_with("#EXT-X-STREAM-INF") {
                bail!("master playlists are not supported: point --url-llhls at a media playlist");
            } else if !line.is_empty() && !line.starts_with('#') {
                let msn = next_msn.get_or_insert(p.media_sequence);
                p.segments.push(LlSegment {
                    msn: *msn,
                    map: map.clone(),
                    parts: std::mem::take(&mut parts),
                    uri: Some(line.to_owned()),
                    duration: std::mem::take(&mut duration),
                });
                *msn += 1;
            }
        }
        let open = next_msn.unwrap_or(p.media_sequence);
        if hinted {
            p.preload_hint = Some((open, parts.len()));
        }
        if !parts.is_empty() || hinted {
            p.segments.push(LlSegment {
                msn: open,
                map,
                parts,
                uri: None,
                duration: 0.0,
            });
        }
        Ok(p)
    }

    pub fn segment(&self, msn: u64) -> Option<&LlSegment> {
        // Segments are in order with consecutive numbers, but a delta update's skip may
        // leave the first listed one after MEDIA-SEQUENCE: search from the end.
        self.segments.iter().rev().find(|s| s.msn == msn)
    }

    /// The newest listed part: where a player joining at the live edge starts.
    pub fn newest_part(&self) -> Option<(u64, usize)> {
        let segment = self.segments.iter().rev().find(|s| !s.parts.is_empty())?;
        Some((segment.msn, segment.parts.len() - 1))
    }

    /// The number after the newest listed segment's.
    fn after_last(&self) -> u64 {
        self.segments
            .last()
            .map_or(self.media_sequence, |s| s.msn + 1)
    }
}

/// What a player that wants part `next` does with a playlist.
#[derive(Debug, PartialEq)]
pub enum Plan<'a> {
    /// Fetch this part, with the init segment that `map` names.
    Fetch {
        part: &'a LlPart,
        map: Option<&'a str>,
    },
    /// Not there yet: a blocking reload for it.
    Block,
    /// The segment ended before this part: part 0 of the next segment is next.
    NextSegment,
    /// The part is gone from the playlist (the player fell behind, or the playlist jumped
    /// ahead): go on at `to`, `missing` parts lost (an estimate for segments whose parts
    /// are not listed: their duration over the part target).
    Resume { to: (u64, usize), missing: u64 },
}

pub fn plan(playlist: &LlPlaylist, (msn, part): (u64, usize)) -> Plan<'_> {
    if let Some(segment) = playlist.segment(msn) {
        if let Some(found) = segment.parts.get(part) {
            return Plan::Fetch {
                part: found,
                map: segment.map.as_deref(),
            };
        }
        match segment.uri {
            // Being written: the part is to come.
            None => return Plan::Block,
            // Finished after the parts we have.
            Some(_) if !segment.parts.is_empty() => return Plan::NextSegment,
            // Finished, its parts no longer listed: too late for them.
            Some(_) => {}
        }
    } else if msn >= playlist.after_last() {
        return Plan::Block;
    }
    // Behind the playlist: resume at the first listed part after `msn`, or the preload hint.
    let to = playlist
        .segments
        .iter()
        .find(|s| s.msn > msn && !s.parts.is_empty())
        .map(|s| (s.msn, 0))
        .or(playlist.preload_hint)
        .unwrap_or((playlist.after_last(), 0));
    let part_target = playlist.part_target.unwrap_or(1.0).max(0.001);
    let estimate = |secs: f64| ((secs / part_target).round() as u64).max(1);
    let mut missing = 0;
    for skipped in msn..to.0 {
        let parts = match playlist.segment(skipped) {
            Some(s) if !s.parts.is_empty() => s.parts.len() as u64,
            Some(s) => estimate(s.duration),
            None => estimate(playlist.target.as_secs_f64()),
        };
        missing += if skipped == msn {
            parts.saturating_sub(part as u64)
        } else {
            parts
        };
    }
    Plan::Resume { to, missing }
}

/// The boxes directly inside `body`, as (type, body); stops at the first malformed one.
fn children(body: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let (kind, size, header) = box_header(body.get(at..)?)?;
        let end = match size {
            0 => body.len(),
            size => at.checked_add(usize::try_from(size).ok()?)?,
        };
        let inner = body.get(at + header..end)?;
        at = end;
        Some((kind, inner))
    })
}

fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(body).find(|(k, _)| k == kind).map(|(_, b)| b)
}

/// A box header: type, size (0: to the end) and header length.
fn box_header(bytes: &[u8]) -> Option<([u8; 4], u64, usize)> {
    let size = u32_at(bytes, 0)?;
    let kind: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
    let (size, header) = match size {
        1 => (u64_at(bytes, 8)?, 16),
        size => (u64::from(size), 8),
    };
    (size == 0 || size >= header as u64).then_some((kind, size, header))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The track ID of the first video track (`hdlr` `vide`) of an init segment.
pub fn video_track(init: &[u8]) -> Option<u32> {
    let moov = child(init, b"moov")?;
    children(moov)
        .filter(|(kind, _)| kind == b"trak")
        .find_map(|(_, trak)| {
            let hdlr = child(child(trak, b"mdia")?, b"hdlr")?;
            if hdlr.get(8..12)? != b"vide" {
                return None;
            }
            let tkhd = child(trak, b"tkhd")?;
            // Version 1 has 64-bit creation and modification times before the track ID.
            u32_at(tkhd, if *tkhd.first()? == 1 { 20 } else { 12 })
        })
}

/// The samples a `moof` (`bytes`, header included, at `moof_at` in the stream) places in
/// the stream, as (track, position, size), in position order.
fn moof_samples(bytes: &[u8], moof_at: u64) -> Option<Vec<(u32, u64, u64)>> {
    let (_, _, header) = box_header(bytes)?;
    let mut samples = Vec::new();
    // Without an explicit base, the first track fragment's data is based at the moof and
    // each next one's where the one before ended (ISO/IEC 14496-12 8.8.7.1).
    let mut previous_end = moof_at;
    for (_, traf) in children(bytes.get(header..)?).filter(|(kind, _)| kind == b"traf") {
        let tfhd = child(traf, b"tfhd")?;
        let flags = u32_at(tfhd, 0)? & 0x00FF_FFFF;
        let track = u32_at(tfhd, 4)?;
        let mut at = 8;
        let mut base = previous_end;
        if flags & 0x01 != 0 {
            base = u64_at(tfhd, at)?;
            at += 8;
        } else if flags & 0x02_0000 != 0 {
            base = moof_at; // default-base-is-moof
        }
        if flags & 0x02 != 0 {
            at += 4; // sample_description_index
        }
        if flags & 0x08 != 0 {
            at += 4; // default_sample_duration
        }
        let default_size = if flags & 0x10 != 0 {
            Some(u32_at(tfhd, at)?)
        } else {
            None
        };
        let mut data_at = base;
        for (_, trun) in children(traf).filter(|(kind, _)| kind == b"trun") {
            let flags = u32_at(trun, 0)? & 0x00FF_FFFF;
            let count = u32_at(trun, 4)?;
            let mut at = 8;
            if flags & 0x01 != 0 {
                let offset = i64::from(u32_at(trun, at)? as i32);
                data_at = base.checked_add_signed(offset)?;
                at += 4;
            }
            if flags & 0x04 != 0 {
                at += 4; // first_sample_flags
            }
            for _ in 0..count.min(1 << 20) {
                if flags & 0x100 != 0 {
                    at += 4; // duration
                }
                let size = if flags & 0x200 != 0 {
                    let size = u32_at(trun, at)?;
                    at += 4;
                    size
                } else {
                    default_size?
                };
                if flags & 0x400 != 0 {
                    at += 4; // flags
                }
                if flags & 0x800 != 0 {
                    at += 4; // composition time offset
                }
                samples.push((track, data_at, u64::from(size)));
                data_at += u64::from(size);
            }
        }
        previous_end = data_at;
    }
    samples.sort_by_key(|&(_, at, _)| at);
    Some(samples)
}

/// Finds the bench marker in each video sample of fragmented MP4 (`moof` + `mdat`, as
/// many as come) fed in arbitrary pieces, keeping only a `moof` at a time and the first
/// [`marker::SAMPLE_SEARCH_WINDOW`] bytes of the sample being read.
///
/// A box walk rather than a scan of `mdat` for the marker: it reads 96 bytes of each
/// sample instead of searching every byte, and counts the video frames that carry no
/// marker too. With the video track unknown (`None`), every sample is looked at and only
/// those with a marker count.
#[derive(Debug)]
pub struct FragmentScanner {
    video_track: Option<u32>,
    /// Bytes fed so far.
    pos: u64,
    state: ScanState,
    /// A box header being read, then a whole `moof`.
    held: Vec<u8>,
    /// Samples still to read: position, bytes to read, whether it is a video frame.
    wanted: VecDeque<(u64, u64, bool)>,
    capture: Vec<u8>,
    /// The marker (or none) of each video frame found so far, in order.
    found: Vec<Option<(u64, u64)>>,
    broken: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ScanState {
    Header,
    Moof {
        at: u64,
        end: u64,
    },
    /// Any other box (`mdat`, `styp`, ...), to `end` (`None`: to the end of the stream).
    Other {
        end: Option<u64>,
    },
}

/// Largest `moof` read.
const MAX_MOOF: u64 = 1 << 20;

impl FragmentScanner {
    pub fn new(video_track: Option<u32>) -> FragmentScanner {
        FragmentScanner {
            video_track,
            pos: 0,
            state: ScanState::Header,
            held: Vec::with_capacity(1024),
            wanted: VecDeque::new(),
            capture: Vec::with_capacity(marker::SAMPLE_SEARCH_WINDOW),
            found: Vec::new(),
            broken: None,
        }
    }

    /// Ready for another stream (a part), keeping the buffers.
    pub fn reset(&mut self, video_track: Option<u32>) {
        self.video_track = video_track;
        self.pos = 0;
        self.state = ScanState::Header;
        self.held.clear();
        self.wanted.clear();
        self.capture.clear();
        self.found.clear();
        self.broken = None;
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.broken.is_none() {
            match self.state {
                ScanState::Header => {
                    let need = if self.held.len() >= 8 && u32_at(&self.held, 0) == Some(1) {
                        16
                    } else {
                        8
                    };
                    let take = (need - self.held.len()).min(data.len());
                    self.held.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    self.pos += take as u64;
                    if self.held.len() < need || (need == 8 && u32_at(&self.held, 0) == Some(1)) {
                        continue;
                    }
                    let Some((kind, size, _)) = box_header(&self.held) else {
                        self.broken = Some("malformed box header");
                        return;
                    };
                    let at = self.pos - self.held.len() as u64;
                    if &kind == b"moof" {
                        if size == 0 || size > MAX_MOOF {
                            self.broken = Some("moof too large");
                            return;
                        }
                        self.state = ScanState::Moof { at, end: at + size };
                    } else {
                        self.held.clear();
                        let end = (size > 0).then(|| at + size);
                        self.state = ScanState::Other { end };
                        if end == Some(self.pos) {
                            self.state = ScanState::Header;
                        }
                    }
                }
                ScanState::Moof { at, end } => {
                    let take = ((end - self.pos) as usize).min(data.len());
                    self.held.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    self.pos += take as u64;
                    if self.pos < end {
                        continue;
                    }
                    let Some(samples) = moof_samples(&self.held, at) else {
                        self.broken = Some("malformed moof");
                        return;
                    };
                    for (track, at, size) in samples {
                        let video = self.video_track == Some(track);
                        if video || self.video_track.is_none() {
                            let len = size.min(marker::SAMPLE_SEARCH_WINDOW as u64);
                            self.wanted.push_back((at, len, video));
                        }
                    }
                    self.held.clear();
                    self.state = ScanState::Header;
                }
                ScanState::Other { end } => {
                    let take =
                        end.map_or(data.len(), |e| ((e - self.pos) as usize).min(data.len()));
                    self.read_samples(&data[..take]);
                    data = &data[take..];
                    self.pos += take as u64;
                    if end == Some(self.pos) {
                        self.state = ScanState::Header;
                    }
                }
            }
        }
    }

    /// `chunk`, at `self.pos` in the stream, holds (some of) the samples wanted.
    fn read_samples(&mut self, chunk: &[u8]) {
        let (from, to) = (self.pos, self.pos + chunk.len() as u64);
        while let Some(&(at, len, _)) = self.wanted.front() {
            let end = at + len;
            if at >= to {
                break;
            }
            let (a, b) = (at.max(from), end.min(to));
            if a < b {
                self.capture
                    .extend_from_slice(&chunk[(a - from) as usize..(b - from) as usize]);
            }
            if end > to {
                break;
            }
            self.sample_read();
        }
    }

    /// The sample at the front of `wanted` is read (as much as the stream had of it).
    fn sample_read(&mut self) {
        if let Some((_, _, video)) = self.wanted.pop_front() {
            let found = marker::find_sample(&self.capture);
            if video || found.is_some() {
                self.found.push(found);
            }
        }
        self.capture.clear();
    }

    /// The end of the stream: samples it did not hold are counted with what was read of
    /// them. Then the markers of its video frames, in order.
    pub fn finish(&mut self) -> anyhow::Result<std::vec::Drain<'_, Option<(u64, u64)>>> {
        if let Some(why) = self.broken {
            bail!("fMP4: {why}");
        }
        while !self.wanted.is_empty() {
            self.sample_read();
        }
        Ok(self.found.drain(..))
    }
}

/// `url` with `_HLS_msn`/`_HLS_part` added to its query.
fn blocking_reload(url: &Url, (msn, part): (u64, usize)) -> Url {
    let sep = if url.path.contains('?') { '&' } else { '?' };
    Url {
        path: format!("{}{sep}_HLS_msn={msn}&_HLS_part={part}", url.path),
        ..url.clone()
    }
}

/// GETs a playlist; `None` for a 503 (a blocking reload whose part did not come in time).
async fn get_playlist(
    client: &mut Client,
    url: &Url,
    t: &mut Tracker,
    text: &mut Vec<u8>,
) -> anyhow::Result<Option<LlPlaylist>> {
    text.clear();
    let status = client
        .get(url, t, &mut |d: &[u8]| text.extend_from_slice(d))
        .await
        .context("playlist")?;
    match status {
        200 => Ok(Some(LlPlaylist::parse(&String::from_utf8_lossy(text))?)),
        503 => Ok(None),
        _ => bail!("playlist: HTTP {status}"),
    }
}

/// One LL-HLS player, as a low-latency client plays: the playlist, then from the newest
/// listed part (or the preload hint) on, every part once and in order, each next one
/// waited for with a blocking reload (`_HLS_msn`/`_HLS_part`, part 0 of the next segment
/// once the playlist shows the segment ended). Each video frame of a part is counted and
/// timed by its marker: latency = the part's arrival (all of it read) - the frame's send
/// time. Each blocking reload's answer is reported to [`crate::stats::Shared::reload_answered`].
pub async fn llhls_player(url: &Url, t: &mut Tracker) -> anyhow::Result<()> {
    let mut client = Client::new();
    let mut text = Vec::with_capacity(4096);
    let mut playlist = get_playlist(&mut client, url, t, &mut text)
        .await?
        .ok_or_else(|| anyhow!("playlist: HTTP 503"))?;
    if playlist.part_target.is_none() {
        bail!("not a low-latency playlist (no EXT-X-PART-INF)");
    }
    if !playlist.can_block_reload {
        bail!("the server does not block playlist reloads (no CAN-BLOCK-RELOAD=YES)");
    }
    let mut next = playlist
        .newest_part()
        .or(playlist.preload_hint)
        .ok_or_else(|| anyhow!("no part listed and no preload hint"))?;
    // The init segment's URI and the video track it declares.
    let mut init: Option<(String, Option<u32>)> = None;
    let mut scanner = FragmentScanner::new(None);
    let mut idle_reloads = 0u32;
    loop {
        // Everything the playlist has from `next` on.
        let mut fetched = false;
        loop {
            match plan(&playlist, next) {
                Plan::Block => break,
                Plan::NextSegment => next = (next.0 + 1, 0),
                Plan::Resume { to, missing } => {
                    t.parts_missing += missing;
                    next = to;
                }
                Plan::Fetch { part, map } => {
                    let part_url = url.join(&part.uri)?;
                    if let Some(map) = map {
                        if init.as_ref().is_none_or(|(uri, _)| uri != map) {
                            let mut bytes = Vec::new();
                            let init_url = url.join(map)?;
                            let status = client
                                .get(&init_url, t, &mut |d: &[u8]| bytes.extend_from_slice(d))
                                .await
                                .context("init segment")?;
                            if status != 200 {
                                bail!("init segment {map}: HTTP {status}");
                            }
                            init = Some((map.to_owned(), video_track(&bytes)));
                        }
                    }
                    scanner.reset(init.as_ref().and_then(|(_, track)| *track));
                    let status = client
                        .get(&part_url, t, &mut |d: &[u8]| scanner.feed(d))
                        .await
                        .context("part")?;
                    let arrived = marker::now_us();
                    match status {
                        200 => {
                            let frames = scanner
                                .finish()
                                .with_context(|| format!("part {}", part_url.path))?;
                            for found in frames {
                                t.coded_frame_at(found, arrived);
                            }
                            t.parts += 1;
                        }
                        404 => t.parts_missing += 1,
                        _ => bail!("part {}: HTTP {status}", part_url.path),
                    }
                    next.1 += 1;
                    fetched = true;
                }
            }
        }
        if playlist.ended {
            return Ok(());
        }
        // A server that answers without the part (it should not): do not spin.
        if !fetched && idle_reloads > 0 {
            let pause = playlist.part_target.unwrap_or(0.2).clamp(0.01, 1.0) / 2.0;
            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
        }
        let reload = blocking_reload(url, next);
        let sent = marker::now_us();
        match get_playlist(&mut client, &reload, t, &mut text).await? {
            Some(answer) => {
                let arrived = marker::now_us();
                t.shared
                    .reload_answered((next.0, next.1 as u64), sent, arrived);
                playlist = answer;
                idle_reloads = if fetched { 0 } else { idle_reloads + 1 };
            }
            // Not in time: ask again.
            None => t.reload_timeouts += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What ferrolive sends: two finished segments (the first too old for parts), the open
    /// one with two parts, and the preload hint.
    const LIVE: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.999,CAN-SKIP-UNTIL=12
#EXT-X-PART-INF:PART-TARGET=0.333
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-MAP:URI=\"init0.mp4\"
#EXTINF:2.000,
100.m4s
#EXT-X-PART:DURATION=0.333,URI=\"101.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI=\"101.1.m4s\"
#EXT-X-PART:DURATION=0.334,URI=\"101.2.m4s\"
#EXTINF:1.000,
101.m4s
#EXT-X-PART:DURATION=0.333,URI=\"102.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI=\"102.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"102.2.m4s\"
";

    #[test]
    fn parses_a_low_latency_playlist() {
        let p = LlPlaylist::parse(LIVE).unwrap();
        assert_eq!(p.target, Duration::from_secs(2));
        assert_eq!(p.part_target, Some(0.333));
        assert!(p.can_block_reload);
        assert!(!p.ended);
        assert_eq!(p.media_sequence, 100);
        let msns: Vec<u64> = p.segments.iter().map(|s| s.msn).collect();
        assert_eq!(msns, [100, 101, 102]);
        assert_eq!(p.segments[0].parts, []);
        assert_eq!(p.segments[0].uri.as_deref(), Some("100.m4s"));
        assert_eq!(p.segments[1].parts.len(), 3);
        assert_eq!(p.segments[1].duration, 1.0);
        assert_eq!(
            p.segments[1].parts[0],
            LlPart {
                uri: "101.0.m4s".into(),
                duration: 0.333,
                independent: true
            }
        );
        assert!(!p.segments[1].parts[1].independent);
        assert_eq!(p.segments[2].uri, None);
        assert_eq!(p.segments[2].parts.len(), 2);
        assert_eq!(p.segments[2].map.as_deref(), Some("init0.mp4"));
        assert_eq!(p.preload_hint, Some((102, 2)));
        assert_eq!(p.newest_part(), Some((102, 1)));
    }

    #[test]
    fn a_delta_update_and_an_ended_stream() {
        let delta = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
            #EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n#EXT-X-MAP:URI=\"init1.mp4\"\n\
            #EXT-X-PART:DURATION=0.5,URI=\"10.0.m4s\"\n#EXTINF:0.5,\n10.m4s\n#EXT-X-ENDLIST\n";
        let p = LlPlaylist::parse(delta).unwrap();
        assert!(!p.can_block_reload);
        assert!(p.ended);
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.segments[0].msn, 10);
        assert_eq!(p.preload_hint, None);
        assert_eq!(p.newest_part(), Some((10, 0)));
        assert!(LlPlaylist::parse("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n").is_err());
        assert!(LlPlaylist::parse("nope").is_err());
        assert!(LlPlaylist::parse("#EXTM3U\n#EXT-X-PART:DURATION=1\n").is_err());
    }

    #[test]
    fn attribute_lists_with_quoted_commas() {
        let list = "A=1,URI=\"x,y.m4s\",INDEPENDENT=YES";
        assert_eq!(attribute(list, "A"), Some("1"));
        assert_eq!(attribute(list, "URI"), Some("x,y.m4s"));
        assert_eq!(attribute(list, "INDEPENDENT"), Some("YES"));
        assert_eq!(attribute(list, "B"), None);
    }

    #[test]
    fn the_plan_follows_parts_segments_and_the_edge() {
        let p = LlPlaylist::parse(LIVE).unwrap();
        let uri = |plan: Plan<'_>| match plan {
            Plan::Fetch { part, map } => (part.uri.clone(), map.map(str::to_owned)),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            uri(plan(&p, (101, 2))),
            ("101.2.m4s".to_owned(), Some("init0.mp4".to_owned()))
        );
        assert_eq!(uri(plan(&p, (102, 1))).0, "102.1.m4s");
        // After the last part of a finished segment: on to the next segment.
        assert_eq!(plan(&p, (101, 3)), Plan::NextSegment);
        // The open segment's next part, and the segment after it: wait for them.
        assert_eq!(plan(&p, (102, 2)), Plan::Block);
        assert_eq!(plan(&p, (103, 0)), Plan::Block);
        // Behind: segment 100's parts are no longer listed (2 s of 0.333 s parts: 6).
        assert_eq!(
            plan(&p, (100, 1)),
            Plan::Resume {
                to: (101, 0),
                missing: 5
            }
        );
        // Gone from the playlist altogether: estimated from the target duration.
        assert_eq!(
            plan(&p, (98, 0)),
            Plan::Resume {
                to: (101, 0),
                missing: 6 + 6 + 6
            }
        );
    }

    /// A minimal fMP4: an init segment with an audio track (1) and a video track (2), and
    /// fragments (moof + mdat) whose video samples are marked frames.
    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut b = (flags | u32::from(version) << 24).to_be_bytes().to_vec();
        b.extend_from_slice(body);
        bx(kind, &b)
    }

    fn trak(id: u32, handler: &[u8; 4], tkhd_version: u8) -> Vec<u8> {
        let mut tkhd = vec![0; if tkhd_version == 1 { 16 } else { 8 }];
        tkhd.extend_from_slice(&id.to_be_bytes());
        tkhd.extend_from_slice(&[0; 60]);
        let mut hdlr = vec![0; 4];
        hdlr.extend_from_slice(handler);
        hdlr.extend_from_slice(&[0; 13]);
        let mdia = bx(b"mdia", &full(b"hdlr", 0, 0, &hdlr));
        bx(
            b"trak",
            &[full(b"tkhd", tkhd_version, 3, &tkhd), mdia].concat(),
        )
    }

    fn init(tkhd_version: u8) -> Vec<u8> {
        let moov = [
            full(b"mvhd", 0, 0, &[0; 96]),
            trak(1, b"soun", tkhd_version),
            trak(2, b"vide", tkhd_version),
        ]
        .concat();
        [bx(b"ftyp", b"iso6\0\0\0\0"), bx(b"moov", &moov)].concat()
    }

    /// One fragment: video samples (marked from `first_seq`) and audio samples interleaved
    /// as two runs, data offsets from the moof (default-base-is-moof) as ferrolive writes.
    fn fragment(first_seq: u64, video: usize, audio: usize) -> Vec<u8> {
        let v: Vec<Vec<u8>> = (0..video)
            .map(|i| {
                let seq = first_seq + i as u64;
                let p = marker::marked_video(
                    &[0x27, 1, 0, 0, 0],
                    seq,
                    seq * 1000,
                    4,
                    &[0, 0, 0, 3, 0x41, 1, 2],
                );
                p[5..].to_vec()
            })
            .collect();
        let a: Vec<Vec<u8>> = (0..audio).map(|i| vec![0x21; 10 + i]).collect();
        let traf = |track: u32, samples: &[Vec<u8>], offset: u32| {
            let mut trun = (samples.len() as u32).to_be_bytes().to_vec();
            trun.extend_from_slice(&offset.to_be_bytes());
            for s in samples {
                trun.extend_from_slice(&33u32.to_be_bytes());
                trun.extend_from_slice(&(s.len() as u32).to_be_bytes());
                trun.extend_from_slice(&0u32.to_be_bytes());
            }
            bx(
                b"traf",
                &[
                    full(b"tfhd", 0, 0x02_0000, &track.to_be_bytes()),
                    full(b"tfdt", 1, 0, &[0; 8]),
                    full(b"trun", 0, 0x301 | 0x400, &trun),
                ]
                .concat(),
            )
        };
        let moof_len = |o1: u32, o2: u32| {
            bx(
                b"moof",
                &[
                    full(b"mfhd", 0, 0, &[0, 0, 0, 1]),
                    traf(2, &v, o1),
                    traf(1, &a, o2),
                ]
                .concat(),
            )
            .len() as u32
        };
        let len = moof_len(0, 0);
        let video_bytes: u32 = v.iter().map(|s| s.len() as u32).sum();
        let moof = bx(
            b"moof",
            &[
                full(b"mfhd", 0, 0, &[0, 0, 0, 1]),
                traf(2, &v, len + 8),
                traf(1, &a, len + 8 + video_bytes),
            ]
            .concat(),
        );
        let mdat = bx(b"mdat", &[v.concat(), a.concat()].concat());
        [moof, mdat].concat()
    }

    #[test]
    fn the_video_track_of_an_init_segment() {
        assert_eq!(video_track(&init(0)), Some(2));
        assert_eq!(video_track(&init(1)), Some(2));
        assert_eq!(video_track(&bx(b"moov", &trak(1, b"soun", 0))), None);
        assert_eq!(video_track(b"junk"), None);
    }

    #[test]
    fn markers_of_video_samples_in_pieces() {
        // A part of two fragments, after an styp.
        let part = [
            bx(b"styp", b"msdh\0\0\0\0"),
            fragment(40, 3, 4),
            fragment(43, 2, 2),
        ]
        .concat();
        let want: Vec<Option<(u64, u64)>> = (40..45).map(|s| Some((s, s * 1000))).collect();
        for piece in [1, 2, 7, 100, part.len()] {
            for track in [Some(2), None] {
                let mut scanner = FragmentScanner::new(track);
                for chunk in part.chunks(piece) {
                    scanner.feed(chunk);
                }
                let got: Vec<_> = scanner.finish().unwrap().collect();
                assert_eq!(got, want, "pieces of {piece}, track {track:?}");
            }
        }
        // Reused: a video sample without the marker still counts as a frame.
        let mut scanner = FragmentScanner::new(Some(1));
        scanner.feed(&part);
        assert_eq!(scanner.finish().unwrap().collect::<Vec<_>>(), [None; 6]);
        scanner.reset(Some(2));
        scanner.feed(&fragment(7, 1, 0));
        assert_eq!(
            scanner.finish().unwrap().collect::<Vec<_>>(),
            [Some((7, 7000))]
        );
    }

    #[test]
    fn a_cut_or_broken_fragment() {
        let part = fragment(1, 3, 1);
        // Cut 20 bytes into the second video sample (the samples: 3 video frames of 51
        // bytes, one audio frame of 10): the first is whole, the others are frames whose
        // marker could not be read.
        let sample = 4 + marker::SEI_NAL_LEN + 7;
        let cut = part.len() - 10 - 2 * sample + 20;
        let mut scanner = FragmentScanner::new(Some(2));
        scanner.feed(&part[..cut]);
        let got: Vec<_> = scanner.finish().unwrap().collect();
        assert_eq!(got, [Some((1, 1000)), None, None]);
        let mut scanner = FragmentScanner::new(Some(2));
        scanner.feed(&[0, 0, 0, 4, b'm', b'o', b'o', b'f']);
        assert!(scanner.finish().is_err());
    }

    /// The parts ferrolive's own CMAF packager writes of the bench's synthetic stream: every
    /// video frame is found, in order, with its marker.
    #[test]
    fn markers_of_the_parts_ferrolive_writes() {
        use crate::source::{Kind, Source, Synthetic};
        use media::cmaf::{CmafConfig, CmafPackager};
        use media::frame::{Frame, MediaKind, SegmentMark};

        let mut source = Source::Synthetic(Synthetic::new(2700, 30.0, 1.0).unwrap());
        let mut packager = CmafPackager::new(CmafConfig::default());
        for (kind, payload) in source.headers() {
            packager.push(&Frame::new(kind, 0, payload));
        }
        let mut seq = 0u64;
        let mut segment = 0;
        while seq < 30 * 5 {
            let item = source.next_item();
            let frame = match item.kind {
                Kind::Video {
                    header5,
                    nal_length_size,
                    rest,
                } => {
                    let payload =
                        marker::marked_video(&header5, seq, seq + 7, nal_length_size, &rest);
                    seq += 1;
                    let mut frame =
                        Frame::new(MediaKind::Video, u64::from(item.ts), payload.into());
                    if frame.key {
                        frame.segment = Some(SegmentMark {
                            sequence: segment,
                            discontinuity: 0,
                            timestamp: u64::from(item.ts),
                            target_duration: 1,
                            program_date_ms: 0,
                        });
                        segment += 1;
                    }
                    frame
                }
                Kind::Raw { kind, payload } => Frame::new(kind, u64::from(item.ts), payload),
            };
            packager.push(&frame);
        }
        let (_, init) = packager.init().unwrap();
        let track = video_track(&init);
        assert!(track.is_some());
        let mut scanner = FragmentScanner::new(track);
        let mut found = Vec::new();
        let mut parts = 0;
        for segment in packager.segments() {
            for part in &segment.parts {
                scanner.reset(track);
                for piece in part.data.chunks(1000) {
                    scanner.feed(piece);
                }
                found.extend(scanner.finish().unwrap());
                parts += 1;
            }
        }
        // Four whole segments of one second, each of four parts: a part ends at the first
        // frame 85% of 333 ms after it began (300, 600, 900 ms), the last at the next mark.
        assert_eq!(parts, 4 * 4);
        let want: Vec<_> = (0..4 * 30).map(|s| Some((s, s + 7))).collect();
        assert_eq!(found, want);
    }

    #[test]
    fn blocking_reload_urls() {
        let u = Url::parse("http://h:1/live/r/index.m3u8").unwrap();
        assert_eq!(
            blocking_reload(&u, (5, 2)).path,
            "/live/r/index.m3u8?_HLS_msn=5&_HLS_part=2"
        );
        let q = Url::parse("http://h:1/live/r/index.m3u8?token=x").unwrap();
        assert_eq!(
            blocking_reload(&q, (5, 0)).path,
            "/live/r/index.m3u8?token=x&_HLS_msn=5&_HLS_part=0"
        );
        assert_eq!(u.join("5.2.m4s").unwrap().path, "/live/r/5.2.m4s");
    }
}
