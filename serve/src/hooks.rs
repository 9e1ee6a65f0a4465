//! HTTP hooks: the operator's service is told, or asked, when streams and players come and
//! go, as SRS's `http_hooks` and MediaMTX's `runOnReady` do.
//!
//! `on_publish` and `on_play` are questions: the node waits for the answer, up to the
//! configured timeout, and a 2xx allows while any other status refuses. A hook that does
//! not answer in time (or cannot be reached) allows or refuses as `fail_open` says, so an
//! operator chooses between "streams go on when the hook server is down" and "nobody gets
//! in unchecked". `on_unpublish`, `on_stop`, `on_record_done` and `on_relay` are
//! notifications: they go into a bounded queue and are sent in the background with
//! retries, so a slow hook server never holds up media; what the queue cannot take, or
//! what still fails after the retries, is counted as dropped.
//!
//! Every call is a `POST` of a JSON object: the action, the node, the stream (app, room),
//! the client's address, the protocol and the query of the client's URL (so that a
//! player's token reaches the hook), and what the event adds (a recording's file, a
//! relay's state). With a secret, `X-Ferrolive-Signature: sha256=HEX` carries the
//! HMAC-SHA256 of the body, for the hook server to check it came from us.
//!
//! The client is a few lines of HTTP/1.1 over [`media::http::response`] rather than a
//! general HTTP client: hooks are plain `http://` URLs on the operator's own network, one
//! request per connection.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use media::http::response::take_response_head;
use media::token::HmacKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

/// The events a hook can be set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    Publish,
    Play,
    Unpublish,
    Stop,
    RecordDone,
    Relay,
}

impl HookEvent {
    pub const ALL: [HookEvent; 6] = [
        HookEvent::Publish,
        HookEvent::Play,
        HookEvent::Unpublish,
        HookEvent::Stop,
        HookEvent::RecordDone,
        HookEvent::Relay,
    ];

    /// The `action` in the body, and the name of the hook's option (`on-publish`, ...).
    pub fn action(self) -> &'static str {
        match self {
            HookEvent::Publish => "on_publish",
            HookEvent::Play => "on_play",
            HookEvent::Unpublish => "on_unpublish",
            HookEvent::Stop => "on_stop",
            HookEvent::RecordDone => "on_record_done",
            HookEvent::Relay => "on_relay",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A hook's URL: `http://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUrl {
    /// What the `Host` header says, and where to connect.
    authority: String,
    /// Path and query.
    target: String,
    text: String,
}

impl HookUrl {
    pub fn parse(text: &str) -> Result<HookUrl, String> {
        let Some(rest) = text.strip_prefix("http://") else {
            return Err(format!(
                "hook URL {text:?}: only http:// (hooks run on the operator's own network)"
            ));
        };
        let (authority, target) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !valid(authority) || authority.contains('@') || !valid(target) {
            return Err(format!("hook URL {text:?}: not a valid http:// URL"));
        }
        Ok(HookUrl {
            authority: authority.to_owned(),
            target: target.to_owned(),
            text: text.to_owned(),
        })
    }

    /// Where to connect: the authority, with port 80 when it names none.
    fn address(&self) -> String {
        let has_port = match self.authority.rfind(']') {
            Some(bracket) => self.authority[bracket..].contains(':'),
            None => self.authority.contains(':'),
        };
        if has_port {
            self.authority.clone()
        } else {
            format!("{}:80", self.authority)
        }
    }
}

impl std::fmt::Display for HookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// One URL (or none) per [`HookEvent`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookUrls([Option<HookUrl>; HookEvent::ALL.len()]);

impl HookUrls {
    pub fn set(&mut self, event: HookEvent, url: HookUrl) {
        self.0[event.index()] = Some(url);
    }

    pub fn get(&self, event: HookEvent) -> Option<&HookUrl> {
        self.0[event.index()].as_ref()
    }
}

#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// Hooks for every app.
    pub global: HookUrls,
    /// An app's own hooks; an event it sets none for falls back to the global one.
    pub apps: BTreeMap<String, HookUrls>,
    /// How long a question (`on_publish`, `on_play`) waits for its answer, and how long
    /// each attempt at a notification may take.
    pub timeout: Duration,
    /// A question that gets no answer in time (or cannot be asked) allows.
    pub fail_open: bool,
    /// Signs bodies (`X-Ferrolive-Signature`).
    pub secret: Option<HmacKey>,
    /// The node's id, in every body.
    pub node: String,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            global: HookUrls::default(),
            apps: BTreeMap::new(),
            timeout: Duration::from_secs(2),
            fail_open: false,
            secret: None,
            node: String::new(),
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone, Default)]
pub struct HookRequest {
    pub app: String,
    pub room: String,
    /// The client (a publisher or player); none for what the node does itself.
    pub client: Option<SocketAddr>,
    /// `rtmp`, `http-flv`, `hls`, ... (a label of [`crate::metrics::Protocol`]).
    pub protocol: &'static str,
    /// The query of the client's URL, as sent (without `?`).
    pub query: String,
    /// What the event adds (a recording's `file`, a relay's `url` and `state`).
    pub extra: Vec<(&'static str, String)>,
}

impl HookRequest {
    /// A request about `stream` (`app/room`).
    pub fn for_stream(stream: &str, protocol: &'static str) -> HookRequest {
        let (app, room) = stream.split_once('/').unwrap_or(("", stream));
        HookRequest {
            app: app.to_owned(),
            room: room.to_owned(),
            protocol,
            ..HookRequest::default()
        }
    }
}

/// Why a question was answered no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookRefusal {
    #[error("refused by the {action} hook (HTTP {status})")]
    Refused { action: &'static str, status: u16 },
    #[error("the {action} hook did not answer: {why}")]
    Unanswered { action: &'static str, why: String },
}

/// Why a hook call failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Response(#[from] media::http::response::ResponseError),
    #[error("the connection closed before an answer")]
    Closed,
}

/// Longest response head read from a hook.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
/// Notifications waiting to be sent, at most; more are dropped.
const QUEUE: usize = 1024;
/// Notifications being sent at once.
const IN_FLIGHT: usize = 16;
/// Waits before a notification's second and third attempts.
const RETRY_AFTER: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];

/// A node's hooks: ask them, or queue notifications for them.
pub struct Hooks {
    config: HooksConfig,
    queue: Option<mpsc::Sender<Call>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    refused: AtomicU64,
    unanswered: AtomicU64,
    notified: AtomicU64,
    dropped: AtomicU64,
}

impl Hooks {
    /// Hooks as configured; with any notification set, starts the task that sends them
    /// (so this runs in a tokio runtime).
    pub fn new(config: HooksConfig) -> Hooks {
        let counters = Arc::new(Counters::default());
        let notifies = |urls: &HookUrls| {
            [
                HookEvent::Unpublish,
                HookEvent::Stop,
                HookEvent::RecordDone,
                HookEvent::Relay,
            ]
            .iter()
            .any(|e| urls.get(*e).is_some())
        };
        let queue = (notifies(&config.global) || config.apps.values().any(notifies)).then(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(send_notifications(
                receiver,
                config.timeout,
                counters.clone(),
            ));
            sender
        });
        Hooks {
            config,
            queue,
            counters,
        }
    }

    /// No hooks at all.
    pub fn none() -> Hooks {
        Hooks {
            config: HooksConfig::default(),
            queue: None,
            counters: Arc::default(),
        }
    }

    /// The hook for `event` in `app`, if any.
    pub fn url(&self, event: HookEvent, app: &str) -> Option<&HookUrl> {
        let own = self.config.apps.get(app).and_then(|urls| urls.get(event));
        own.or_else(|| self.config.global.get(event))
    }

    /// Whether plays in `app` have a hook (`on_play` or `on_stop`) to hear of them.
    pub fn watch_plays(&self, app: &str) -> bool {
        self.url(HookEvent::Play, app).is_some() || self.url(HookEvent::Stop, app).is_some()
    }

    /// Ask the hook for `event` (`on_publish`, `on_play`) whether `request` may go on:
    /// allowed at once without one.
    pub async fn ask(&self, event: HookEvent, request: &HookRequest) -> Result<(), HookRefusal> {
        let Some(url) = self.url(event, &request.app) else {
            return Ok(());
        };
        let call = self.call(url, event, request);
        let action = event.action();
        match call.post(self.config.timeout).await {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                info!(hook = %url, action, stream = %format_args!("{}/{}", request.app, request.room), status, "refused by hook");
                Err(HookRefusal::Refused { action, status })
            }
            Err(e) => {
                self.counters.unanswered.fetch_add(1, Ordering::Relaxed);
                let allow = self.config.fail_open;
                warn!(hook = %url, action, error = %e, allowed = allow, "hook did not answer");
                if allow {
                    Ok(())
                } else {
                    Err(HookRefusal::Unanswered {
                        action,
                        why: e.to_string(),
                    })
                }
            }
        }
    }

    /// Queue a notification of `event` (`on_unpublish`, `on_stop`, ...), if it has a hook.
    pub fn notify(&self, event: HookEvent, request: &HookRequest) {
        let (Some(url), Some(queue)) = (self.url(event, &request.app), &self.queue) else {
            return;
        };
        if queue.try_send(self.call(url, event, request)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A [`NotifyOnDrop`] for `event` about `request`, if `event` has a hook.
    pub fn notify_on_drop(
        self: &Arc<Self>,
        event: HookEvent,
        request: HookRequest,
    ) -> Option<NotifyOnDrop> {
        self.url(event, &request.app)?;
        Some(NotifyOnDrop {
            hooks: self.clone(),
            event,
            request: Box::new(request),
            armed: true,
        })
    }

    /// The call to `url` that tells it of `event`: a JSON body, signed with the secret.
    fn call(&self, url: &HookUrl, event: HookEvent, request: &HookRequest) -> Call {
        let mut json = String::with_capacity(256);
        let mut field = |name: &str, value: &str| {
            json.push(if json.is_empty() { '{' } else { ',' });
            json.push_str(&crate::json::string(name));
            json.push(':');
            json.push_str(&crate::json::string(value));
        };
        field("action", event.action());
        field("node", &self.config.node);
        field("app", &request.app);
        field("room", &request.room);
        field("stream", &format!("{}/{}", request.app, request.room));
        if let Some(client) = request.client {
            field("client", &client.to_string());
            field("ip", &client.ip().to_string());
        }
        field("protocol", request.protocol);
        field("query", &request.query);
        for (name, value) in &request.extra {
            field(name, value);
        }
        let now = media::calendar::unix_now_ms();
        field("time", &media::calendar::rfc3339_millis(now));
        json.push('}');
        let signature = self.config.secret.as_ref().map(|key| {
            let mut hex = String::from("sha256=");
            for byte in key.sign(json.as_bytes()) {
                let _ = write!(hex, "{byte:02x}");
            }
            hex
        });
        Call {
            url: url.clone(),
            body: json.into_bytes(),
            signature,
        }
    }

    /// The hooks' counters, as Prometheus text.
    pub fn metrics(&self, out: &mut String) {
        let c = &self.counters;
        let mut counter = |name: &str, help: &str, value: &AtomicU64| {
            let _ = write!(
                out,
                "# HELP ferrolive_{name} {help}\n# TYPE ferrolive_{name} counter\nferrolive_{name} {}\n",
                value.load(Ordering::Relaxed)
            );
        };
        counter(
            "hook_refusals_total",
            "Publishes and plays a hook answered no.",
            &c.refused,
        );
        counter(
            "hook_unanswered_total",
            "Hook questions without an answer in time (allowed or refused by --hook-fail-open).",
            &c.unanswered,
        );
        counter(
            "hook_notifications_total",
            "Hook notifications delivered.",
            &c.notified,
        );
        counter(
            "hook_notifications_dropped_total",
            "Hook notifications dropped: the queue was full or every attempt failed.",
            &c.dropped,
        );
    }
}

/// Notifies its event's hook when dropped: `on_stop` when a player that was let in goes,
/// `on_unpublish` when a publish ends.
pub struct NotifyOnDrop {
    hooks: Arc<Hooks>,
    event: HookEvent,
    // Boxed: it is held by every player while it plays, most of them never told.
    request: Box<HookRequest>,
    armed: bool,
}

impl NotifyOnDrop {
    /// Drop it without notifying: what it was to tell of never began.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.hooks.notify(self.event, &self.request);
        }
    }
}

/// Send queued notifications, a few at a time, each tried up to three times.
async fn send_notifications(
    mut queue: mpsc::Receiver<Call>,
    timeout: Duration,
    counters: Arc<Counters>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(call) = queue.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let counters = counters.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let url = &call.url;
            for attempt in 0..=RETRY_AFTER.len() {
                match call.post(timeout).await {
                    // A 4xx will not change by asking again.
                    Ok(status) if status < 500 => {
                        counters.notified.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(status) => warn!(hook = %url, status, attempt, "hook notification refused"),
                    Err(e) => warn!(hook = %url, error = %e, attempt, "hook notification failed"),
                }
                if let Some(wait) = RETRY_AFTER.get(attempt) {
                    tokio::time::sleep(*wait).await;
                }
            }
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        });
    }
}

/// One POST to a hook.
struct Call {
    url: HookUrl,
    body: Vec<u8>,
    /// `sha256=HEX` of the body's HMAC under the hook secret.
    signature: Option<String>,
}

impl Call {
    /// Send it (one connection, closed after): the response's status.
    async fn post(&self, timeout: Duration) -> Result<u16, CallError> {
        let url = &self.url;
        let call = async {
            let mut socket = TcpStream::connect(url.address()).await?;
            let _ = socket.set_nodelay(true);
            let mut head = format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrolive\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n",
                url.target,
                url.authority,
                self.body.len()
            );
            if let Some(signature) = &self.signature {
                let _ = write!(head, "X-Ferrolive-Signature: {signature}\r\n");
            }
            head.push_str("\r\n");
            let mut request = head.into_bytes();
            request.extend_from_slice(&self.body);
            socket.write_all(&request).await?;
            let mut buf = BytesMut::with_capacity(1024);
            loop {
                if let Some(head) = take_response_head(&mut buf, MAX_RESPONSE_HEAD)? {
                    return Ok(head.status);
                }
                if socket.read_buf(&mut buf).await? == 0 {
                    return Err(CallError::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| CallError::Timeout(timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A hook server answering every request with `status` after `delay`, handing what it
    /// got (head and body) to the test.
    async fn hook_server(
        status: u16,
        delay: Duration,
    ) -> (String, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?x=1", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Until the body is in (the head ends, then Content-Length bytes).
                    loop {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got).to_string();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .and_then(|l| l.parse().ok())
                                .unwrap_or(0);
                            if body.len() >= len {
                                break;
                            }
                        }
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&got).to_string());
                    tokio::time::sleep(delay).await;
                    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, rx)
    }

    fn hooks_at(url: &str, events: &[HookEvent], fail_open: bool) -> Hooks {
        let mut global = HookUrls::default();
        for event in events {
            global.set(*event, HookUrl::parse(url).unwrap());
        }
        Hooks::new(HooksConfig {
            global,
            timeout: Duration::from_millis(300),
            fail_open,
            secret: Some(HmacKey::new(b"hook secret")),
            node: "n1".into(),
            ..HooksConfig::default()
        })
    }

    fn play_request() -> HookRequest {
        HookRequest {
            client: Some("192.0.2.9:4000".parse().unwrap()),
            query: "token=\"t\"".into(),
            ..HookRequest::for_stream("live/room", "http-flv")
        }
    }

    #[tokio::test]
    async fn a_question_is_allowed_by_2xx_and_refused_otherwise_with_a_signed_body() {
        let (url, mut got) = hook_server(204, Duration::ZERO).await;
        let hooks = hooks_at(&url, &[HookEvent::Play], false);
        assert_eq!(hooks.ask(HookEvent::Play, &play_request()).await, Ok(()));
        let request = got.recv().await.unwrap();
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{head}");
        for field in [
            r#""action":"on_play""#,
            r#""node":"n1""#,
            r#""app":"live""#,
            r#""room":"room""#,
            r#""stream":"live/room""#,
            r#""client":"192.0.2.9:4000""#,
            r#""ip":"192.0.2.9""#,
            r#""protocol":"http-flv""#,
            r#""query":"token=\"t\"""#,
        ] {
            assert!(body.contains(field), "{field} in {body}");
        }
        let signature = head
            .lines()
            .find_map(|l| l.strip_prefix("X-Ferrolive-Signature: sha256="))
            .unwrap();
        let expected: String = HmacKey::new(b"hook secret")
            .sign(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(signature, expected);
        // Events without a hook are allowed at once.
        assert_eq!(hooks.ask(HookEvent::Publish, &play_request()).await, Ok(()));

        let (url, _got) = hook_server(403, Duration::ZERO).await;
        let refused = hooks_at(&url, &[HookEvent::Play], true)
            .ask(HookEvent::Play, &play_request())
            .await;
        assert_eq!(
            refused,
            Err(HookRefusal::Refused {
                action: "on_play",
                status: 403
            })
        );
    }

    #[tokio::test]
    async fn an_unanswered_question_allows_or_refuses_as_configured() {
        let (slow, _got) = hook_server(200, Duration::from_secs(5)).await;
        // A port nothing listens on.
        let down = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", listener.local_addr().unwrap())
        };
        for url in [slow, down] {
            let started = tokio::time::Instant::now();
            let open = hooks_at(&url, &[HookEvent::Publish], true);
            assert_eq!(open.ask(HookEvent::Publish, &play_request()).await, Ok(()));
            let closed = hooks_at(&url, &[HookEvent::Publish], false);
            let refused = closed.ask(HookEvent::Publish, &play_request()).await;
            assert!(
                matches!(refused, Err(HookRefusal::Unanswered { .. })),
                "{refused:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }

    #[tokio::test]
    async fn notifications_are_retried_and_dropped_ones_counted() {
        // A 503 is asked again (three times in all, over 4 s), then counted as dropped.
        let (url, mut got) = hook_server(503, Duration::ZERO).await;
        let hooks = hooks_at(&url, &[HookEvent::Stop], false);
        hooks.notify(HookEvent::Stop, &play_request());
        for _ in 0..3 {
            let request = got.recv().await.unwrap();
            assert!(request.contains(r#""action":"on_stop""#));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(hooks.counters.dropped.load(Ordering::Relaxed), 1);
        assert!(got.try_recv().is_err());
        // Events without a hook queue nothing.
        hooks.notify(HookEvent::Unpublish, &play_request());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(got.try_recv().is_err());
    }

    #[test]
    fn hook_urls_are_plain_http() {
        let url = HookUrl::parse("http://hooks.internal:8085/on?x=1").unwrap();
        assert_eq!(
            (url.address().as_str(), url.target.as_str()),
            ("hooks.internal:8085", "/on?x=1")
        );
        assert_eq!(HookUrl::parse("http://h").unwrap().address(), "h:80");
        assert_eq!(
            HookUrl::parse("http://[::1]/").unwrap().address(),
            "[::1]:80"
        );
        assert_eq!(
            HookUrl::parse("http://[::1]:9/").unwrap().address(),
            "[::1]:9"
        );
        for bad in [
            "https://h/",
            "ftp://h",
            "http://",
            "http://u:p@h/",
            "http://h/a b",
        ] {
            assert!(HookUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
