//! Relays: live streams forwarded to other servers ([`forward`]) and streams pulled in from
//! them ([`pull`]), over RTMP, RTMPS and HTTP(S)-FLV ([`transport`], [`rtmp`], [`flv`]).
//! When to try again is [`policy`]'s to say.

pub mod flv;
mod forward;
mod policy;
mod pull;
pub mod rtmp;
pub mod transport;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use registry::RelayInfo;
use serve::hooks::{HookEvent, HookRequest, Hooks};
use serve::metrics::escape_label;

pub use forward::Forwards;
pub use pull::{PullRule, Pulls};

/// How an origin relays.
#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    /// Where published streams are forwarded.
    pub push: Vec<Rule>,
    /// Rooms fed from elsewhere.
    pub pull: Vec<PullRule>,
    /// How long an on-demand pull goes on without anyone watching.
    pub pull_idle: Duration,
}

/// `APP/ROOM=URL`: streams whose app and room match (`*` matches any) are forwarded to URL,
/// with `{app}` and `{room}` replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    app: Option<String>,
    room: Option<String>,
    url: String,
}

impl Rule {
    pub fn parse(rule: &str) -> Result<Rule, String> {
        let (pattern, url) = rule
            .split_once('=')
            .ok_or_else(|| format!("{rule:?}: write APP/ROOM=URL (APP or ROOM may be *)"))?;
        let (app, room) = pattern
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{pattern:?}: write APP/ROOM (APP or ROOM may be *)"))?;
        let name = |part: &str| -> Result<Option<String>, String> {
            match part {
                "*" => Ok(None),
                name if media::names::is_valid_name(name) => Ok(Some(name.to_owned())),
                name => Err(format!("{name:?} is not a valid app or room name, nor *")),
            }
        };
        let url = url.trim().to_owned();
        media::rtmp::url::RelayUrl::parse(&expand(&url, "app", "room"))
            .map_err(|e| format!("{url:?}: {e}"))?;
        Ok(Rule {
            app: name(app)?,
            room: name(room)?,
            url,
        })
    }

    fn matches(&self, app: &str, room: &str) -> bool {
        self.app.as_deref().is_none_or(|a| a == app)
            && self.room.as_deref().is_none_or(|r| r == room)
    }

    fn url(&self, app: &str, room: &str) -> String {
        expand(&self.url, app, room)
    }
}

/// `template` with `{app}` and `{room}` replaced.
fn expand(template: &str, app: &str, room: &str) -> String {
    media::rtmp::url::expand(template, app, room)
}

/// A relay's state as its task last set it (what the lease, the heartbeat and the API show).
/// Each forward's and pull's state, bytes and skipped frames in Prometheus text, labelled
/// with its kind, stream, id and URL (redacted, as everywhere).
pub fn render_metrics(forwards: &Forwards, pulls: &Pulls, out: &mut String) {
    use std::fmt::Write;
    let relays: Vec<(&str, String, RelayInfo)> = (forwards.states().into_iter())
        .map(|(stream, info)| ("forward", stream, info))
        .chain(
            pulls
                .states()
                .into_iter()
                .map(|(stream, info)| ("pull", stream, info)),
        )
        .collect();
    let series = [
        (
            "ferrolive_relay_up",
            "gauge",
            "Whether a relay is connected and relaying (1) or connecting or retrying (0).",
        ),
        (
            "ferrolive_relay_stream_bytes_total",
            "counter",
            "Media bytes a relay sent (forward) or received (pull).",
        ),
        (
            "ferrolive_relay_stream_frames_skipped_total",
            "counter",
            "Frames a forward dropped because its destination was too slow.",
        ),
    ];
    for (name, kind, help) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (relay, stream, info) in &relays {
            let value = match name {
                "ferrolive_relay_up" => u64::from(info.state == "live"),
                "ferrolive_relay_stream_bytes_total" => info.bytes,
                _ => info.frames_skipped,
            };
            let _ = writeln!(
                out,
                "{name}{{kind=\"{relay}\",stream=\"{}\",id=\"{}\",url=\"{}\"}} {value}",
                escape_label(stream),
                escape_label(&info.id),
                escape_label(&info.url),
            );
        }
    }
}

fn lock(state: &Mutex<RelayInfo>) -> MutexGuard<'_, RelayInfo> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn set(state: &Mutex<RelayInfo>, change: impl FnOnce(&mut RelayInfo)) {
    change(&mut lock(state));
}

/// A relay (`kind`: forward or pull) of `stream` is now `to` (live, retrying with `error`,
/// ended): the API shows it, and the `on_relay` hook is told.
fn change_state(
    hooks: &Hooks,
    kind: &'static str,
    stream: &str,
    state: &Mutex<RelayInfo>,
    to: &str,
    error: Option<String>,
) {
    let info = {
        let mut info = lock(state);
        info.state = to.to_owned();
        info.error = error;
        info.clone()
    };
    let mut extra = vec![
        ("relay", kind.to_owned()),
        ("id", info.id),
        ("url", info.url),
        ("state", info.state),
    ];
    extra.extend(info.error.map(|error| ("error", error)));
    let request = HookRequest {
        extra,
        ..HookRequest::for_stream(stream, "relay")
    };
    hooks.notify(HookEvent::Relay, &request);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_apps_and_rooms() {
        let rule = Rule::parse("live/*=rtmp://backup:1935/{app}/{room}").unwrap();
        assert!(rule.matches("live", "a") && !rule.matches("game", "a"));
        assert_eq!(rule.url("live", "a"), "rtmp://backup:1935/live/a");
        let rule = Rule::parse("*/movie=rtmps://live.example.com/app/KEY").unwrap();
        assert!(rule.matches("game", "movie") && !rule.matches("game", "other"));
        for bad in [
            "live=rtmp://x/a/b",
            "live/a",
            "../a=rtmp://x/a/b",
            "live/a=ftp://x/a/b",
            "live/a=not a url",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }
}
