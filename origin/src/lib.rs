//! The origin role: where broadcasters publish. A publish name is a channel key, checked
//! against the registry and mapped to its room; an admitted stream holds a lease in the
//! registry (see [`lease`]) that edges find it by and that an operator can kick; the node
//! heartbeats its load. Standalone is an origin with an embedded registry and the control
//! API in the same process.
//!
//! The registry may be unreachable: streams already live keep streaming and their leases
//! are retried; new publishes cannot be checked and are refused with a clear status.

mod lease;
pub mod record;
pub mod relay;

use std::future::Future;
use std::sync::Arc;

use media::hub::Hub;
use registry::{redact_key, Heartbeat, Load, NodeIdentity, Registry};
use serve::hooks::{HookEvent, HookRequest, Hooks};
use serve::{
    stream_key, NodeConfig, PublishRequest, Publishing, Refusal, Role, Shared, StartError,
};
use tokio::time::Instant;
use tracing::{info, warn};

use lease::Leases;
pub use lease::LEASE_TTL;
use record::Recordings;
pub use record::{Format as RecordFormat, RecordConfig};
use relay::transport::Tls;
use relay::{Forwards, Pulls};
pub use relay::{PullRule, RelayConfig, Rule as ForwardRule};

/// How an origin runs.
#[derive(Clone)]
pub struct OriginConfig {
    pub node: NodeConfig,
    pub registry: Arc<dyn Registry>,
    /// Publish names are channel keys (the default) or, when false, room names.
    pub require_key: bool,
    /// Who the node is in the registry (role origin or standalone).
    pub identity: NodeIdentity,
    /// Recording, when the node records (`--record-dir`).
    pub record: Option<RecordConfig>,
    /// Forwards and pulls.
    pub relay: RelayConfig,
    /// Trust for `rtmps://` and `https://` relays (see [`Tls::new`]).
    pub tls: Arc<Tls>,
    /// Publishes a channel key may start per minute (0: no limit).
    pub publishes_per_key: u32,
}

/// Serve as an origin until `shutdown` resolves, then shut down gracefully.
pub async fn run(
    config: OriginConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let shared = serve::shared(&config.node);
    let origin = Origin::start(&config, &shared);
    serve::run(config.node, shared, origin, shutdown).await
}

/// The origin's side of a node: admission, leases, heartbeat, recording, relays.
pub struct Origin {
    registry: Arc<dyn Registry>,
    require_key: bool,
    hub: Arc<Hub>,
    leases: Arc<Leases>,
    heartbeat: Heartbeat,
    recordings: Option<Arc<Recordings>>,
    forwards: Arc<Forwards>,
    pulls: Arc<Pulls>,
    hooks: Arc<Hooks>,
    /// Publishes per channel key ([`OriginConfig::publishes_per_key`]).
    publish_limits: serve::ratelimit::RateLimiter<String>,
}

/// How long a viewer of a room fed on demand waits for the pull to bring it.
const PULL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Origin {
    /// The origin of a node serving `shared`; starts its heartbeat and its pulls.
    pub fn start(config: &OriginConfig, shared: &Shared) -> Arc<Origin> {
        let identity = &config.identity;
        let recordings = config
            .record
            .clone()
            .map(|record| Recordings::new(record, shared));
        let forwards = Forwards::new(shared, config.tls.clone(), config.relay.push.clone());
        let origin = Arc::new_cyclic(|origin| {
            let pulls = Pulls::new(
                origin.clone(),
                shared.hub.clone(),
                config.tls.clone(),
                shared.metrics.clone(),
                shared.hooks.clone(),
                &config.relay.pull,
                config.relay.pull_idle,
            );
            let load = {
                let (shared, pulls) = (shared.clone(), pulls.clone());
                move || Load {
                    viewers: shared.viewers_by_stream().collect(),
                    bytes_out: shared.bytes_out(),
                    pulls: pulls.states().into_iter().collect(),
                }
            };
            Origin {
                registry: config.registry.clone(),
                require_key: config.require_key,
                hub: shared.hub.clone(),
                leases: Arc::new(Leases::new(
                    config.registry.clone(),
                    identity.id.clone(),
                    identity.addrs.clone(),
                    recordings.clone(),
                    forwards.clone(),
                )),
                heartbeat: Heartbeat::start(config.registry.clone(), identity.clone(), load),
                recordings,
                forwards,
                pulls,
                hooks: shared.hooks.clone(),
                publish_limits: serve::ratelimit::RateLimiter::per_minute(config.publishes_per_key),
            }
        });
        origin.pulls.start_config();
        tokio::spawn(origin.pulls.clone().follow(config.registry.clone()));
        origin
    }

    /// Publish `app/room` for `from` (a publisher's address, or a pull): free locally, and
    /// not live on another node. Starts what the stream's publish starts: its lease,
    /// recording and forwards.
    pub(crate) async fn publish_room(
        &self,
        app: &str,
        room: &str,
        from: &(dyn std::fmt::Display + Sync),
    ) -> Result<Publishing, Refusal> {
        let Some(key) = stream_key(app, room) else {
            return Err(Refusal::bad_name("Invalid stream name"));
        };
        let publisher = match self.hub.publish(&key, std::time::Instant::now()) {
            Ok(publisher) => publisher,
            Err(e) => {
                info!(stream = %key, %from, "publish refused: {e}");
                return Err(Refusal::taken("Stream already publishing"));
            }
        };
        match self.leases.claim(&publisher).await {
            Ok(hold) => {
                if let Some(recordings) = &self.recordings {
                    // A publisher that reconnects continues the recording it had.
                    if recordings.records_app(app) && !recordings.is_recording(&key) {
                        recordings.start(&key);
                    }
                }
                self.forwards.published(app, room);
                Ok(Publishing { publisher, hold })
            }
            Err(refusal) => {
                publisher.finish(&self.hub);
                Err(refusal)
            }
        }
    }

    /// The room a publish name stands for: the channel key's room, or the name itself when
    /// keys are not required.
    async fn admit(&self, name: &str) -> Result<String, Refusal> {
        if !self.require_key {
            return Ok(name.to_owned());
        }
        match self.registry.room_for_key(name).await {
            Ok(Some(room)) => Ok(room),
            Ok(None) => {
                info!(key = %redact_key(name), "publish refused: unknown or revoked key");
                Err(Refusal::bad_name("Unknown or revoked channel key"))
            }
            Err(e) => {
                warn!(error = %e, "publish refused: cannot check the key");
                Err(Refusal::failed(format!(
                    "Cannot check the channel key now: {e}"
                )))
            }
        }
    }
}

#[async_trait::async_trait]
impl Role for Origin {
    /// Admit a publisher: its name must be a valid stream (a channel key when the node
    /// checks keys), free locally, and not live on another node.
    async fn publish(&self, request: &PublishRequest<'_>) -> Result<Publishing, Refusal> {
        let (app, peer) = (request.app, request.peer);
        // Counted before the key is looked up: a flood of publishes costs no registry call.
        if let Err(wait) = self.publish_limits.take(request.name.to_owned()) {
            info!(%peer, "publish refused: too many publishes with this name");
            return Err(Refusal::bad_name(format!(
                "Too many publishes with this key; retry in {} s",
                wait.as_secs() + 1
            )));
        }
        let room = self.admit(request.name).await?;
        // The hook hears of the room, never of the key.
        let hook = HookRequest {
            app: app.to_owned(),
            room: room.clone(),
            client: Some(peer),
            protocol: request.protocol.label(),
            query: request.query.to_owned(),
            extra: Vec::new(),
        };
        if let Err(refused) = self.hooks.ask(HookEvent::Publish, &hook).await {
            return Err(Refusal::bad_name(refused.to_string()));
        }
        let publishing = self.publish_room(app, &room, &peer).await?;
        Ok(
            match self.hooks.notify_on_drop(HookEvent::Unpublish, hook) {
                Some(notice) => Publishing {
                    hold: publishing.hold.also(notice),
                    ..publishing
                },
                None => publishing,
            },
        )
    }

    /// Streams are published here: the local hub has them or nobody does, unless a pull
    /// on demand feeds the stream: then it is started, and the viewer waits for it.
    async fn attach(&self, stream: &str, attach: &mut (dyn FnMut() -> bool + Send)) -> bool {
        if attach() {
            return true;
        }
        self.pulls.demand(stream, Instant::now() + PULL_WAIT).await && attach()
    }

    fn owns(&self, stream: &str) -> bool {
        self.leases.owns(stream)
    }

    /// Publishers end their streams on the node's shutdown signal and drop their leases;
    /// keepers release them, while the heartbeat is removed.
    async fn shut_down(&self, deadline: Instant) {
        self.leases.close();
        let released = async {
            if tokio::time::timeout_at(deadline, self.leases.released())
                .await
                .is_err()
            {
                let held = self.leases.held();
                warn!(
                    ?held,
                    "leases not released in time; they expire by themselves"
                );
            }
        };
        let removed = tokio::time::timeout_at(deadline, self.heartbeat.stop());
        let recorded = async {
            if let Some(recordings) = &self.recordings {
                recordings.stop_all(deadline).await;
            }
        };
        let _ = tokio::join!(released, removed, recorded);
    }

    fn metrics(&self, out: &mut String) {
        relay::render_metrics(&self.forwards, &self.pulls, out);
    }
}
