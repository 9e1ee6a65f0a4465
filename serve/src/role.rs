//! How a node's role plugs in. The serving side (listeners, fan-out, HLS) is the same on
//! every node; what differs is asked of the [`Role`]: may this client publish, and where
//! does the stream a viewer asks for come from. An origin checks channel keys and holds
//! stream leases; an edge refuses publishers and pulls streams from their origins.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use media::hub::{Hub, Publisher};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::fanout::Lanes;
use crate::hooks::Hooks;
use crate::metrics::{Metrics, Protocol};

/// What a role decides for the node it runs on.
#[async_trait::async_trait]
pub trait Role: Send + Sync + 'static {
    /// A client asks to publish. On success the role has claimed the stream in the hub.
    async fn publish(&self, request: &PublishRequest<'_>) -> Result<Publishing, Refusal>;

    /// A viewer asks for the hub stream `stream`; `attach` attaches it to the local hub
    /// and says whether it could. An origin tries once; an edge pulls the stream from its
    /// origin on a miss and tries again once the pull is ready. Returns what the last
    /// `attach` said.
    async fn attach(&self, stream: &str, attach: &mut (dyn FnMut() -> bool + Send)) -> bool;

    /// The node shuts down (publishers have been told to end): stop what the role runs
    /// and give back what it holds in the registry, by `deadline` at the latest.
    async fn shut_down(&self, deadline: Instant);

    /// Whether this node may serve `stream` to another node (an edge) as its owner: an
    /// origin whose lease has run out unrenewed (cut off from the registry) may not, since
    /// the stream may have another owner by now.
    fn owns(&self, _stream: &str) -> bool {
        true
    }

    /// Append the role's own metrics (Prometheus text) to `out`.
    fn metrics(&self, _out: &mut String) {}
}

/// What a role shares with the node it serves: the streams, their fan-outs (which an
/// origin's forwards join as RTMP viewers do), the counters and the hooks.
#[derive(Clone)]
pub struct Shared {
    pub hub: Arc<Hub>,
    pub lanes: Arc<Lanes>,
    pub metrics: Arc<Metrics>,
    pub hooks: Arc<Hooks>,
}

impl Shared {
    /// Viewers per stream right now (for the node's heartbeat).
    pub fn viewers_by_stream(&self) -> impl Iterator<Item = (String, u64)> {
        (self.hub.list().into_iter()).map(|stream| (stream.name, stream.viewers as u64))
    }

    /// Bytes sent to clients since the node started.
    pub fn bytes_out(&self) -> u64 {
        self.metrics.bytes_out_total.load(Ordering::Relaxed)
    }
}

/// What a client asked to publish.
#[derive(Debug, Clone, Copy)]
pub struct PublishRequest<'a> {
    pub app: &'a str,
    /// What it sent: a channel key, or a room name.
    pub name: &'a str,
    /// The query of its URL (without `?`), for the `on_publish` hook.
    pub query: &'a str,
    pub peer: SocketAddr,
    pub protocol: Protocol,
}

/// A publish the role accepted: the hub's publisher, and what the role holds for the
/// stream while it is live (an origin: its lease), given back when dropped.
pub struct Publishing {
    pub publisher: Publisher,
    pub hold: Hold,
}

/// What a role holds for a live publish; dropping it gives it back.
pub struct Hold {
    eviction: Option<Eviction>,
    _held: Option<Box<dyn Send + Sync>>,
}

impl Hold {
    /// Nothing held (a node without a registry).
    pub fn nothing() -> Hold {
        Hold {
            eviction: None,
            _held: None,
        }
    }

    /// `held` is given back when the hold is dropped; `eviction` tells the publisher to go.
    pub fn new(eviction: Eviction, held: impl Send + Sync + 'static) -> Hold {
        Hold {
            eviction: Some(eviction),
            _held: Some(Box::new(held)),
        }
    }

    /// The same hold, also keeping `more` until it is dropped.
    pub fn also(self, more: impl Send + Sync + 'static) -> Hold {
        Hold {
            eviction: self.eviction,
            _held: Some(Box::new((self._held, more))),
        }
    }

    /// Resolves when the role wants the publisher gone (kicked, or the stream moved).
    pub async fn evicted(&self) {
        match &self.eviction {
            Some(eviction) => eviction.wait().await,
            None => std::future::pending().await,
        }
    }
}

/// Tells a publisher's connection to go (kicked by an operator, or the stream moved).
#[derive(Clone, Default)]
pub struct Eviction(Arc<Notify>);

impl Eviction {
    pub async fn wait(&self) {
        self.0.notified().await
    }

    pub fn evict(&self) {
        self.0.notify_one();
    }
}

/// Why a publish was refused, as the RTMP status the client gets.
#[derive(Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub description: String,
    /// The stream has a publisher already (here or on another node): for protocols that
    /// say so apart from a wrong name (WHIP's 409).
    pub taken: bool,
}

impl Refusal {
    /// `NetStream.Publish.BadName`: the name is wrong.
    pub fn bad_name(description: impl Into<String>) -> Self {
        Refusal {
            code: "NetStream.Publish.BadName",
            description: description.into(),
            taken: false,
        }
    }

    /// `NetStream.Publish.BadName` too, as RTMP publishers know it: the stream is taken.
    pub fn taken(description: impl Into<String>) -> Self {
        Refusal {
            taken: true,
            ..Refusal::bad_name(description)
        }
    }

    /// `NetStream.Publish.Failed`: the name may be fine but the publish cannot happen now.
    pub fn failed(description: impl Into<String>) -> Self {
        Refusal {
            code: "NetStream.Publish.Failed",
            description: description.into(),
            taken: false,
        }
    }
}
