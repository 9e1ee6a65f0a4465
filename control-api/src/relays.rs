//! Relays at run time: forwards of a live room (orders to the origin holding it, which
//! reports them in the stream's lease) and pulls (kept in the registry, where an origin
//! that sees the room not live anywhere picks them up and reports them in its heartbeat).

use std::net::IpAddr;

use media::rtmp::url::{RelayUrl, Scheme};
use registry::{Order, PullSpec, RelayInfo};
use serde::Serialize;

use crate::apps::{stream_of, App};
use crate::rooms::{not_live, validate_room, ApiError, ApiResult};
use crate::AppState;

/// A forward as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayView {
    pub room: String,
    pub app: String,
    #[serde(flatten)]
    pub relay: RelayInfo,
    /// The origin that runs it.
    pub node_id: String,
}

/// A pull as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullView {
    pub id: String,
    pub app: String,
    pub room: String,
    /// The source without credentials, stream keys shortened.
    pub url: String,
    /// Whether the room is live (fed by the pull, or published otherwise).
    pub live: bool,
    /// The origin running the pull and what it reports (`None` while no origin runs it).
    pub node_id: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// A relay URL the API accepts: malformed URLs and other schemes are 400.
fn relay_url(url: &str, schemes: &[Scheme]) -> ApiResult<RelayUrl> {
    let parsed = RelayUrl::parse(url).map_err(|e| ApiError::BadRequest(format!("url: {e}")))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(ApiError::BadRequest(format!(
            "url: {} is not one of {}",
            parsed.redacted(),
            schemes
                .iter()
                .map(|s| format!("{}://", s.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(parsed)
}

/// The same URL always gets the same id, so that asking twice is harmless and livego's
/// `oper=stop&url=...` finds what `oper=start` made: FNV-1a of the text.
fn id_of(prefix: &str, text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{prefix}{:08x}", hash >> 32)
}

impl AppState {
    /// Forward the live stream `app/room` to `url` from the origin holding it (which does
    /// at its next lease refresh, within 2 s).
    pub async fn add_relay(
        &self,
        client: IpAddr,
        room: &str,
        app: &App,
        url: &str,
    ) -> ApiResult<RelayView> {
        validate_room(room)?;
        let parsed = relay_url(url, &[Scheme::Rtmp, Scheme::Rtmps])?;
        let stream = stream_of(app, room);
        let Some(lease) = self.registry.lease(&stream).await? else {
            return Err(not_live(app));
        };
        let id = id_of("r", url);
        let order = Order::AddRelay {
            id: id.clone(),
            url: url.to_owned(),
        };
        if !self.registry.order(&stream, &order).await? {
            return Err(not_live(app));
        }
        tracing::info!(room, %app, %client, id, url = %parsed.redacted(), "forward asked");
        Ok(RelayView {
            room: room.to_owned(),
            app: app.to_string(),
            relay: RelayInfo {
                id,
                url: parsed.redacted(),
                state: "connecting".into(),
                ..RelayInfo::default()
            },
            node_id: lease.node_id,
        })
    }

    /// The forwards of the live stream `app/room`.
    pub async fn relays(&self, room: &str, app: &App) -> ApiResult<Vec<RelayView>> {
        validate_room(room)?;
        let Some(lease) = self.registry.lease(&stream_of(app, room)).await? else {
            return Err(not_live(app));
        };
        Ok(lease
            .relays
            .into_iter()
            .map(|relay| RelayView {
                room: room.to_owned(),
                app: app.to_string(),
                relay,
                node_id: lease.node_id.clone(),
            })
            .collect())
    }

    /// Stop the forward `id` (or, with `url`, the forward to that URL) of `app/room`.
    pub async fn remove_relay(
        &self,
        client: IpAddr,
        room: &str,
        app: &App,
        id: Option<&str>,
        url: Option<&str>,
    ) -> ApiResult<String> {
        validate_room(room)?;
        let id = match (id, url) {
            (Some(id), _) => id.to_owned(),
            (None, Some(url)) => id_of("r", url),
            (None, None) => return Err(ApiError::BadRequest("name the relay".into())),
        };
        let stream = stream_of(app, room);
        if !self
            .registry
            .order(&stream, &Order::RemoveRelay { id: id.clone() })
            .await?
        {
            return Err(not_live(app));
        }
        tracing::info!(room, %app, %client, id, "forward stop asked");
        Ok(id)
    }

    /// Feed `app/room` from `url` from now on (an origin picks it up within seconds).
    pub async fn add_pull(
        &self,
        client: IpAddr,
        room: &str,
        app: &App,
        url: &str,
    ) -> ApiResult<PullView> {
        validate_room(room)?;
        let parsed = relay_url(
            url,
            &[Scheme::Rtmp, Scheme::Rtmps, Scheme::Http, Scheme::Https],
        )?;
        let spec = PullSpec {
            id: id_of("p", &format!("{}\n{url}", stream_of(app, room))),
            app: app.to_string(),
            room: room.to_owned(),
            url: url.to_owned(),
        };
        // One pull per room: a new source replaces the old.
        for old in self.registry.pulls().await? {
            if old.app == spec.app && old.room == spec.room && old.id != spec.id {
                self.registry.delete_pull(&old.id).await?;
            }
        }
        self.registry.put_pull(&spec).await?;
        tracing::info!(room, %app, %client, id = spec.id, url = %parsed.redacted(), "pull added");
        Ok(self.pull_views(vec![spec]).await?.remove(0))
    }

    /// Every pull asked for at run time, with its state.
    pub async fn pulls(&self) -> ApiResult<Vec<PullView>> {
        let specs = self.registry.pulls().await?;
        self.pull_views(specs).await
    }

    /// Stop and forget the pull `id` (or, with `app` and `room`, the pull feeding that room).
    pub async fn remove_pull(
        &self,
        client: IpAddr,
        id: Option<&str>,
        stream: Option<(&App, &str)>,
    ) -> ApiResult<String> {
        let id = match (id, stream) {
            (Some(id), _) => id.to_owned(),
            (None, Some((app, room))) => self
                .registry
                .pulls()
                .await?
                .into_iter()
                .find(|p| p.app == app.as_str() && p.room == room)
                .map(|p| p.id)
                .ok_or_else(|| ApiError::NotFound("no pull feeds this room".into()))?,
            (None, None) => return Err(ApiError::BadRequest("name the pull".into())),
        };
        if !self.registry.delete_pull(&id).await? {
            return Err(ApiError::NotFound("pull not found".into()));
        }
        tracing::info!(id, %client, "pull removed");
        Ok(id)
    }

    async fn pull_views(&self, specs: Vec<PullSpec>) -> ApiResult<Vec<PullView>> {
        let nodes = self.registry.nodes().await?;
        let mut views = Vec::with_capacity(specs.len());
        for spec in specs {
            let stream = format!("{}/{}", spec.app, spec.room);
            let live = self.registry.lease(&stream).await?.is_some();
            let running = nodes.iter().find_map(|node| {
                let info = node.pulls.get(&stream).filter(|info| info.id == spec.id)?;
                Some((node.id.clone(), info.clone()))
            });
            views.push(PullView {
                url: RelayUrl::parse(&spec.url).map_or_else(|_| "?".into(), |u| u.redacted()),
                id: spec.id,
                app: spec.app,
                room: spec.room,
                live,
                node_id: running.as_ref().map(|(node, _)| node.clone()),
                state: running.as_ref().map(|(_, info)| info.state.clone()),
                error: running.and_then(|(_, info)| info.error),
            });
        }
        Ok(views)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_url_gets_the_same_id() {
        assert_eq!(id_of("r", "rtmp://a/b/c"), id_of("r", "rtmp://a/b/c"));
        assert_ne!(id_of("r", "rtmp://a/b/c"), id_of("r", "rtmp://a/b/d"));
        assert_eq!(id_of("p", "x").len(), 9);
    }
}
