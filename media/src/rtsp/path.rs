//! Which stream (and which track of it) a request URI names: `rtsp://host:port/APP/ROOM`,
//! `/APP/ROOM/trackID=N`, with a query (`?token=...`) kept for the driver.
//!
//! Clients build track URLs by appending the control to the URL they were given, even
//! after a query: ffmpeg asks for `rtsp://h/live/room?token=x/streamid=0`. So a `/` inside
//! the query starts the control, and the query is what comes before it. Empty segments
//! (trailing or doubled slashes) are ignored.

/// A stream path and the parts of it a session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPath {
    pub app: String,
    pub room: String,
    /// What follows the room: a track's control (`trackID=0`, `streamid=0`, `stream=0`).
    pub control: Option<String>,
    /// The query without its `?` (empty if none).
    pub query: String,
}

impl StreamPath {
    /// Read a request URI; `None` unless it names an app and a room (and at most one more
    /// segment, the control).
    pub fn parse(uri: &str) -> Option<StreamPath> {
        let path = match uri.split_once("://") {
            Some((scheme, rest)) => {
                if !scheme.to_ascii_lowercase().starts_with("rtsp") {
                    return None;
                }
                let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
                &rest[authority_end..]
            }
            None if uri.starts_with('/') => uri,
            None => return None,
        };
        let (path, query, after_query) = match path.split_once('?') {
            Some((path, query)) => match query.split_once('/') {
                Some((query, control)) => (path, query, control),
                None => (path, query, ""),
            },
            None => (path, "", ""),
        };
        let mut segments = path
            .split('/')
            .chain(after_query.split('/'))
            .filter(|segment| !segment.is_empty());
        let app = segments.next()?.to_string();
        let room = segments.next()?.to_string();
        let control = segments.next().map(str::to_string);
        if segments.next().is_some() {
            return None;
        }
        Some(StreamPath {
            app,
            room,
            control,
            query: query.to_string(),
        })
    }

    /// The track index of a control this server gave out (`trackID=N`).
    pub fn track_id(&self) -> Option<usize> {
        self.control
            .as_deref()?
            .strip_prefix("trackID=")?
            .parse()
            .ok()
    }

    /// Whether both name the same stream (whatever the track and query).
    pub fn same_stream(&self, other: &StreamPath) -> bool {
        self.app == other.app && self.room == other.room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(app: &str, room: &str, control: Option<&str>, query: &str) -> Option<StreamPath> {
        Some(StreamPath {
            app: app.into(),
            room: room.into(),
            control: control.map(Into::into),
            query: query.into(),
        })
    }

    #[test]
    fn urls_clients_send() {
        assert_eq!(
            StreamPath::parse("rtsp://h:8554/live/room"),
            path("live", "room", None, "")
        );
        assert_eq!(
            StreamPath::parse("rtsp://h/live/room/"),
            path("live", "room", None, "")
        );
        assert_eq!(
            StreamPath::parse("rtsp://[::1]:554/live/room/trackID=1"),
            path("live", "room", Some("trackID=1"), "")
        );
        assert_eq!(
            StreamPath::parse("rtsp://h/live/room?token=abc"),
            path("live", "room", None, "token=abc")
        );
        assert_eq!(
            StreamPath::parse("rtsp://h/live/room?token=abc/streamid=0"),
            path("live", "room", Some("streamid=0"), "token=abc")
        );
        assert_eq!(
            StreamPath::parse("/live//room/stream=0"),
            path("live", "room", Some("stream=0"), "")
        );
        assert_eq!(StreamPath::parse("RTSP://h/a/b").unwrap().track_id(), None);
        assert_eq!(
            StreamPath::parse("rtsp://h/a/b/trackID=3")
                .unwrap()
                .track_id(),
            Some(3)
        );
    }

    #[test]
    fn urls_that_name_no_stream() {
        for uri in [
            "*",
            "rtsp://h",
            "rtsp://h/live",
            "http://h/live/room",
            "rtsp://h/a/b/c/d",
            "live/room",
            "",
        ] {
            assert_eq!(StreamPath::parse(uri), None, "{uri}");
        }
    }
}
