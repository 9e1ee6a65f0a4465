//! Relay URLs, sans-IO: where a relay pushes a stream to (`rtmp://`, `rtmps://`) or pulls
//! one from (the same, or `http://` / `https://` HTTP-FLV).
//!
//! An RTMP URL is `rtmp[s]://[user[:password]@]host[:port]/app/stream[?query]`: the app is
//! everything between the host and the last `/` of the path (`live2`, or `app/inst`), the
//! stream name is the last segment with the query, which servers use for keys and tokens
//! (`rtmp://a.rtmp.youtube.com/live2/KEY`, `rtmps://live-api-s.facebook.com:443/rtmp/KEY?s_bl=1`).
//! Nothing is percent-decoded: servers get the names as written.
//!
//! Stream names are secrets (a stream key is a right to publish), so a [`RelayUrl`] has no
//! `Display` and its `Debug` is [`RelayUrl::redacted`]: logs and API answers use that.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 4096;
/// Longest host name (DNS).
const MAX_HOST_LEN: usize = 253;
/// How many characters of a secret [`RelayUrl::redacted`] shows (of one of 8 or more).
const SHOWN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Rtmp,
    Rtmps,
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 1935 for RTMP, 443 for RTMPS and HTTPS, 80 for HTTP.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Rtmp => 1935,
            Scheme::Rtmps | Scheme::Https => 443,
            Scheme::Http => 80,
        }
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Rtmps | Scheme::Https)
    }

    /// RTMP (app and stream name) rather than HTTP (path).
    pub fn is_rtmp(self) -> bool {
        matches!(self, Scheme::Rtmp | Scheme::Rtmps)
    }
}

/// Why a URL was refused. The messages never quote the URL (it may hold a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("URL is empty")]
    Empty,
    #[error("URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("URL contains spaces or control characters")]
    InvalidCharacter,
    #[error("URL has no scheme (expected rtmp://, rtmps://, http:// or https://)")]
    MissingScheme,
    #[error("unsupported URL scheme {0:?} (expected rtmp, rtmps, http or https)")]
    UnsupportedScheme(String),
    #[error("URL has no host")]
    MissingHost,
    #[error("invalid host in URL")]
    InvalidHost,
    #[error("invalid port in URL (expected 1 to 65535)")]
    InvalidPort,
    #[error("RTMP URL has no application (expected rtmp://host/app/stream)")]
    MissingApp,
    #[error("RTMP URL has no stream name (expected rtmp://host/app/stream)")]
    MissingStream,
}

/// A parsed relay URL. Hosts are lower-cased, IPv6 literals kept without brackets.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    /// The URL named the port (it then goes into tcUrl and Host as written).
    explicit_port: bool,
    user: Option<String>,
    password: Option<String>,
    /// RTMP: the app; HTTP: empty.
    app: String,
    /// RTMP: the stream name with its query; HTTP: empty.
    stream: String,
    /// HTTP: the path and query (at least `/`), without a fragment; RTMP: empty.
    path: String,
}

impl RelayUrl {
    pub fn parse(input: &str) -> Result<RelayUrl, UrlError> {
        if input.is_empty() {
            return Err(UrlError::Empty);
        }
        if input.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        if input.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(UrlError::InvalidCharacter);
        }
        let (scheme, rest) = input.split_once("://").ok_or(UrlError::MissingScheme)?;
        let scheme = parse_scheme(scheme)?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None | Some("") => (None, None),
            Some(userinfo) => match userinfo.split_once(':') {
                Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
                None => (Some(userinfo.to_owned()), None),
            },
        };
        let (host, port) = parse_host_port(host_port)?;
        let mut url = RelayUrl {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
            explicit_port: port.is_some(),
            user,
            password,
            app: String::new(),
            stream: String::new(),
            path: String::new(),
        };
        if scheme.is_rtmp() {
            let (app, stream) = parse_rtmp_path(tail)?;
            url.app = app.to_owned();
            url.stream = stream.to_owned();
        } else {
            let path = tail.split_once('#').map_or(tail, |(path, _)| path);
            url.path = match path.chars().next() {
                Some('/') => path.to_owned(),
                _ => format!("/{path}"),
            };
        }
        Ok(url)
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host name or IP address (an IPv6 address without brackets): what to resolve
    /// and the TLS server name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default when the URL names none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host[:port]` as a URL writes it (IPv6 in brackets; the port only if the URL named
    /// it): the `Host` header, and the authority of the tcUrl.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.explicit_port {
            format!("{host}:{}", self.port)
        } else {
            host
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// RTMP: the application (`live2`, `app/inst`). Empty for HTTP.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// RTMP: the stream name to publish or play, with its query (`KEY`, `KEY?token=x`).
    /// Empty for HTTP.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// HTTP: the request target, path and query (`/live/room.flv?token=x`). Empty for RTMP.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// RTMP: the `tcUrl` of `connect`, `rtmp[s]://host[:port]/app`.
    pub fn tc_url(&self) -> String {
        format!(
            "{}://{}/{}",
            self.scheme.as_str(),
            self.authority(),
            self.app
        )
    }

    /// The URL safe for logs and API answers: no password, and the stream name (RTMP) or
    /// the last path segment (HTTP) and every query value cut to their first 4 characters
    /// and `…` (fewer for short ones), so that no key or token ever appears whole.
    pub fn redacted(&self) -> String {
        let mut out = format!("{}://", self.scheme.as_str());
        if let Some(user) = &self.user {
            out.push_str(user);
            if self.password.is_some() {
                out.push_str(":…");
            }
            out.push('@');
        }
        out.push_str(&self.authority());
        let (dir, last) = if self.scheme.is_rtmp() {
            (self.app.as_str(), self.stream.as_str())
        } else {
            let path = &self.path[1..];
            path.rsplit_once('/').unwrap_or(("", path))
        };
        let (name, query) = match last.split_once('?') {
            Some((name, query)) => (name, Some(query)),
            None => (last, None),
        };
        out.push('/');
        if !dir.is_empty() {
            out.push_str(dir);
            out.push('/');
        }
        out.push_str(&shorten(name));
        if let Some(query) = query {
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((key, value)) => {
                        out.push_str(key);
                        out.push('=');
                        out.push_str(&shorten(value));
                    }
                    None => out.push_str(&shorten(pair)),
                }
            }
        }
        out
    }
}

impl FromStr for RelayUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RelayUrl::parse(s)
    }
}

/// Redacted: a URL in a `{:?}` must not leak its key.
impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayUrl({})", self.redacted())
    }
}

/// `template` with `{app}` and `{room}` replaced, in one pass (a name that contains
/// `{room}` is not expanded again). Other braces are kept.
pub fn expand(template: &str, app: &str, room: &str) -> String {
    let mut out = String::with_capacity(template.len() + app.len() + room.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("{app}") {
            out.push_str(app);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{room}") {
            out.push_str(room);
            rest = after;
        } else {
            out.push('{');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The first 4 characters of a secret and `…`; of one shorter than 8, the first half.
fn shorten(secret: &str) -> String {
    let len = secret.chars().count();
    if len == 0 {
        return String::new();
    }
    let shown = if len >= 2 * SHOWN { SHOWN } else { len / 2 };
    let mut out: String = secret.chars().take(shown).collect();
    out.push('…');
    out
}

fn parse_scheme(scheme: &str) -> Result<Scheme, UrlError> {
    let well_formed = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !well_formed {
        return Err(UrlError::MissingScheme);
    }
    match scheme.to_ascii_lowercase().as_str() {
        "rtmp" => Ok(Scheme::Rtmp),
        "rtmps" => Ok(Scheme::Rtmps),
        "http" => Ok(Scheme::Http),
        "https" => Ok(Scheme::Https),
        other => Err(UrlError::UnsupportedScheme(
            other.chars().take(16).collect(),
        )),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port when one is given.
fn parse_host_port(s: &str) -> Result<(String, Option<u16>), UrlError> {
    let (host, port) = if let Some(bracketed) = s.strip_prefix('[') {
        let (v6, after) = bracketed.split_once(']').ok_or(UrlError::InvalidHost)?;
        let v6: Ipv6Addr = v6.parse().map_err(|_| UrlError::InvalidHost)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::InvalidHost)?),
        };
        (v6.to_string(), port)
    } else {
        let (host, port) = match s.split_once(':') {
            // More colons: an IPv6 address without its brackets.
            Some((_, port)) if port.contains(':') => return Err(UrlError::InvalidHost),
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        (parse_host(host)?, port)
    };
    let port = port.map(parse_port).transpose()?;
    Ok((host, port))
}

fn parse_host(host: &str) -> Result<String, UrlError> {
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let name_chars = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if host.len() > MAX_HOST_LEN || !name_chars || host.split('.').any(str::is_empty) {
        return Err(UrlError::InvalidHost);
    }
    // All digits and dots is an IPv4 address or nothing (`1.2.3.999`, `1234`).
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.parse::<Ipv4Addr>().is_err() {
        return Err(UrlError::InvalidHost);
    }
    Ok(host.to_ascii_lowercase())
}

fn parse_port(port: &str) -> Result<u16, UrlError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::InvalidPort);
    }
    port.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or(UrlError::InvalidPort)
}

/// `/app[/inst]/stream[?query]` into the app and the stream name with its query.
fn parse_rtmp_path(tail: &str) -> Result<(&str, &str), UrlError> {
    let path = tail.strip_prefix('/').ok_or(UrlError::MissingApp)?;
    let (before_query, query_len) = match path.find('?') {
        Some(q) => (&path[..q], path.len() - q),
        None => (path, 0),
    };
    let (app, name) = before_query
        .rsplit_once('/')
        .ok_or(if before_query.is_empty() {
            UrlError::MissingApp
        } else {
            UrlError::MissingStream
        })?;
    if app.split('/').any(str::is_empty) {
        return Err(UrlError::MissingApp);
    }
    if name.is_empty() {
        return Err(UrlError::MissingStream);
    }
    // The stream name runs from after the last '/' to the end, query included.
    let stream = &path[app.len() + 1..];
    debug_assert_eq!(stream.len(), name.len() + query_len);
    Ok((app, stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url(s: &str) -> RelayUrl {
        RelayUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> UrlError {
        RelayUrl::parse(s).expect_err(s)
    }

    #[test]
    fn rtmp_urls() {
        let u = url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop");
        assert_eq!(u.scheme(), Scheme::Rtmp);
        assert_eq!(u.host(), "a.rtmp.youtube.com");
        assert_eq!(u.port(), 1935);
        assert_eq!(u.app(), "live2");
        assert_eq!(u.stream(), "abcd-efgh-ijkl-mnop");
        assert_eq!(u.tc_url(), "rtmp://a.rtmp.youtube.com/live2");
        assert_eq!(u.path(), "");
        assert_eq!(u.redacted(), "rtmp://a.rtmp.youtube.com/live2/abcd…");

        let u = url("rtmps://live-api-s.facebook.com:443/rtmp/FB-1234567890-0-AbCdEf?s_bl=1&s_sc=9876543210");
        assert_eq!(u.scheme(), Scheme::Rtmps);
        assert!(u.scheme().is_tls());
        assert_eq!(u.port(), 443);
        assert_eq!(u.app(), "rtmp");
        assert_eq!(u.stream(), "FB-1234567890-0-AbCdEf?s_bl=1&s_sc=9876543210");
        assert_eq!(u.tc_url(), "rtmps://live-api-s.facebook.com:443/rtmp");
        assert_eq!(
            u.redacted(),
            "rtmps://live-api-s.facebook.com:443/rtmp/FB-1…?s_bl=…&s_sc=9876…"
        );

        let u = url("RTMP://User:Secret@Example.COM:1936/app/inst/name?token=a/b");
        assert_eq!(u.host(), "example.com");
        assert_eq!(u.port(), 1936);
        assert_eq!((u.user(), u.password()), (Some("User"), Some("Secret")));
        assert_eq!(u.app(), "app/inst");
        assert_eq!(u.stream(), "name?token=a/b");
        assert_eq!(u.tc_url(), "rtmp://example.com:1936/app/inst");
        assert_eq!(
            u.redacted(),
            "rtmp://User:…@example.com:1936/app/inst/na…?token=a…"
        );

        let u = url("rtmp://[::1]:1935/live/room");
        assert_eq!(u.host(), "::1");
        assert_eq!(u.authority(), "[::1]:1935");
        assert_eq!(u.tc_url(), "rtmp://[::1]:1935/live");
        let u = url("rtmps://127.0.0.1/live/room");
        assert_eq!((u.host(), u.port()), ("127.0.0.1", 443));
    }

    #[test]
    fn http_urls() {
        let u = url("http://127.0.0.1:8080/live/room.flv");
        assert_eq!(u.scheme(), Scheme::Http);
        assert_eq!(u.port(), 8080);
        assert_eq!(u.path(), "/live/room.flv");
        assert_eq!((u.app(), u.stream()), ("", ""));
        assert_eq!(u.redacted(), "http://127.0.0.1:8080/live/room…");
        let u = url("https://cdn.example.com/live/room.flv?token=0123456789#frag");
        assert_eq!(u.port(), 443);
        assert_eq!(u.path(), "/live/room.flv?token=0123456789");
        assert_eq!(
            u.redacted(),
            "https://cdn.example.com/live/room…?token=0123…"
        );
        assert_eq!(url("http://h").path(), "/");
        assert_eq!(url("http://h?x=1").path(), "/?x=1");
        assert_eq!(
            url("http://[2001:db8::1]/a.flv").authority(),
            "[2001:db8::1]"
        );
        assert_eq!(url("http://u@h/a.flv").redacted(), "http://u@h/a.…");
    }

    #[test]
    fn malformed_urls() {
        assert_eq!(err(""), UrlError::Empty);
        assert_eq!(err("a.rtmp.youtube.com/live2/key"), UrlError::MissingScheme);
        assert_eq!(err("://host/app/key"), UrlError::MissingScheme);
        assert_eq!(
            err("srt://host:9000/app/key"),
            UrlError::UnsupportedScheme("srt".into())
        );
        assert_eq!(err("rtmp:///live/key"), UrlError::MissingHost);
        assert_eq!(err("rtmp://user@/live/key"), UrlError::MissingHost);
        assert_eq!(err("rtmp://ho st/live/key"), UrlError::InvalidCharacter);
        assert_eq!(err("rtmp://host/live/key\n"), UrlError::InvalidCharacter);
        assert_eq!(err("rtmp://h_ö/live/key"), UrlError::InvalidHost);
        assert_eq!(err("rtmp://a..b/live/key"), UrlError::InvalidHost);
        assert_eq!(err("rtmp://1.2.3.999/live/key"), UrlError::InvalidHost);
        assert_eq!(err("rtmp://[::1/live/key"), UrlError::InvalidHost);
        assert_eq!(err("rtmp://[zz::1]/live/key"), UrlError::InvalidHost);
        assert_eq!(err("rtmp://[::1]x/live/key"), UrlError::InvalidHost);
        assert_eq!(err("rtmp://::1/live/key"), UrlError::InvalidHost);
        assert_eq!(err("rtmp://host:/live/key"), UrlError::InvalidPort);
        assert_eq!(err("rtmp://host:0/live/key"), UrlError::InvalidPort);
        assert_eq!(err("rtmp://host:65536/live/key"), UrlError::InvalidPort);
        assert_eq!(err("rtmp://host:+80/live/key"), UrlError::InvalidPort);
        assert_eq!(err("rtmp://host"), UrlError::MissingApp);
        assert_eq!(err("rtmp://host/"), UrlError::MissingApp);
        assert_eq!(err("rtmp://host?key"), UrlError::MissingApp);
        assert_eq!(err("rtmp://host/live"), UrlError::MissingStream);
        assert_eq!(err("rtmp://host/live/"), UrlError::MissingStream);
        assert_eq!(err("rtmp://host/live/?key=1"), UrlError::MissingStream);
        assert_eq!(err("rtmp://host//key"), UrlError::MissingApp);
        assert_eq!(err("rtmp://host/a//key"), UrlError::MissingApp);
        assert_eq!(
            err(&format!("rtmp://h/a/{}", "k".repeat(5000))),
            UrlError::TooLong
        );
        // Errors never quote the URL.
        assert!(!err("rtmp://myserver/live/")
            .to_string()
            .contains("myserver"));
    }

    #[test]
    fn short_secrets_are_never_whole() {
        assert_eq!(shorten(""), "");
        assert_eq!(shorten("a"), "…");
        assert_eq!(shorten("abcdefg"), "abc…");
        assert_eq!(shorten("abcdefgh"), "abcd…");
        assert_eq!(shorten("ключ-ключ-ключ"), "ключ…");
    }

    #[test]
    fn debug_is_redacted() {
        let u = url("rtmp://u:pw@host/live/sk_secretsecret");
        let debug = format!("{u:?}");
        assert!(
            !debug.contains("secretsecret") && !debug.contains("pw"),
            "{debug}"
        );
    }

    #[test]
    fn expand_templates() {
        assert_eq!(
            expand("rtmp://h/{app}/{room}?x={room}", "live", "movie"),
            "rtmp://h/live/movie?x=movie"
        );
        assert_eq!(expand("{app}{room}", "{room}", "r"), "{room}r");
        assert_eq!(expand("{ {ap} {app", "a", "r"), "{ {ap} {app");
        assert_eq!(expand("", "a", "r"), "");
    }

    /// A key as services hand them out: letters, digits, `-` and `_`.
    fn key() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{12,48}"
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = RelayUrl::parse(&s);
        }

        #[test]
        fn url_like_input_never_panics(
            scheme in "(rtmps?|https?|RTMP|x)",
            middle in "[a-z0-9:@\\[\\]./?#&=%_-]{0,60}",
        ) {
            if let Ok(u) = RelayUrl::parse(&format!("{scheme}://{middle}")) {
                let _ = (u.redacted(), u.tc_url(), u.authority());
            }
        }

        #[test]
        fn rtmp_parts_round_trip(
            tls in any::<bool>(),
            host in "[a-z][a-z0-9-]{0,8}(\\.[a-z0-9]{1,5}){0,3}",
            port in proptest::option::of(1u16..),
            app in "[a-z0-9_-]{1,8}(/[a-z0-9_-]{1,8})?",
            key in key(),
            query in proptest::option::of(("[a-z]{1,5}", key())),
            password in proptest::option::of(key()),
        ) {
            let scheme = if tls { "rtmps" } else { "rtmp" };
            let userinfo = password.as_ref().map(|p| format!("user:{p}@")).unwrap_or_default();
            let authority = match port {
                Some(port) => format!("{host}:{port}"),
                None => host.clone(),
            };
            let stream = match &query {
                Some((name, value)) => format!("{key}?{name}={value}"),
                None => key.clone(),
            };
            let s = format!("{scheme}://{userinfo}{authority}/{app}/{stream}");
            let u = RelayUrl::parse(&s).unwrap();
            prop_assert_eq!(u.host(), host.as_str());
            let default_port = if tls { 443 } else { 1935 };
            prop_assert_eq!(u.port(), port.unwrap_or(default_port));
            prop_assert_eq!(u.app(), app.as_str());
            prop_assert_eq!(u.stream(), stream.as_str());
            prop_assert_eq!(u.tc_url(), format!("{scheme}://{authority}/{app}"));
            let redacted = u.redacted();
            prop_assert!(!redacted.contains(&key), "{}", redacted);
            if let Some((_, value)) = &query {
                prop_assert!(!redacted.contains(value.as_str()), "{}", redacted);
            }
            if let Some(password) = &password {
                prop_assert!(!redacted.contains(password.as_str()), "{}", redacted);
            }
        }

        #[test]
        fn http_secrets_are_redacted(
            dirs in "(/[a-z0-9]{1,6}){0,3}",
            name in key(),
            token in key(),
        ) {
            let u = RelayUrl::parse(&format!("https://cdn.example{dirs}/{name}.flv?token={token}")).unwrap();
            let redacted = u.redacted();
            prop_assert!(!redacted.contains(&name) && !redacted.contains(&token), "{}", redacted);
        }

        #[test]
        fn expand_replaces_every_placeholder(
            parts in proptest::collection::vec("[a-z/:{}]{0,6}", 0..6),
            app in "[a-z]{1,8}",
            room in "[a-z]{1,8}",
        ) {
            let template = parts.join("{room}");
            let expanded = expand(&template, &app, &room);
            prop_assert_eq!(expanded, template.replace("{app}", &app).replace("{room}", &room));
        }
    }
}
