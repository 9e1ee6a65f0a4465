//! The operations REST and gRPC share: validation, rate limiting, registry calls, and the
//! room view built from stream leases and node heartbeats.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use registry::{NodeInfo, RegistryError, Room, StreamLease};
use serde::Serialize;

use crate::apps::{split_stream, stream_of, App, AppError};
use crate::AppState;

/// What can go wrong in a control operation; each front end maps it to its status codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    /// The request cannot be carried out in the current state (409).
    Conflict(String),
    /// Too many key creations from this client; retry after the duration.
    RateLimited(Duration),
    /// The registry cannot be reached (503).
    Unavailable(String),
    Internal(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Internal(m) => f.write_str(m),
            ApiError::RateLimited(wait) => write!(
                f,
                "too many key requests from this address, retry in {} s",
                wait.as_secs_f64().ceil().max(1.0) as u64
            ),
            ApiError::Unavailable(m) => write!(f, "registry unavailable: {m}"),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Unavailable(m) => ApiError::Unavailable(m),
            e @ RegistryError::Corrupt(_) => ApiError::Internal(e.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub const INVALID_ROOM: &str =
    "invalid room name: use 1 to 64 characters from A-Z a-z 0-9 - _ . ~ \
     (not starting with '.' or with the channel key prefix 'sk_')";

pub fn validate_room(room: &str) -> ApiResult<()> {
    if registry::is_valid_room(room) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(INVALID_ROOM.into()))
    }
}

/// What kick and play answer when the stream is not live: it names the app, so that a
/// request that left the app out sees which one it was taken to mean.
pub(crate) fn not_live(app: &App) -> ApiError {
    ApiError::NotFound(format!("room is not live in app '{app}'"))
}

impl AppState {
    /// The room's key, creating it (rate-limited per client) if the room has none.
    pub async fn get_key(&self, client: IpAddr, room: &str) -> ApiResult<String> {
        validate_room(room)?;
        if let Some(existing) = self.registry.room(room).await? {
            return Ok(existing.key);
        }
        self.limiter.take(client).map_err(ApiError::RateLimited)?;
        let key = self.registry.get_or_create_key(room).await?;
        tracing::info!(room, key = %registry::redact_key(&key), %client, "channel key issued");
        Ok(key)
    }

    /// A new key for the room; the old one stops working at once.
    pub async fn reset_key(&self, client: IpAddr, room: &str) -> ApiResult<String> {
        validate_room(room)?;
        self.limiter.take(client).map_err(ApiError::RateLimited)?;
        let key = self.registry.reset_key(room).await?;
        tracing::info!(room, key = %registry::redact_key(&key), %client, "channel key reset");
        Ok(key)
    }

    /// Delete the room and its key (whatever app it publishes under) and disconnect the
    /// publisher of `app/room` if it is live. Returns whether a publisher was kicked;
    /// `NotFound` when there was neither room nor stream.
    pub async fn delete_room(&self, client: IpAddr, room: &str, app: &App) -> ApiResult<bool> {
        validate_room(room)?;
        let deleted = self.registry.delete_room(room).await?;
        let kicked = self.registry.kick(&stream_of(app, room)).await?;
        if !deleted && !kicked {
            return Err(ApiError::NotFound("room not found".into()));
        }
        tracing::info!(room, %app, %client, kicked, "room deleted");
        Ok(kicked)
    }

    /// Ask the origin to disconnect the publisher of `app/room`.
    pub async fn kick(&self, client: IpAddr, room: &str, app: &App) -> ApiResult<()> {
        validate_room(room)?;
        if !self.registry.kick(&stream_of(app, room)).await? {
            return Err(not_live(app));
        }
        tracing::info!(room, %app, %client, "publisher kicked");
        Ok(())
    }

    /// Ask the origin holding `app/room` to start (`on`) or stop recording it; it does at
    /// its next lease refresh (within 2 s). Returns that origin's node id.
    pub async fn record(
        &self,
        client: IpAddr,
        room: &str,
        app: &App,
        on: bool,
    ) -> ApiResult<String> {
        validate_room(room)?;
        let stream = stream_of(app, room);
        let Some(lease) = self.registry.lease(&stream).await? else {
            return Err(not_live(app));
        };
        if lease.recording.is_none() {
            return Err(ApiError::Conflict(format!(
                "node {} does not record: start it with --record-dir",
                lease.node_id
            )));
        }
        if !self
            .registry
            .order(&stream, &registry::Order::Record { on })
            .await?
        {
            return Err(not_live(app));
        }
        tracing::info!(room, %app, %client, on, node = %lease.node_id, "recording asked");
        Ok(lease.node_id)
    }

    /// Live streams of every app (and, with `all`, rooms that have a key but no live
    /// stream, under the default app), by room, then app.
    pub async fn list_rooms(&self, all: bool) -> ApiResult<Vec<RoomView>> {
        let leases = self.registry.leases().await?;
        let nodes = self.registry.nodes().await?;
        // Keyed (room, app): the order of the list.
        let mut views: BTreeMap<(String, String), RoomView> = BTreeMap::new();
        for lease in &leases {
            if let Some((app, room)) = split_stream(&lease.stream) {
                views.insert(
                    (room.to_owned(), app.to_owned()),
                    RoomView::new(room, app, None, Some(lease), &nodes),
                );
            }
        }
        // Whether a live room has a key (one key for all its apps): one call for the list
        // when it is wanted anyway, otherwise one cheap lookup per live room.
        if all {
            for room in self.registry.rooms().await? {
                let mut live_views = views
                    .range_mut((room.room.clone(), String::new())..)
                    .take_while(|((name, _), _)| *name == room.room)
                    .map(|(_, view)| view)
                    .peekable();
                if live_views.peek().is_some() {
                    live_views.for_each(|view| view.set_key(&room));
                    continue;
                }
                let app = self.apps.default_app().to_owned();
                let view = RoomView::new(&room.room, &app, Some(&room), None, &nodes);
                views.insert((room.room, app), view);
            }
        } else {
            let mut stored: HashMap<String, Option<Room>> = HashMap::new();
            for view in views.values_mut() {
                if !stored.contains_key(&view.room) {
                    stored.insert(view.room.clone(), self.registry.room(&view.room).await?);
                }
                if let Some(Some(room)) = stored.get(&view.room) {
                    view.set_key(room);
                }
            }
        }
        Ok(views.into_values().collect())
    }

    /// One room as `app` sees it: its key, and its stream in `app` if live; `NotFound`
    /// when it neither has a key nor is live there.
    pub async fn room_view(&self, room: &str, app: &App) -> ApiResult<RoomView> {
        validate_room(room)?;
        let stored = self.registry.room(room).await?;
        let lease = self.registry.lease(&stream_of(app, room)).await?;
        if stored.is_none() && lease.is_none() {
            return Err(ApiError::NotFound("room not found".into()));
        }
        let nodes = if lease.is_some() {
            self.registry.nodes().await?
        } else {
            Vec::new()
        };
        Ok(RoomView::new(
            room,
            app.as_str(),
            stored.as_ref(),
            lease.as_ref(),
            &nodes,
        ))
    }
}

/// The origin node that holds a live room's stream lease.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OriginView {
    pub node_id: String,
    /// From the node's heartbeat (`None` if it has none).
    pub region: Option<String>,
    /// `host:port` of its RTMP listener.
    pub rtmp: String,
    /// `host:port` of its player HTTP listener.
    pub http: String,
}

/// A room as `/api/v1` and gRPC show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomView {
    pub room: String,
    /// The app the stream is published under (for a room that is not live, the app asked
    /// for).
    pub app: String,
    pub live: bool,
    pub has_key: bool,
    /// Unix milliseconds the current key was issued.
    pub key_created_ms: Option<u64>,
    pub origin: Option<OriginView>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub bitrate_kbps: u64,
    /// Unix milliseconds the publisher started.
    pub started_at_ms: Option<u64>,
    pub uptime_s: u64,
    /// Viewers on every node together.
    pub viewers: u64,
    /// Viewers per node id (origin and edges).
    pub viewers_by_node: BTreeMap<String, u64>,
    /// Whether the origin records the stream (`None`: not live, or the origin cannot
    /// record).
    pub recording: Option<bool>,
    /// The stream's forwards to other servers.
    pub relays: Vec<registry::RelayInfo>,
}

impl RoomView {
    pub fn new(
        room: &str,
        app: &str,
        stored: Option<&Room>,
        lease: Option<&StreamLease>,
        nodes: &[NodeInfo],
    ) -> Self {
        let mut view = RoomView {
            room: room.to_owned(),
            app: app.to_owned(),
            live: lease.is_some(),
            has_key: false,
            key_created_ms: None,
            origin: None,
            video_codec: None,
            audio_codec: None,
            width: None,
            height: None,
            bitrate_kbps: 0,
            started_at_ms: None,
            uptime_s: 0,
            viewers: 0,
            viewers_by_node: BTreeMap::new(),
            recording: None,
            relays: Vec::new(),
        };
        if let Some(stored) = stored {
            view.set_key(stored);
        }
        if let Some(lease) = lease {
            view.origin = Some(OriginView {
                node_id: lease.node_id.clone(),
                region: nodes
                    .iter()
                    .find(|n| n.id == lease.node_id)
                    .map(|n| n.region.clone()),
                rtmp: lease.addrs.rtmp.clone(),
                http: lease.addrs.http.clone(),
            });
            view.video_codec = lease.video_codec.clone();
            view.audio_codec = lease.audio_codec.clone();
            view.width = lease.width;
            view.height = lease.height;
            view.bitrate_kbps = lease.bitrate_kbps;
            view.started_at_ms = Some(lease.started_at_ms);
            view.uptime_s = registry::now_ms().saturating_sub(lease.started_at_ms) / 1000;
            view.viewers_by_node = viewers_by_node(lease, nodes);
            view.viewers = view.viewers_by_node.values().sum();
            view.recording = lease.recording;
            view.relays = lease.relays.clone();
        }
        view
    }

    fn set_key(&mut self, stored: &Room) {
        self.has_key = true;
        self.key_created_ms = Some(stored.key_created_ms);
    }
}

/// Viewers of a stream per node: every node's heartbeat count for it, and for the origin the
/// larger of its heartbeat count and the count in the lease (both report the same viewers).
pub fn viewers_by_node(lease: &StreamLease, nodes: &[NodeInfo]) -> BTreeMap<String, u64> {
    let mut by_node = BTreeMap::new();
    for node in nodes {
        if let Some(&n) = node.viewers.get(&lease.stream) {
            if n > 0 {
                by_node.insert(node.id.clone(), n);
            }
        }
    }
    let origin = by_node.entry(lease.node_id.clone()).or_insert(0);
    *origin = (*origin).max(lease.viewers);
    by_node
}

/// Node heartbeats by id.
pub fn nodes_by_id(nodes: &[NodeInfo]) -> HashMap<&str, &NodeInfo> {
    nodes.iter().map(|n| (n.id.as_str(), n)).collect()
}

// --- play URLs ---

/// Where a player should play a live room: URLs on the chosen edge (or, without edges,
/// on the origin holding the room's lease).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlayView {
    pub room: String,
    pub app: String,
    /// The node the URLs point at.
    pub node_id: String,
    /// That node's region (`None` for an origin without a heartbeat).
    pub region: Option<String>,
    /// `rtmp://<node rtmp>/<app>/<room>`.
    pub rtmp: String,
    /// `http://<node http>/<app>/<room>.flv`.
    pub flv: String,
    /// `http://<node http>/<app>/<room>.m3u8`.
    pub hls: String,
    /// With a play secret: the token the URLs carry (good for [`PLAY_TOKEN_LIFETIME`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// How long the tokens in play answers are good for.
pub const PLAY_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// A play token minted by the API.
#[derive(Debug, Serialize)]
pub struct PlayToken {
    pub room: String,
    pub app: String,
    pub token: String,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
    /// Bound to this client address, if any.
    pub ip: Option<std::net::IpAddr>,
}

impl PlayView {
    fn new(
        room: &str,
        app: &App,
        node_id: &str,
        region: Option<String>,
        rtmp: &str,
        http: &str,
    ) -> Self {
        PlayView {
            room: room.to_owned(),
            app: app.to_string(),
            node_id: node_id.to_owned(),
            region,
            rtmp: format!("rtmp://{rtmp}/{app}/{room}"),
            flv: format!("http://{http}/{app}/{room}.flv"),
            hls: format!("http://{http}/{app}/{room}.m3u8"),
            token: None,
        }
    }

    /// The URLs with `token`.
    fn with_token(mut self, token: String) -> Self {
        for url in [&mut self.rtmp, &mut self.flv, &mut self.hls] {
            url.push_str("?token=");
            url.push_str(&token);
        }
        self.token = Some(token);
        self
    }
}

impl AppState {
    /// Play URLs for the live stream `app/room` on the best edge for a player in `region`
    /// (see [`best_edge`]); with no edge registered, on the origin holding the stream's
    /// lease. `NotFound` when the stream is not live.
    pub async fn play(&self, room: &str, app: &App, region: Option<&str>) -> ApiResult<PlayView> {
        let view = self.play_node(room, app, region).await?;
        Ok(match &self.play_secret {
            Some(secret) => {
                let expires = registry::now_ms() / 1000 + PLAY_TOKEN_LIFETIME.as_secs();
                view.with_token(secret.sign(&stream_of(app, room), expires, None))
            }
            None => view,
        })
    }

    /// A token to play `app/room` for `lifetime`, from `ip` only if given.
    pub fn play_token(
        &self,
        room: &str,
        app: &App,
        lifetime: std::time::Duration,
        ip: Option<std::net::IpAddr>,
    ) -> ApiResult<PlayToken> {
        validate_room(room)?;
        let Some(secret) = &self.play_secret else {
            return Err(ApiError::BadRequest(
                "play tokens need a play secret (--play-secret)".into(),
            ));
        };
        let expires_at_ms = registry::now_ms() + lifetime.as_millis() as u64;
        // Whole seconds, rounded up: a token is never good for less than asked.
        let expires = expires_at_ms.div_ceil(1000);
        Ok(PlayToken {
            room: room.to_owned(),
            app: app.to_string(),
            token: secret.sign(&stream_of(app, room), expires, ip),
            expires_at_ms: expires * 1000,
            ip,
        })
    }

    async fn play_node(&self, room: &str, app: &App, region: Option<&str>) -> ApiResult<PlayView> {
        validate_room(room)?;
        let Some(lease) = self.registry.lease(&stream_of(app, room)).await? else {
            return Err(not_live(app));
        };
        let nodes = self.registry.nodes().await?;
        if let Some(edge) = best_edge(&nodes, region) {
            return Ok(PlayView::new(
                room,
                app,
                &edge.id,
                Some(edge.region.clone()),
                &edge.addrs.rtmp,
                &edge.addrs.http,
            ));
        }
        let origin_region = nodes
            .iter()
            .find(|n| n.id == lease.node_id)
            .map(|n| n.region.clone());
        Ok(PlayView::new(
            room,
            app,
            &lease.node_id,
            origin_region,
            &lease.addrs.rtmp,
            &lease.addrs.http,
        ))
    }
}

/// A node's load for edge selection: viewers on all its streams, then egress bytes/s.
fn load(node: &NodeInfo) -> (u64, u64) {
    let viewers = node
        .viewers
        .values()
        .fold(0u64, |sum, &n| sum.saturating_add(n));
    (viewers, node.egress_bps)
}

/// The best edge among live heartbeats (the registry drops expired ones): only nodes with
/// role `Edge` and both addresses advertised; if any is in `region` (ASCII
/// case-insensitive), only those; then the least loaded (fewest viewers in total, then
/// lowest egress), ties broken by node id so that the answer is deterministic.
pub fn best_edge<'a>(nodes: &'a [NodeInfo], region: Option<&str>) -> Option<&'a NodeInfo> {
    let edges: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| {
            n.role == registry::NodeRole::Edge
                && !n.addrs.rtmp.is_empty()
                && !n.addrs.http.is_empty()
        })
        .collect();
    let regional: Vec<&NodeInfo> = match region.filter(|r| !r.is_empty()) {
        Some(region) => edges
            .iter()
            .copied()
            .filter(|n| n.region.eq_ignore_ascii_case(region))
            .collect(),
        None => Vec::new(),
    };
    let candidates = if regional.is_empty() { edges } else { regional };
    candidates
        .into_iter()
        .min_by(|a, b| load(a).cmp(&load(b)).then_with(|| a.id.cmp(&b.id)))
}
