//! The record folder: where recordings go (`DIR/APP/ROOM/<UTC start>.EXT`), what is in it
//! (size, start, duration and codecs read from the files themselves, so that a listing
//! survives restarts and sees what every origin sharing the folder wrote), deleting a
//! file, and retention.
//!
//! Blocking file I/O: async callers run these on a blocking thread.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use media::codec::{parse_audio_tag, parse_video_tag};
use media::flv::{last_tag_time, FlvReader};
use media::fmp4;

use crate::stream_key;

/// `DIR/APP/ROOM/YYYY-MM-DDTHH-MM-SSZ.EXT` for a file begun at `at`; if that file exists
/// (two files begun within a second), `...Z-1.EXT` and so on. `app` and `room` are valid
/// names (`media::names`), which cannot climb out of `dir`.
pub fn file_path(dir: &Path, app: &str, room: &str, at: SystemTime, ext: &str) -> PathBuf {
    let folder = dir.join(app).join(room);
    let stamp = utc_stamp(at);
    let mut path = folder.join(format!("{stamp}.{ext}"));
    let mut n = 1;
    while path.exists() {
        path = folder.join(format!("{stamp}-{n}.{ext}"));
        n += 1;
    }
    path
}

/// `YYYY-MM-DDTHH-MM-SSZ` (UTC; colons would need escaping in URLs and are not allowed in
/// Windows file names).
pub fn utc_stamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = media::calendar::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Whether `file` is `{app}/{room}/{name}.flv` or `.mp4` with valid names: nothing that can
/// climb out of the record folder (no `..`, no leading dot, no escapes, no `/` inside).
pub fn is_recording(file: &str) -> bool {
    let parts: Vec<&str> = file.split('/').collect();
    let [app, room, name] = parts[..] else {
        return false;
    };
    stream_key(app, room).is_some()
        && media::names::is_valid_name(name)
        && (name.ends_with(".flv") || name.ends_with(".mp4"))
}

/// A recorded file as a listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `app/room/name`, under the record folder.
    pub path: String,
    pub app: String,
    pub room: String,
    pub size: u64,
    /// When recording began (UTC, from the name), e.g. `2026-12-06T23:41:05Z`.
    pub start: String,
    pub modified: SystemTime,
    /// Media time in the file (to its last whole tag or fragment); `None` if unreadable.
    pub duration_ms: Option<u64>,
    /// Short codec names (`h264`, `aac`, ...), video first.
    pub codecs: Vec<&'static str>,
}

/// The recordings under `dir`, of `app` and `room` when given, oldest first. A folder that
/// does not exist (nothing recorded yet) holds none.
pub fn list(dir: &Path, app: Option<&str>, room: Option<&str>) -> std::io::Result<Vec<Recorded>> {
    let mut files = Vec::new();
    for (path, full, meta) in walk(dir, app, room)? {
        let (app, rest) = path.split_once('/').unwrap_or_default();
        let (room, name) = rest.split_once('/').unwrap_or_default();
        let (duration_ms, codecs) = probe(&full).unwrap_or_default();
        files.push(Recorded {
            app: app.to_owned(),
            room: room.to_owned(),
            size: meta.len(),
            start: start_of(name).unwrap_or_default(),
            modified: meta.modified().unwrap_or(UNIX_EPOCH),
            duration_ms,
            codecs,
            path,
        });
    }
    files.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.path.cmp(&b.path)));
    Ok(files)
}

/// Remove the recording `file` (`app/room/name`); `false` when there is none.
pub fn remove(dir: &Path, file: &str) -> std::io::Result<bool> {
    if !is_recording(file) {
        return Ok(false);
    }
    match std::fs::remove_file(dir.join(file)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every recording file under `dir` (filtered by app and room) as (`app/room/name`, full
/// path, metadata). Anything else in the folder is left alone.
fn walk(
    dir: &Path,
    app: Option<&str>,
    room: Option<&str>,
) -> std::io::Result<Vec<(String, PathBuf, std::fs::Metadata)>> {
    let mut found = Vec::new();
    for app_dir in entries(dir)? {
        let app_name = app_dir.file_name().to_string_lossy().into_owned();
        if app.is_some_and(|a| a != app_name) {
            continue;
        }
        for room_dir in entries(&app_dir.path())? {
            let room_name = room_dir.file_name().to_string_lossy().into_owned();
            if room.is_some_and(|r| r != room_name) {
                continue;
            }
            for file in entries(&room_dir.path())? {
                let path = format!(
                    "{app_name}/{room_name}/{}",
                    file.file_name().to_string_lossy()
                );
                match file.metadata() {
                    Ok(meta) if meta.is_file() && is_recording(&path) => {
                        found.push((path, file.path(), meta))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(found)
}

/// The entries of a folder; none when it does not exist or is not a folder.
fn entries(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(read) => read.collect(),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// `2026-12-06T23-41-05Z.mp4` (or `...Z-1.mp4`) -> `2026-12-06T23:41:05Z`.
fn start_of(name: &str) -> Option<String> {
    let stamp = name.get(..20)?;
    let b = stamp.as_bytes();
    let shaped = b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b'-' && b[16] == b'-';
    (shaped && b[19] == b'Z')
        .then(|| format!("{}:{}:{}", &stamp[..13], &stamp[14..16], &stamp[17..]))
}

/// How much of a file's start and end is read to list it: the sequence headers are in the
/// first tags; the last whole tag (a keyframe may be a few hundred KiB) is in the end.
const HEAD_BYTES: usize = 64 * 1024;
const TAIL_BYTES: u64 = 4 * 1024 * 1024;

/// A file's duration and codecs, from its first and last bytes.
fn probe(path: &Path) -> std::io::Result<(Option<u64>, Vec<&'static str>)> {
    let mut file = File::open(path)?;
    if path.extension().is_some_and(|e| e == "mp4") {
        return probe_mp4(&mut file);
    }
    let len = file.metadata()?.len();
    let mut head = BytesMut::zeroed(HEAD_BYTES.min(len as usize));
    file.read_exact(&mut head)?;
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    file.read_to_end(&mut tail)?;

    let (mut video, mut audio, mut first) = (None, None, None);
    let mut reader = FlvReader::new();
    while let Ok(Some(tag)) = reader.read(&mut head) {
        first.get_or_insert(tag.timestamp);
        match tag.tag_type {
            9 => video = video.or(parse_video_tag(&tag.payload).map(|i| i.codec.name())),
            8 => audio = audio.or(parse_audio_tag(&tag.payload).map(|i| i.codec.name())),
            _ => {}
        }
        if video.is_some() && audio.is_some() {
            break;
        }
    }
    let duration =
        last_tag_time(&tail).map(|last| u64::from(last.saturating_sub(first.unwrap_or(0))));
    Ok((duration, video.into_iter().chain(audio).collect()))
}

/// Bounds on the boxes read to list an MP4: ours are a few KiB.
const MAX_MOOV: u64 = 1024 * 1024;
const MAX_MOOF: u64 = 4 * 1024 * 1024;

/// An MP4's codecs from its `moov` and its duration from the last whole fragment, found by
/// walking the top-level box headers (the media data is never read).
fn probe_mp4(file: &mut File) -> std::io::Result<(Option<u64>, Vec<&'static str>)> {
    let len = file.metadata()?.len();
    let (mut moov, mut last_moof, mut moof) = (None, None, None);
    let mut at = 0u64;
    let mut header = [0u8; fmp4::read::BOX_HEADER_MAX];
    while at < len {
        file.seek(SeekFrom::Start(at))?;
        let got = read_up_to(file, &mut header)?;
        let Some((kind, size, header_len)) = fmp4::read::box_header(&header[..got]) else {
            break;
        };
        let end = at.saturating_add(size);
        if end > len {
            break; // cut off here (a crash, or still being written)
        }
        let body = (at + header_len as u64, size - header_len as u64);
        match &kind {
            b"moov" => moov = Some(body),
            b"moof" => moof = Some(body),
            // A fragment counts once its media data is all there.
            b"mdat" => last_moof = moof.take().or(last_moof),
            _ => {}
        }
        at = end;
    }
    let Some(movie) = moov
        .filter(|&(_, size)| size <= MAX_MOOV)
        .and_then(|body| read_body(file, body).ok())
        .and_then(|bytes| fmp4::read::Movie::parse(&bytes))
    else {
        return Ok((None, Vec::new()));
    };
    let duration = match last_moof.filter(|&(_, size)| size <= MAX_MOOF) {
        Some(body) => movie.fragment_end_ms(&read_body(file, body)?),
        None => Some(0),
    };
    Ok((duration, movie.codecs()))
}

fn read_body(file: &mut File, (at, size): (u64, u64)) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0; size as usize];
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Fill `buf` as far as the file goes.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

// --- retention ---

/// How long recordings are kept and how much of the disk they may take; the oldest go
/// first.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    pub keep: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// A file written to this recently is being recorded (by this node or another sharing the
/// folder) and is never deleted.
pub const IN_USE: Duration = Duration::from_secs(60);

/// Of `files` (path, size, last written), those `retention` deletes at `now`: every file
/// last written more than `keep` ago, then the oldest until the rest fit `max_bytes`. Files
/// in use stay, even if that leaves the folder over its size.
pub fn expired(
    files: &[(PathBuf, u64, SystemTime)],
    now: SystemTime,
    retention: Retention,
) -> Vec<PathBuf> {
    let age = |written: SystemTime| now.duration_since(written).unwrap_or_default();
    let mut oldest_first: Vec<&(PathBuf, u64, SystemTime)> = files.iter().collect();
    oldest_first.sort_by_key(|(path, _, written)| (*written, path.clone()));
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    let mut gone = Vec::new();
    for (path, size, written) in oldest_first {
        if age(*written) < IN_USE {
            continue;
        }
        let too_old = retention.keep.is_some_and(|keep| age(*written) > keep);
        let too_big = retention.max_bytes.is_some_and(|max| total > max);
        if too_old || too_big {
            total -= size;
            gone.push(path.clone());
        }
    }
    gone
}

/// Delete what `retention` expires under `dir` now; returns the files deleted.
pub fn prune(dir: &Path, retention: Retention) -> std::io::Result<Vec<PathBuf>> {
    let files: Vec<(PathBuf, u64, SystemTime)> = walk(dir, None, None)?
        .into_iter()
        .map(|(_, full, meta)| (full, meta.len(), meta.modified().unwrap_or(UNIX_EPOCH)))
        .collect();
    let mut deleted = Vec::new();
    for path in expired(&files, SystemTime::now(), retention) {
        match std::fs::remove_file(&path) {
            Ok(()) => deleted.push(path),
            // Deleted meanwhile by another origin sharing the folder, or by an operator.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(utc_stamp(at(0)), "1970-01-01T00-00-00Z");
        // 2024-02-29 (a leap day) 12:34:56.
        assert_eq!(utc_stamp(at(1_709_210_096)), "2024-02-29T12-34-56Z");
        assert_eq!(utc_stamp(at(1_709_251_199)), "2024-02-29T23-59-59Z");
        assert_eq!(utc_stamp(at(1_709_251_200)), "2024-03-01T00-00-00Z");
        // 2000-12-31 and 2100-03-01 (2100 is not a leap year).
        assert_eq!(utc_stamp(at(978_220_800)), "2000-12-31T00-00-00Z");
        assert_eq!(utc_stamp(at(4_107_542_400)), "2100-03-01T00-00-00Z");
        assert_eq!(
            start_of("2024-02-29T12-34-56Z-1.mp4").as_deref(),
            Some("2024-02-29T12:34:56Z")
        );
        assert_eq!(start_of("notastamp.flv"), None);
    }

    #[test]
    fn a_file_never_replaces_another() {
        let dir = std::env::temp_dir().join(format!("ferrolive-names-{}", std::process::id()));
        let at = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        let first = file_path(&dir, "live", "room", at, "flv");
        assert_eq!(first, dir.join("live/room/2024-02-29T12-34-56Z.flv"));
        std::fs::create_dir_all(first.parent().unwrap()).unwrap();
        std::fs::write(&first, b"").unwrap();
        let second = file_path(&dir, "live", "room", at, "flv");
        assert_eq!(second, dir.join("live/room/2024-02-29T12-34-56Z-1.flv"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn recordings_stay_in_their_folder() {
        assert!(is_recording("live/room/2026-12-06T23-26-24Z.mp4"));
        assert!(is_recording("live/room/x-1.flv"));
        for bad in [
            "live/room/../../etc/passwd.flv",
            "../x/y.flv",
            "live/room/.hidden.flv",
            "live/room/a%2f..%2fb.flv",
            "live/room/file.txt",
            "live/room/sub/file.flv",
            "live/file.flv",
            "live/sk_key/file.flv",
            "",
        ] {
            assert!(!is_recording(bad), "{bad}");
        }
    }

    #[test]
    fn retention_deletes_the_oldest_but_never_a_file_in_use() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |secs| now - Duration::from_secs(secs);
        let file = |name: &str, size, written| (PathBuf::from(name), size, written);
        let files = [
            file("c", 100, ago(3600)),
            file("a", 100, ago(7200)),
            file("b", 100, ago(5400)),
            file("live", 100, ago(10)),
        ];
        let names = |retention| -> Vec<String> {
            expired(&files, now, retention)
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        };
        assert!(names(Retention::default()).is_empty());
        let keep = |secs| Some(Duration::from_secs(secs));
        assert_eq!(
            names(Retention {
                keep: keep(4000),
                max_bytes: None
            }),
            ["a", "b"]
        );
        assert_eq!(
            names(Retention {
                keep: None,
                max_bytes: Some(250)
            }),
            ["a", "b"]
        );
        assert_eq!(
            names(Retention {
                keep: None,
                max_bytes: Some(400)
            }),
            Vec::<String>::new()
        );
        // Over the size with only the file in use left: it stays.
        assert_eq!(
            names(Retention {
                keep: keep(1),
                max_bytes: Some(0)
            }),
            ["a", "b", "c"]
        );
    }
}
