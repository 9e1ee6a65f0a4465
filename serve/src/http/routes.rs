//! The player port's routes: which request goes to which handler, decided from the method
//! and path alone. Kept apart from the handlers so that the whole URL space reads in one
//! place and can be tested without a socket.
//!
//! | method | path | route |
//! |---|---|---|
//! | OPTIONS | any | [`Route::Preflight`] (CORS) |
//! | GET, HEAD | `/healthz`, `/readyz`, `/metrics` | [`Route::Health`], [`Route::Ready`], [`Route::Metrics`] |
//! | GET, HEAD | `/`, `/play/{app}/{room}` | [`Route::Console`] (the pages) |
//! | GET, HEAD | `/console/{file}`, `/console/lib/{file}` | [`Route::ConsoleFile`], [`Route::ConsoleLibrary`] |
//! | GET, HEAD | `/api/streams` | [`Route::Streams`] (the console's list, JSON) |
//! | GET, HEAD | `/{app}/{room}.flv` | [`Route::Flv`] |
//! | GET, HEAD | `/{app}/{room}.m3u8` | [`Route::Playlist`] |
//! | GET, HEAD | `/{app}/{room}/{sequence}.ts` | [`Route::Segment`] |
//! | GET, HEAD | `/{app}/{room}.ts` | [`Route::Ts`] (HTTP-TS) |
//! | GET, HEAD | `/{app}/{room}.mp4` | [`Route::Mp4`] (HTTP-fMP4) |
//! | GET, HEAD | `/{app}/{room}/index.m3u8` | [`Route::CmafPlaylist`] (fMP4 and LL-HLS) |
//! | GET, HEAD | `/{app}/{room}/init{n}.mp4`, `{seq}.m4s`, `{seq}.{part}.m4s` | [`Route::CmafFile`] |
//! | GET, HEAD | `/recordings/{app}/{room}/{file}.flv` (`.mp4`) | [`Route::Recording`] |
//! | POST | `/{app}/{room}/whep` | [`Route::Whep`] (WebRTC playback: an SDP offer in, the answer out) |
//! | DELETE | `/{app}/{room}/whep/{session}` | [`Route::WhepSession`] (ends that playback) |
//! | POST | `/{app}/{key}/whip`, `/{app}/whip` | [`Route::Whip`] (WebRTC publish: the channel key in the path, or else in `Authorization: Bearer`) |
//! | DELETE | `/{app}/{room}/whip/{session}` | [`Route::WhipSession`] (ends that publish) |
//! | GET, HEAD | anything else | [`Route::NotFound`] |
//! | other | any | [`Route::MethodNotAllowed`] |

use super::console::Page;
use crate::stream_key;

/// Where a request goes. Stream routes carry the hub key of the stream asked for, or
/// `None` when the path names no valid stream (answered like a stream that is not live).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Preflight,
    Health,
    Ready,
    Metrics,
    /// An HTTP-FLV stream.
    Flv {
        stream: Option<String>,
    },
    /// A TS HLS playlist; `room` names its segments (`{room}/{sequence}.ts`).
    Playlist {
        stream: Option<String>,
        room: &'a str,
    },
    /// A TS HLS segment.
    Segment {
        stream: Option<(String, u64)>,
    },
    /// The fMP4 (CMAF) playlist, with low-latency parts.
    CmafPlaylist {
        stream: Option<String>,
    },
    /// An init segment, segment or part of the CMAF playlist, by its file name.
    CmafFile {
        stream: Option<String>,
        name: &'a str,
    },
    /// A continuous MPEG-TS (HTTP-TS).
    Ts {
        stream: Option<String>,
    },
    /// A continuous fragmented MP4 (HTTP-fMP4).
    Mp4 {
        stream: Option<String>,
    },
    /// A recorded file, by its path under the recording folder (`None`: a path that
    /// names no recording, such as one that would leave the folder).
    Recording {
        file: Option<&'a str>,
    },
    NotFound,
    MethodNotAllowed,
    /// A console page (see [`super::console`]).
    Console(Page),
    /// One of the console's own scripts or style sheets.
    ConsoleFile(&'a str),
    /// A player library from `--console-assets`.
    ConsoleLibrary(&'a str),
    /// The node's live streams as JSON.
    Streams,
    /// A WHEP offer: play the stream over WebRTC.
    Whep {
        stream: Option<String>,
    },
    /// A WHEP session's resource (the `Location` the offer's answer gave), to end it.
    WhepSession {
        stream: Option<String>,
        session: &'a str,
    },
    /// A WHIP offer: publish over WebRTC to `app`, with the channel key of the path
    /// (`/{app}/{key}/whip`), or none there (`/{app}/whip`, OBS's form: the key comes as
    /// a bearer token).
    Whip {
        app: &'a str,
        key: Option<&'a str>,
    },
    /// A WHIP session's resource (`/{app}/{room}/whip/{session}`), to end the publish.
    WhipSession {
        stream: Option<String>,
        session: &'a str,
    },
}

impl Route<'_> {
    /// The stream a play route plays (what a play token must name); for a recording, the
    /// stream it recorded.
    pub fn played_stream(&self) -> Option<&str> {
        match self {
            Route::Recording { file } => file.and_then(|f| f.rsplit_once('/')).map(|(s, _)| s),
            Route::Flv { stream }
            | Route::Ts { stream }
            | Route::Mp4 { stream }
            | Route::Playlist { stream, .. }
            | Route::CmafPlaylist { stream }
            | Route::CmafFile { stream, .. }
            | Route::Whep { stream } => stream.as_deref(),
            Route::Segment { stream } => stream.as_ref().map(|(key, _)| key.as_str()),
            _ => None,
        }
    }
}

/// The route of a request for `path` (without the query) with `method`.
pub fn route<'a>(method: &str, path: &'a str) -> Route<'a> {
    match method {
        "OPTIONS" => return Route::Preflight,
        "GET" | "HEAD" => {}
        "POST" => {
            return (whep_of(path).or_else(|| whip_of(path))).unwrap_or(Route::MethodNotAllowed)
        }
        // Only ending a session: trickle ICE (PATCH) is not needed by an ICE-lite server,
        // whose one candidate is in its answer.
        "DELETE" => {
            return (whep_session_of(path).or_else(|| whip_session_of(path)))
                .unwrap_or(Route::MethodNotAllowed)
        }
        _ => return Route::MethodNotAllowed,
    }
    if let Some(file) = path.strip_prefix(RECORDINGS) {
        return Route::Recording {
            file: crate::recordings::is_recording(file).then_some(file),
        };
    }
    if let Some(name) = path.strip_prefix("/console/lib/") {
        return Route::ConsoleLibrary(name);
    }
    if let Some(name) = path.strip_prefix("/console/").filter(|n| !n.contains('/')) {
        if name.ends_with(".js") || name.ends_with(".css") {
            return Route::ConsoleFile(name);
        }
    }
    if let Some(stream) = path.strip_prefix("/play") {
        if stream.matches('/').count() == 2 && stream_of(stream, "").is_some() {
            return Route::Console(Page::Play);
        }
    }
    match path {
        "/" => Route::Console(Page::Index),
        "/api/streams" => Route::Streams,
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        "/metrics" => Route::Metrics,
        p if p.ends_with(".flv") => Route::Flv {
            stream: stream_of(p, ".flv").map(|(key, _)| key),
        },
        p if p.ends_with("/index.m3u8") => Route::CmafPlaylist {
            stream: p
                .strip_suffix("/index.m3u8")
                .and_then(|s| stream_of(s, "").map(|(key, _)| key)),
        },
        p if is_cmaf_file(p) => {
            let (stream, name) = p.rsplit_once('/').unwrap_or_default();
            Route::CmafFile {
                stream: stream_of(stream, "").map(|(key, _)| key),
                name,
            }
        }
        p if p.ends_with(".m3u8") => match stream_of(p, ".m3u8") {
            Some((key, room)) => Route::Playlist {
                stream: Some(key),
                room,
            },
            None => Route::Playlist {
                stream: None,
                room: "",
            },
        },
        p if p.ends_with(".mp4") => Route::Mp4 {
            stream: stream_of(p, ".mp4").map(|(key, _)| key),
        },
        // `/{app}/{room}.ts` is the live stream, `/{app}/{room}/{sequence}.ts` a segment.
        p if p.ends_with(".ts") && p.matches('/').count() == 2 => Route::Ts {
            stream: stream_of(p, ".ts").map(|(key, _)| key),
        },
        p if p.ends_with(".ts") => Route::Segment {
            stream: segment_of(p),
        },
        _ => Route::NotFound,
    }
}

/// `/{app}/{room}/{name}` where name is a CMAF file: `init{n}.mp4`, `{seq}.m4s`,
/// `{seq}.{part}.m4s`.
fn is_cmaf_file(path: &str) -> bool {
    let Some((_, name)) = path.rsplit_once('/') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    path.matches('/').count() == 3
        && match (
            name.strip_prefix("init")
                .and_then(|n| n.strip_suffix(".mp4")),
            name.strip_suffix(".m4s"),
        ) {
            (Some(n), _) => digits(n),
            (None, Some(stem)) => stem.split('.').count() <= 2 && stem.split('.').all(digits),
            (None, None) => false,
        }
}

/// Where recordings are served.
pub const RECORDINGS: &str = "/recordings/";

/// `/{app}/{room}{suffix}` -> (stream key, room).
fn stream_of<'a>(path: &'a str, suffix: &str) -> Option<(String, &'a str)> {
    let rest = path.strip_prefix('/')?.strip_suffix(suffix)?;
    let (app, room) = rest.split_once('/')?;
    Some((stream_key(app, room)?, room))
}

/// The suffix of a WHEP endpoint: `/{app}/{room}/whep`.
pub const WHEP: &str = "/whep";

/// `/{app}/{room}/whep` -> a WHEP offer's route.
fn whep_of(path: &str) -> Option<Route<'_>> {
    let stream = path.strip_suffix(WHEP)?;
    (stream.matches('/').count() == 2).then(|| Route::Whep {
        stream: stream_of(stream, "").map(|(key, _)| key),
    })
}

/// `/{app}/{room}/whep/{session}` -> a WHEP session's route.
fn whep_session_of(path: &str) -> Option<Route<'_>> {
    let (endpoint, session) = path.rsplit_once('/')?;
    let Some(Route::Whep { stream }) = whep_of(endpoint) else {
        return None;
    };
    (!session.is_empty()).then_some(Route::WhepSession { stream, session })
}

/// The suffix of a WHIP endpoint: `/{app}/{key}/whip` or `/{app}/whip`.
pub const WHIP: &str = "/whip";

/// `/{app}/{key}/whip` or `/{app}/whip` -> a WHIP offer's route.
fn whip_of(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix('/')?.strip_suffix(WHIP)?;
    let (app, key) = match rest.split_once('/') {
        Some((app, key)) if !key.contains('/') => (app, Some(key)),
        Some(_) => return None,
        None => (rest, None),
    };
    (!app.is_empty() && key != Some("")).then_some(Route::Whip { app, key })
}

/// `/{app}/{room}/whip/{session}` -> a WHIP session's route.
fn whip_session_of(path: &str) -> Option<Route<'_>> {
    let (endpoint, session) = path.rsplit_once('/')?;
    let stream = endpoint.strip_suffix(WHIP)?;
    (stream.matches('/').count() == 2 && !session.is_empty()).then(|| Route::WhipSession {
        stream: stream_of(stream, "").map(|(key, _)| key),
        session,
    })
}

/// `/{app}/{room}/{sequence}.ts` -> (stream key, sequence).
fn segment_of(path: &str) -> Option<(String, u64)> {
    let rest = path.strip_prefix('/')?.strip_suffix(".ts")?;
    let (stream, sequence) = rest.rsplit_once('/')?;
    let (app, room) = stream.split_once('/')?;
    Some((stream_key(app, room)?, sequence.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_stay_in_their_folder() {
        fn file(path: &str) -> Option<&str> {
            match route("GET", path) {
                Route::Recording { file } => file,
                other => panic!("{path}: {other:?}"),
            }
        }
        assert_eq!(
            file("/recordings/live/room/2026-12-06T23-26-24Z.mp4"),
            Some("live/room/2026-12-06T23-26-24Z.mp4")
        );
        // What may name a file is `recordings::is_recording`'s to say (tested there).
        for bad in ["/recordings/live/room/../../etc/passwd.flv", "/recordings/"] {
            assert_eq!(file(bad), None, "{bad}");
        }
    }

    #[test]
    fn play_routes_name_the_stream_a_token_must_name() {
        let played = |path: &str| route("GET", path).played_stream().map(str::to_owned);
        for path in [
            "/live/a.flv",
            "/live/a.ts",
            "/live/a.mp4",
            "/live/a.m3u8",
            "/live/a/7.ts",
            "/live/a/index.m3u8",
            "/live/a/init0.mp4",
            "/live/a/7.2.m4s",
            "/recordings/live/a/2026-12-06T23-26-24Z.mp4",
        ] {
            assert_eq!(played(path).as_deref(), Some("live/a"), "{path}");
        }
        // A WHEP offer plays; ending the session needs only its (unguessable) id.
        let offer = route("POST", "/live/a/whep");
        assert_eq!(offer.played_stream(), Some("live/a"));
        assert_eq!(route("DELETE", "/live/a/whep/abc").played_stream(), None);
        for path in [
            "/",
            "/play/live/a",
            "/api/streams",
            "/metrics",
            "/console/console.js",
        ] {
            assert_eq!(played(path), None, "{path}");
        }
    }

    #[test]
    fn the_console_has_its_own_paths_beside_the_streams() {
        assert_eq!(route("GET", "/"), Route::Console(Page::Index));
        assert_eq!(route("GET", "/play/live/room"), Route::Console(Page::Play));
        assert_eq!(route("GET", "/play/live/../x"), Route::NotFound);
        assert_eq!(route("GET", "/api/streams"), Route::Streams);
        assert_eq!(
            route("GET", "/console/console.js"),
            Route::ConsoleFile("console.js")
        );
        assert_eq!(
            route("GET", "/console/lib/hls.min.js"),
            Route::ConsoleLibrary("hls.min.js")
        );
        // An app called `play` or `console` keeps its streams.
        assert_eq!(flv("/play/room.flv").as_deref(), Some("play/room"));
        assert_eq!(flv("/console/room.flv").as_deref(), Some("console/room"));
    }

    fn flv(path: &str) -> Option<String> {
        match route("GET", path) {
            Route::Flv { stream } => stream,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn flv_paths_map_to_stream_keys() {
        assert_eq!(flv("/live/room1.flv").as_deref(), Some("live/room1"));
        assert_eq!(flv("/live/../x.flv"), None);
        assert_eq!(flv("/live/a/b.flv"), None);
        assert_eq!(flv("/room.flv"), None);
    }

    #[test]
    fn hls_paths_map_to_streams_and_segments() {
        assert_eq!(
            route("GET", "/live/room.m3u8"),
            Route::Playlist {
                stream: Some("live/room".into()),
                room: "room"
            }
        );
        assert!(matches!(
            route("HEAD", "/live/../etc.m3u8"),
            Route::Playlist { stream: None, .. }
        ));
        let segment = |p| match route("GET", p) {
            Route::Segment { stream } => stream,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(
            segment("/live/room/1700000000.ts"),
            Some(("live/room".into(), 1_700_000_000))
        );
        assert_eq!(segment("/live/room/x.ts"), None);
        assert_eq!(segment("/live/a/b/1.ts"), None);
        assert_eq!(segment("/live/../x/1.ts"), None);
        // Two parts: the live stream over HTTP-TS.
        let live = |p| match route("GET", p) {
            Route::Ts { stream } => stream,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(live("/live/room.ts").as_deref(), Some("live/room"));
        assert_eq!(live("/live/bad name.ts"), None);
        assert_eq!(
            route("GET", "/live/room/index.m3u8"),
            Route::CmafPlaylist {
                stream: Some("live/room".into())
            }
        );
        for name in ["init0.mp4", "12.m4s", "12.3.m4s"] {
            assert_eq!(
                route("GET", &format!("/live/room/{name}")),
                Route::CmafFile {
                    stream: Some("live/room".into()),
                    name
                }
            );
        }
        assert!(matches!(route("GET", "/live/room/x.m4s"), Route::NotFound));
        match route("GET", "/live/room.mp4") {
            Route::Mp4 { stream } => assert_eq!(stream.as_deref(), Some("live/room")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn whep_offers_and_sessions() {
        assert_eq!(
            route("POST", "/live/room/whep"),
            Route::Whep {
                stream: Some("live/room".into())
            }
        );
        assert_eq!(
            route("POST", "/live/bad name/whep"),
            Route::Whep { stream: None }
        );
        assert_eq!(route("POST", "/live/whep"), Route::MethodNotAllowed);
        assert_eq!(route("POST", "/a/b/c/whep"), Route::MethodNotAllowed);
        assert_eq!(
            route("DELETE", "/live/room/whep/0123abcd"),
            Route::WhepSession {
                stream: Some("live/room".into()),
                session: "0123abcd"
            }
        );
        assert_eq!(route("DELETE", "/live/room/whep/"), Route::MethodNotAllowed);
        assert_eq!(route("DELETE", "/live/room.flv"), Route::MethodNotAllowed);
        // GET of the endpoint is no stream of ours.
        assert_eq!(route("GET", "/live/room/whep"), Route::NotFound);
    }

    #[test]
    fn whip_offers_and_sessions() {
        let offer = |path| route("POST", path);
        assert_eq!(
            offer("/live/k3y/whip"),
            Route::Whip {
                app: "live",
                key: Some("k3y")
            }
        );
        // OBS's form: the URL names the app; the key comes as a bearer token.
        assert_eq!(
            offer("/live/whip"),
            Route::Whip {
                app: "live",
                key: None
            }
        );
        // A room called `whip` is played over WHEP like any other.
        assert_eq!(
            offer("/live/whip/whep"),
            Route::Whep {
                stream: Some("live/whip".into())
            }
        );
        for refused in ["/whip", "/live//whip", "/a/b/c/whip"] {
            assert_eq!(offer(refused), Route::MethodNotAllowed, "{refused}");
        }
        assert_eq!(offer("/live/k3y/whip").played_stream(), None);
        assert_eq!(
            route("DELETE", "/live/room/whip/0123abcd"),
            Route::WhipSession {
                stream: Some("live/room".into()),
                session: "0123abcd"
            }
        );
        assert_eq!(route("DELETE", "/live/room/whip/"), Route::MethodNotAllowed);
        assert_eq!(route("DELETE", "/live/whip/abc"), Route::MethodNotAllowed);
        assert_eq!(route("GET", "/live/room/whip"), Route::NotFound);
    }

    #[test]
    fn methods_and_fixed_paths() {
        assert_eq!(route("OPTIONS", "/anything"), Route::Preflight);
        assert_eq!(route("POST", "/live/a.flv"), Route::MethodNotAllowed);
        assert_eq!(route("PATCH", "/live/a/whep/abc"), Route::MethodNotAllowed);
        assert_eq!(route("HEAD", "/healthz"), Route::Health);
        assert_eq!(route("GET", "/readyz"), Route::Ready);
        assert_eq!(route("GET", "/metrics"), Route::Metrics);
        assert_eq!(route("GET", "/nothing/here"), Route::NotFound);
    }
}
