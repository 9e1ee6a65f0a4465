//! HLS players as viewers. An HLS player is a run of requests, on whatever connections its
//! HTTP stack opens, not one connection: it is told apart by its client address and
//! `User-Agent`, counts once it has fetched a segment (a lone playlist request is not a
//! player), and stops counting after [`SESSION_IDLE`] without a request. Plain data with
//! time as a parameter; the HLS module holds one in a mutex.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A player that has asked for nothing for this long has gone (players ask every target
/// duration, 2 s by default; a paused one stops asking).
pub const SESSION_IDLE: Duration = Duration::from_secs(20);
/// At most this many sessions are tracked: beyond it new players are served but not
/// counted, so that made-up user agents cannot grow memory without bound.
pub const MAX_SESSIONS: usize = 100_000;

/// Who a session is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    stream: String,
    client: IpAddr,
    agent: u64,
}

impl SessionKey {
    pub fn new(stream: &str, client: IpAddr, user_agent: &str) -> SessionKey {
        let mut hasher = DefaultHasher::new();
        user_agent.hash(&mut hasher);
        SessionKey {
            stream: stream.to_owned(),
            client,
            agent: hasher.finish(),
        }
    }
}

/// The live sessions, each holding a `T` (what makes it count) while it lives.
#[derive(Debug)]
pub struct Sessions<T> {
    sessions: HashMap<SessionKey, (Instant, T)>,
}

impl<T> Default for Sessions<T> {
    fn default() -> Self {
        Sessions {
            sessions: HashMap::new(),
        }
    }
}

impl<T> Sessions<T> {
    /// A segment request: the session goes on, or starts with what `start` makes (`None`:
    /// the stream is gone, nothing to count).
    pub fn segment(&mut self, key: SessionKey, now: Instant, start: impl FnOnce() -> Option<T>) {
        if let Some((last, _)) = self.sessions.get_mut(&key) {
            *last = now;
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return;
        }
        if let Some(held) = start() {
            self.sessions.insert(key, (now, held));
        }
    }

    /// A playlist request: it keeps a session going but does not start one.
    pub fn playlist(&mut self, key: &SessionKey, now: Instant) {
        self.touch(key, now);
    }

    /// Keep the session `key` going: whether there is one.
    pub fn touch(&mut self, key: &SessionKey, now: Instant) -> bool {
        match self.sessions.get_mut(key) {
            Some((last, _)) => {
                *last = now;
                true
            }
            None => false,
        }
    }

    /// Start the session `key` holding `held` (unless there are too many), after dropping
    /// every idle session, of any stream.
    pub fn start(&mut self, key: SessionKey, now: Instant, held: T) {
        self.sessions
            .retain(|_, (last, _)| now.saturating_duration_since(*last) < SESSION_IDLE);
        if self.sessions.len() < MAX_SESSIONS {
            self.sessions.insert(key, (now, held));
        }
    }

    /// Drop the sessions of `stream` idle at `now` (all of them with `all`).
    pub fn expire(&mut self, stream: &str, now: Instant, all: bool) {
        self.sessions.retain(|key, (last, _)| {
            key.stream != stream || (!all && now.saturating_duration_since(*last) < SESSION_IDLE)
        });
    }

    /// Sessions of `stream` right now.
    pub fn count(&self, stream: &str) -> usize {
        self.sessions.keys().filter(|k| k.stream == stream).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_player_counts_from_its_first_segment_until_it_stops_asking() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut sessions: Sessions<()> = Sessions::default();
        let hls_js = SessionKey::new("live/a", A, "hls.js");
        // A playlist alone is no player.
        sessions.playlist(&hls_js, at(0));
        assert_eq!(sessions.count("live/a"), 0);
        sessions.segment(hls_js.clone(), at(1), || Some(()));
        assert_eq!(sessions.count("live/a"), 1);
        // Another agent at the same address, and the same agent elsewhere, are others.
        sessions.segment(SessionKey::new("live/a", A, "VLC"), at(1), || Some(()));
        sessions.segment(SessionKey::new("live/a", B, "hls.js"), at(1), || Some(()));
        assert_eq!(sessions.count("live/a"), 3);
        // Playlists keep a session going.
        sessions.playlist(&hls_js, at(15));
        sessions.expire("live/a", at(25), false);
        assert_eq!(sessions.count("live/a"), 1);
        sessions.expire("live/a", at(35), false);
        assert_eq!(sessions.count("live/a"), 0);
    }

    #[test]
    fn a_started_session_goes_on_while_touched_and_starting_another_drops_idle_ones() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut sessions: Sessions<()> = Sessions::default();
        let a = SessionKey::new("live/a", A, "x");
        let b = SessionKey::new("live/b", B, "x");
        assert!(!sessions.touch(&a, at(0)));
        sessions.start(a.clone(), at(0), ());
        assert!(sessions.touch(&a, at(15)));
        sessions.start(b.clone(), at(30), ());
        assert_eq!((sessions.count("live/a"), sessions.count("live/b")), (1, 1));
        sessions.start(SessionKey::new("live/c", A, "x"), at(40), ());
        assert_eq!(sessions.count("live/a"), 0);
        assert!(sessions.touch(&b, at(40)));
    }

    #[test]
    fn streams_are_counted_and_ended_apart() {
        let now = Instant::now();
        let mut sessions: Sessions<()> = Sessions::default();
        sessions.segment(SessionKey::new("live/a", A, "x"), now, || Some(()));
        sessions.segment(SessionKey::new("live/b", A, "x"), now, || Some(()));
        sessions.segment(SessionKey::new("live/c", A, "x"), now, || None);
        assert_eq!((sessions.count("live/a"), sessions.count("live/c")), (1, 0));
        sessions.expire("live/a", now, true);
        assert_eq!((sessions.count("live/a"), sessions.count("live/b")), (0, 1));
    }
}
