//! A checker for low-latency HLS media playlists: the rules of RFC 8216bis a server must
//! keep (tags, part and segment durations, parts near the live edge, preload hint, delta
//! updates, program dates), so that the end-to-end tests can check every playlist they
//! read, on origins and edges. It knows ferrolive's URIs (`{seq}.m4s`, `{seq}.{part}.m4s`)
//! only to check that parts belong to the segment they are listed with.

use std::collections::BTreeMap;

/// A part as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPart {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
}

/// A segment as listed: its parts (when near the live edge) and, unless it is the open
/// one at the end, its EXTINF and URI.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListedSegment {
    pub sequence: u64,
    pub parts: Vec<ListedPart>,
    /// `None` for the segment being written (only parts so far).
    pub duration: Option<f64>,
    pub uri: Option<String>,
    pub map: String,
    /// EXT-X-PROGRAM-DATE-TIME as milliseconds since the epoch.
    pub program_date_ms: Option<i64>,
    pub discontinuity: bool,
}

/// What the checker read from a playlist it found valid.
#[derive(Debug, Clone, PartialEq)]
pub struct LlPlaylist {
    pub target_duration: u64,
    pub part_target: f64,
    pub part_hold_back: f64,
    pub can_skip_until: f64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub skipped: u64,
    pub segments: Vec<ListedSegment>,
    /// The preload hint's URI.
    pub preload_hint: Option<String>,
    pub ended: bool,
}

impl LlPlaylist {
    /// The last part listed, as (segment, part index).
    pub fn last_part(&self) -> Option<(u64, usize)> {
        let segment = self.segments.iter().rev().find(|s| !s.parts.is_empty())?;
        Some((segment.sequence, segment.parts.len() - 1))
    }

    /// The part listed after part `part` of segment `sequence`: the segment's next, or once
    /// it is finished, the next segment's first.
    pub fn part_after(&self, sequence: u64, part: usize) -> Option<(u64, usize)> {
        let segment = |n: u64| self.segments.iter().find(|s| s.sequence == n);
        let current = segment(sequence)?;
        if current.parts.len() > part + 1 {
            return Some((sequence, part + 1));
        }
        let next = segment(sequence + 1).filter(|_| current.uri.is_some())?;
        (!next.parts.is_empty()).then_some((sequence + 1, 0))
    }
}

fn attributes(list: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = list;
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.insert(name.to_owned(), value.to_owned());
        rest = next.trim_start_matches(',');
    }
    out
}

/// `2026-12-07T05:52:44.123Z` as milliseconds since the epoch (UTC only, as we write it).
fn parse_date(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|n| n.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|n| n.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from the civil date (the inverse of the usual era computation).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60 + s) * 1000) + ms.parse::<i64>().ok()?)
}

/// Check `text` against the LL-HLS rules; the reason it breaks one, or what it lists.
pub fn check_ll_playlist(text: &str) -> Result<LlPlaylist, String> {
    let mut lines = text.lines();
    if lines.next() != Some("#EXTM3U") {
        return Err("does not begin with #EXTM3U".into());
    }
    let mut version = 0;
    let mut target = None;
    let mut part_inf = None;
    let mut control = None;
    let mut media_sequence = None;
    let mut discontinuity_sequence = 0;
    let mut skipped = 0;
    let mut segments: Vec<ListedSegment> = Vec::new();
    let mut pending = ListedSegment::default();
    let mut map: Option<String> = None;
    let mut extinf: Option<f64> = None;
    let mut preload_hint = None;
    let mut ended = false;
    let mut seen_media = false;
    for line in lines {
        let (tag, value) = line.split_once(':').unwrap_or((line, ""));
        match tag {
            "#EXT-X-VERSION" => version = value.parse().map_err(|_| "bad VERSION")?,
            "#EXT-X-TARGETDURATION" => target = value.parse::<u64>().ok(),
            "#EXT-X-MEDIA-SEQUENCE" => media_sequence = value.parse::<u64>().ok(),
            "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                discontinuity_sequence = value.parse().map_err(|_| "bad DISCONTINUITY-SEQUENCE")?
            }
            "#EXT-X-PART-INF" => part_inf = attributes(value).get("PART-TARGET").cloned(),
            "#EXT-X-SERVER-CONTROL" => control = Some(attributes(value)),
            "#EXT-X-SKIP" => {
                if seen_media {
                    return Err("EXT-X-SKIP after a segment".into());
                }
                skipped = attributes(value)
                    .get("SKIPPED-SEGMENTS")
                    .and_then(|n| n.parse().ok())
                    .ok_or("EXT-X-SKIP without SKIPPED-SEGMENTS")?;
            }
            "#EXT-X-MAP" => {
                map = Some(
                    attributes(value)
                        .get("URI")
                        .cloned()
                        .ok_or("MAP without URI")?,
                )
            }
            "#EXT-X-DISCONTINUITY" => pending.discontinuity = true,
            "#EXT-X-PROGRAM-DATE-TIME" => {
                pending.program_date_ms =
                    Some(parse_date(value).ok_or_else(|| format!("bad date {value}"))?)
            }
            "#EXT-X-PART" => {
                seen_media = true;
                let a = attributes(value);
                pending.parts.push(ListedPart {
                    uri: a.get("URI").cloned().ok_or("PART without URI")?,
                    duration: a
                        .get("DURATION")
                        .and_then(|d| d.parse().ok())
                        .ok_or("PART without DURATION")?,
                    independent: a.get("INDEPENDENT").is_some_and(|v| v == "YES"),
                });
            }
            "#EXTINF" => {
                let d = value.trim_end_matches(',').split(',').next().unwrap_or("");
                extinf = Some(d.parse().map_err(|_| format!("bad EXTINF {value}"))?);
            }
            "#EXT-X-PRELOAD-HINT" => {
                let a = attributes(value);
                if a.get("TYPE").map(String::as_str) != Some("PART") {
                    return Err(format!("preload hint not for a part: {line}"));
                }
                preload_hint = a.get("URI").cloned();
            }
            "#EXT-X-ENDLIST" => ended = true,
            _ if line.starts_with('#') || line.is_empty() => {}
            uri => {
                seen_media = true;
                let duration = extinf
                    .take()
                    .ok_or_else(|| format!("{uri} without EXTINF"))?;
                pending.duration = Some(duration);
                pending.uri = Some(uri.to_owned());
                pending.map = map.clone().ok_or_else(|| format!("{uri} without a MAP"))?;
                segments.push(std::mem::take(&mut pending));
            }
        }
    }
    if !pending.parts.is_empty() {
        pending.map = map.clone().ok_or("open segment without a MAP")?;
        segments.push(pending);
    }
    if version < 9 {
        return Err(format!(
            "EXT-X-VERSION {version}: LL-HLS with EXT-X-SKIP needs 9"
        ));
    }
    let target = target.ok_or("no EXT-X-TARGETDURATION")?;
    let part_target: f64 = part_inf
        .and_then(|p| p.parse().ok())
        .ok_or("no EXT-X-PART-INF with PART-TARGET")?;
    let control = control.ok_or("no EXT-X-SERVER-CONTROL")?;
    if control.get("CAN-BLOCK-RELOAD").map(String::as_str) != Some("YES") {
        return Err("no CAN-BLOCK-RELOAD=YES".into());
    }
    let number = |name: &str| -> Result<f64, String> {
        control
            .get(name)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("no {name} in EXT-X-SERVER-CONTROL"))
    };
    let part_hold_back = number("PART-HOLD-BACK")?;
    if part_hold_back + 1e-6 < 3.0 * part_target {
        return Err(format!(
            "PART-HOLD-BACK {part_hold_back} under three part targets"
        ));
    }
    let can_skip_until = number("CAN-SKIP-UNTIL")?;
    if can_skip_until < 6.0 * target as f64 {
        return Err(format!(
            "CAN-SKIP-UNTIL {can_skip_until} under six target durations"
        ));
    }
    let media_sequence = media_sequence.ok_or("no EXT-X-MEDIA-SEQUENCE")?;
    // Numbers: consecutive from the media sequence (after what was skipped).
    for (i, segment) in segments.iter_mut().enumerate() {
        segment.sequence = media_sequence + skipped + i as u64;
    }
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        let seq = segment.sequence;
        if let Some(uri) = &segment.uri {
            if uri != &format!("{seq}.m4s") {
                return Err(format!("segment {seq} listed as {uri}"));
            }
        } else if i != last {
            return Err(format!("segment {seq} has parts but no EXTINF"));
        }
        if let Some(d) = segment.duration {
            if (d + 0.5).floor() as u64 > target {
                return Err(format!(
                    "segment {seq} lasts {d} s, over the target {target}"
                ));
            }
        }
        for (p, part) in segment.parts.iter().enumerate() {
            if part.uri != format!("{seq}.{p}.m4s") {
                return Err(format!("part {p} of segment {seq} listed as {}", part.uri));
            }
            if part.duration > part_target + 1e-6 {
                return Err(format!(
                    "part {} lasts {} s, over the part target",
                    part.uri, part.duration
                ));
            }
            // Only a segment's last part (or one starting with a keyframe) may be short.
            let last_of_segment = p + 1 == segment.parts.len() && segment.uri.is_some();
            if !last_of_segment && !part.independent && part.duration < 0.85 * part_target - 1e-3 {
                return Err(format!(
                    "part {} lasts {} s, under 85% of the part target",
                    part.uri, part.duration
                ));
            }
        }
        if let (Some(d), false) = (segment.duration, segment.parts.is_empty()) {
            let sum: f64 = segment.parts.iter().map(|p| p.duration).sum();
            if (sum - d).abs() > 0.002 * segment.parts.len() as f64 + 0.001 {
                return Err(format!(
                    "segment {seq}: parts sum to {sum} s, EXTINF says {d}"
                ));
            }
        }
        if segment.program_date_ms.is_none() {
            return Err(format!("segment {seq} without EXT-X-PROGRAM-DATE-TIME"));
        }
    }
    // Dates advance with the durations, but across a discontinuity.
    for w in segments.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let (Some(da), Some(db), Some(d)) = (a.program_date_ms, b.program_date_ms, a.duration)
        else {
            continue;
        };
        if !b.discontinuity && (db - da - (d * 1000.0).round() as i64).abs() > 2 {
            return Err(format!(
                "segment {} is dated {} ms after segment {} of {d} s",
                b.sequence,
                db - da,
                a.sequence
            ));
        }
    }
    if !ended {
        // Parts for every segment that ends within three target durations of the end.
        let mut from_end = 0.0;
        for segment in segments.iter().rev() {
            let length = segment
                .duration
                .unwrap_or_else(|| segment.parts.iter().map(|p| p.duration).sum());
            if from_end < 3.0 * target as f64 - 1e-6 && segment.parts.is_empty() {
                return Err(format!(
                    "segment {} ends {from_end} s from the end but lists no parts",
                    segment.sequence
                ));
            }
            from_end += length;
        }
        let hint = preload_hint
            .as_deref()
            .ok_or("live, but no EXT-X-PRELOAD-HINT")?;
        let expected = match segments.last() {
            Some(s) if s.uri.is_none() => format!("{}.{}.m4s", s.sequence, s.parts.len()),
            Some(s) => format!("{}.0.m4s", s.sequence + 1),
            None => return Err("live, but nothing listed".into()),
        };
        if hint != expected {
            return Err(format!("preload hint {hint}, the next part is {expected}"));
        }
    }
    Ok(LlPlaylist {
        target_duration: target,
        part_target,
        part_hold_back,
        can_skip_until,
        media_sequence,
        discontinuity_sequence,
        skipped,
        segments,
        preload_hint,
        ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.999,CAN-SKIP-UNTIL=6\n\
        #EXT-X-PART-INF:PART-TARGET=0.333\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
        #EXT-X-MAP:URI=\"init0.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-12-07T05:52:44.000Z\n\
        #EXT-X-PART:DURATION=0.333,URI=\"7.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=0.333,URI=\"7.1.m4s\"\n#EXT-X-PART:DURATION=0.333,URI=\"7.2.m4s\"\n\
        #EXTINF:0.999,\n7.m4s\n#EXT-X-PROGRAM-DATE-TIME:2026-12-07T05:52:44.999Z\n\
        #EXT-X-PART:DURATION=0.320,URI=\"8.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"8.1.m4s\"\n";

    #[test]
    fn a_good_playlist_passes_and_each_broken_rule_is_named() {
        let p = check_ll_playlist(GOOD).unwrap();
        assert_eq!(p.last_part(), Some((8, 0)));
        assert_eq!(p.segments[0].program_date_ms, Some(1_796_622_764_000));
        for (from, to, why) in [
            (
                "DURATION=0.333,URI=\"7.2",
                "DURATION=0.300,URI=\"7.2",
                "parts sum",
            ),
            (
                "DURATION=0.333,URI=\"7.2",
                "DURATION=0.400,URI=\"7.2",
                "over the part target",
            ),
            ("URI=\"8.1.m4s\"", "URI=\"8.2.m4s\"", "preload hint"),
            (
                "PART-HOLD-BACK=0.999",
                "PART-HOLD-BACK=0.5",
                "PART-HOLD-BACK",
            ),
            ("CAN-SKIP-UNTIL=6", "CAN-SKIP-UNTIL=3", "CAN-SKIP-UNTIL"),
            ("44.999Z", "45.300Z", "dated"),
            (
                "DURATION=0.333,URI=\"7.1",
                "DURATION=0.200,URI=\"7.1",
                "under 85%",
            ),
            ("URI=\"7.1.m4s\"", "URI=\"9.1.m4s\"", "listed as"),
            ("VERSION:9", "VERSION:6", "VERSION"),
        ] {
            let broken = GOOD.replace(from, to);
            let err = check_ll_playlist(&broken).unwrap_err();
            assert!(err.contains(why), "{from} -> {to}: {err}");
        }
    }
}
