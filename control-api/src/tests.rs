//! REST (in process, through the router) and gRPC (over a real listener) against the
//! embedded registry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use registry::{
    EmbeddedRegistry, LeaseOutcome, NodeAddrs, NodeInfo, NodeRole, Registry, RegistryError, Room,
    StreamLease,
};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tower::ServiceExt as _;

use crate::{ApiConfig, AppState};

const TTL: Duration = Duration::from_secs(30);

fn config() -> ApiConfig {
    ApiConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ApiConfig::default()
    }
}

struct Api {
    router: axum::Router,
    registry: Arc<dyn Registry>,
    _shutdown: watch::Sender<bool>,
}

async fn api_with(config: ApiConfig, registry: Arc<dyn Registry>) -> Api {
    let (tx, rx) = watch::channel(false);
    let router = crate::app(AppState::new(&config, registry.clone(), rx)).await;
    Api {
        router,
        registry,
        _shutdown: tx,
    }
}

async fn api(config: ApiConfig) -> Api {
    api_with(config, Arc::new(EmbeddedRegistry::in_memory())).await
}

impl Api {
    async fn call(&self, method: Method, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        let (status, _, body) = self.call_raw(method, uri, token).await;
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        (status, json)
    }

    async fn call_raw(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }

    /// `method` with a JSON body.
    async fn send_json(&self, method: Method, uri: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        (status, json)
    }
}

fn lease(room: &str, node: &str, session: &str) -> StreamLease {
    lease_in("live", room, node, session)
}

/// The lease of `app/room` an origin takes for a publisher.
fn lease_in(app: &str, room: &str, node: &str, session: &str) -> StreamLease {
    StreamLease {
        stream: format!("{app}/{room}"),
        node_id: node.into(),
        session: session.into(),
        addrs: NodeAddrs {
            rtmp: "10.0.0.1:1935".into(),
            http: "10.0.0.1:8080".into(),
        },
        started_at_ms: registry::now_ms() - 5_000,
        video_codec: Some("H264".into()),
        audio_codec: Some("AAC".into()),
        width: Some(1280),
        height: Some(720),
        bitrate_kbps: 2_400,
        video_bytes: 9_000_000,
        audio_bytes: 1_000_000,
        viewers: 2,
        recording: Some(false),
        relays: Vec::new(),
        generation: 0,
    }
}

fn node(id: &str, role: NodeRole, http: &str, viewers: &[(&str, u64)]) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        role,
        region: "eu".into(),
        addrs: NodeAddrs {
            rtmp: String::new(),
            http: http.into(),
        },
        viewers: viewers
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect::<BTreeMap<_, _>>(),
        egress_bps: 0,
        updated_at_ms: registry::now_ms(),
        pulls: Default::default(),
    }
}

async fn go_live(registry: &dyn Registry, room: &str) {
    go_live_in(registry, "live", room).await;
}

async fn go_live_in(registry: &dyn Registry, app: &str, room: &str) {
    assert_eq!(
        registry
            .acquire_lease(&lease_in(app, room, "origin-1", "s1"), TTL)
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
}

/// Whether the publisher of `app/room` (taken live by [`go_live_in`]) has been kicked, as
/// its origin's next lease refresh would see it.
async fn was_kicked(registry: &dyn Registry, app: &str, room: &str) -> bool {
    let outcome = registry
        .refresh_lease(&lease_in(app, room, "origin-1", "s1"), TTL)
        .await
        .unwrap();
    outcome == registry::RefreshOutcome::Kicked
}

/// The recording order the origin of `app/room` (taken live by [`go_live_in`]) sees at
/// its next lease refresh.
async fn record_order(registry: &dyn Registry, app: &str, room: &str) -> Option<bool> {
    match registry
        .refresh_lease(&lease_in(app, room, "origin-1", "s1"), TTL)
        .await
        .unwrap()
    {
        registry::RefreshOutcome::Orders(orders) => match orders[..] {
            [registry::Order::Record { on }] => Some(on),
            _ => panic!("{orders:?}"),
        },
        _ => None,
    }
}

// --- livego endpoints ---

#[tokio::test]
async fn control_get_reset_delete() {
    let api = api(config()).await;
    let (status, body) = api.get("/control/get?room=movie").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], 200);
    let key = body["data"].as_str().unwrap().to_owned();
    assert!(key.starts_with(registry::KEY_PREFIX));
    assert_eq!(
        api.registry.room_for_key(&key).await.unwrap().as_deref(),
        Some("movie")
    );
    // The same key again.
    assert_eq!(
        api.get("/control/get?room=movie").await.1["data"],
        key.as_str()
    );
    // POST works too, as in livego.
    assert_eq!(
        api.call(Method::POST, "/control/get?room=movie", None)
            .await
            .1["data"],
        key.as_str()
    );

    // Reset: a new key, and the old one is revoked at once.
    let (status, body) = api.get("/control/reset?room=movie").await;
    assert_eq!(status, StatusCode::OK);
    let new_key = body["data"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(api.registry.room_for_key(&key).await.unwrap(), None);
    assert_eq!(
        api.registry
            .room_for_key(&new_key)
            .await
            .unwrap()
            .as_deref(),
        Some("movie")
    );
    assert_eq!(
        api.get("/control/get?room=movie").await.1["data"],
        new_key.as_str()
    );

    // Delete: key and room gone; again -> 404.
    assert_eq!(
        api.get("/control/delete?room=movie").await,
        (StatusCode::OK, json!({"status": 200, "data": "Ok"}))
    );
    assert_eq!(api.registry.room_for_key(&new_key).await.unwrap(), None);
    assert_eq!(api.registry.room("movie").await.unwrap(), None);
    assert_eq!(
        api.get("/control/delete?room=movie").await,
        (
            StatusCode::NOT_FOUND,
            json!({"status": 404, "data": "room not found"})
        )
    );
    // A later get issues a fresh key.
    let again = api.get("/control/get?room=movie").await.1["data"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(again != key && again != new_key);
}

#[tokio::test]
async fn control_bad_rooms() {
    let api = api(config()).await;
    for path in ["/control/get", "/control/reset", "/control/delete"] {
        for uri in [
            path.to_owned(),
            format!("{path}?room="),
            format!("{path}?other=1"),
        ] {
            assert_eq!(
                api.get(&uri).await,
                (
                    StatusCode::BAD_REQUEST,
                    json!({"status": 400, "data": format!("url: {path}?room=<ROOM_NAME>")})
                ),
                "{uri}"
            );
        }
        let long = "a".repeat(65);
        for room in [
            long.as_str(),
            "a%2Fb",
            "..",
            ".hidden",
            "a%00b",
            "new%0Aline",
            "sk_abcdef",
            "r%C3%A9",
            "a%20b",
        ] {
            let (status, body) = api.get(&format!("{path}?room={room}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {room}");
            assert_eq!(body["status"], 400);
            assert!(
                body["data"].as_str().unwrap().contains("invalid room name"),
                "{body}"
            );
        }
    }
    // 64 characters is fine.
    assert_eq!(
        api.get(&format!("/control/get?room={}", "a".repeat(64)))
            .await
            .0,
        StatusCode::OK
    );
    // A key is never a room.
    let key = api.get("/control/get?room=movie").await.1["data"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.get(&format!("/control/get?room={key}")).await.0,
        StatusCode::BAD_REQUEST
    );
    // v1 as well.
    let (status, body) = api.call(Method::POST, "/api/v1/rooms/sk_x/key", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("invalid room name"));
    assert_eq!(
        api.get("/api/v1/rooms/a%2Fb").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn key_creation_is_rate_limited() {
    let api = api(ApiConfig {
        key_rate_per_minute: 3,
        ..config()
    })
    .await;
    for room in ["r1", "r2", "r3"] {
        assert_eq!(
            api.get(&format!("/control/get?room={room}")).await.0,
            StatusCode::OK
        );
    }
    let (status, headers, body) = api
        .call_raw(Method::GET, "/control/get?room=r4", None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.get(header::RETRY_AFTER).is_some());
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], 429);
    assert!(body["data"].as_str().unwrap().contains("too many"));
    assert_eq!(api.registry.room("r4").await.unwrap(), None);
    // Existing keys are still handed out; resets and rotations are limited too.
    assert_eq!(api.get("/control/get?room=r1").await.0, StatusCode::OK);
    assert_eq!(
        api.get("/control/reset?room=r1").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let (status, body) = api.call(Method::POST, "/api/v1/rooms/r1/key", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn livestat_lists_publishers_and_players() {
    let api = api(config()).await;
    assert_eq!(
        api.get("/stat/livestat").await,
        (
            StatusCode::OK,
            json!({"status": 200, "data": {"publishers": [], "players": []}})
        )
    );
    go_live(api.registry.as_ref(), "movie").await;
    api.registry
        .heartbeat(
            &node(
                "edge-1",
                NodeRole::Edge,
                "10.0.0.9:8080",
                &[("live/movie", 3)],
            ),
            TTL,
        )
        .await
        .unwrap();
    let (status, body) = api.get("/stat/livestat").await;
    assert_eq!(status, StatusCode::OK);
    let publishers = body["data"]["publishers"].as_array().unwrap();
    assert_eq!(publishers.len(), 1);
    assert_eq!(
        publishers[0],
        json!({
            "key": "live/movie", "url": "rtmp://10.0.0.1:1935/live/movie", "stream_id": 0,
            "video_total_bytes": 9_000_000, "video_speed": 270,
            "audio_total_bytes": 1_000_000, "audio_speed": 30
        })
    );
    let players = body["data"]["players"].as_array().unwrap();
    assert_eq!(players.len(), 5, "2 on the origin (lease) + 3 on the edge");
    let edge_players = players
        .iter()
        .filter(|p| p["url"] == "http://10.0.0.9:8080/live/movie.flv")
        .count();
    assert_eq!(edge_players, 3);
    for field in [
        "key",
        "url",
        "stream_id",
        "video_total_bytes",
        "video_speed",
        "audio_total_bytes",
        "audio_speed",
    ] {
        assert!(players[0].get(field).is_some(), "{field}");
    }
}

// --- /api/v1 ---

#[tokio::test]
async fn v1_rooms() {
    let api = api(config()).await;
    assert_eq!(
        api.get("/api/v1/rooms").await,
        (StatusCode::OK, json!({"rooms": []}))
    );
    let key = api.get("/control/get?room=movie").await.1["data"]
        .as_str()
        .unwrap()
        .to_owned();
    api.get("/control/get?room=idle").await;
    go_live(api.registry.as_ref(), "movie").await;
    // Live without a key (publish auth off).
    api.registry
        .acquire_lease(&lease("open", "origin-2", "s2"), TTL)
        .await
        .unwrap();
    api.registry
        .heartbeat(
            &node(
                "origin-1",
                NodeRole::Origin,
                "10.0.0.1:8080",
                &[("live/movie", 1)],
            ),
            TTL,
        )
        .await
        .unwrap();
    api.registry
        .heartbeat(
            &node(
                "edge-1",
                NodeRole::Edge,
                "10.0.0.9:8080",
                &[("live/movie", 4), ("live/other", 7)],
            ),
            TTL,
        )
        .await
        .unwrap();

    let (status, body) = api.get("/api/v1/rooms").await;
    assert_eq!(status, StatusCode::OK);
    let rooms = body["rooms"].as_array().unwrap();
    assert_eq!(
        rooms
            .iter()
            .map(|r| r["room"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["movie", "open"]
    );
    let movie = &rooms[0];
    assert_eq!(movie["app"], "live");
    assert_eq!(movie["live"], true);
    assert_eq!(movie["has_key"], true);
    assert_eq!(
        movie["origin"],
        json!({"node_id": "origin-1", "region": "eu", "rtmp": "10.0.0.1:1935", "http": "10.0.0.1:8080"})
    );
    assert_eq!(movie["video_codec"], "H264");
    assert_eq!(movie["audio_codec"], "AAC");
    assert_eq!(
        (movie["width"].as_u64(), movie["height"].as_u64()),
        (Some(1280), Some(720))
    );
    assert_eq!(movie["bitrate_kbps"], 2400);
    assert!(
        (4..=6).contains(&movie["uptime_s"].as_u64().unwrap()),
        "{movie}"
    );
    // Origin: max(lease 2, heartbeat 1) = 2; edge 4.
    assert_eq!(movie["viewers"], 6);
    assert_eq!(
        movie["viewers_by_node"],
        json!({"origin-1": 2, "edge-1": 4})
    );
    assert!(movie.get("key").is_none(), "keys are not listed");
    assert_eq!(rooms[1]["has_key"], false);
    assert_eq!(rooms[1]["origin"]["region"], Value::Null);

    let (_, all) = api.get("/api/v1/rooms?all=true").await;
    let names: Vec<_> = all["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["idle", "movie", "open"]);
    assert_eq!(
        api.get("/api/v1/rooms?all=maybe").await.0,
        StatusCode::BAD_REQUEST
    );

    // One room.
    let (status, one) = api.get("/api/v1/rooms/movie").await;
    assert_eq!((status, &one), (StatusCode::OK, movie));
    let (status, idle) = api.get("/api/v1/rooms/idle").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            idle["live"].clone(),
            idle["has_key"].clone(),
            idle["origin"].clone()
        ),
        (json!(false), json!(true), Value::Null)
    );
    assert_eq!(
        api.get("/api/v1/rooms/nothing").await,
        (StatusCode::NOT_FOUND, json!({"error": "room not found"}))
    );

    // Rotate.
    let (status, rotated) = api
        .call(Method::POST, "/api/v1/rooms/movie/key", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rotated["room"], "movie");
    let new_key = rotated["key"].as_str().unwrap();
    assert_ne!(new_key, key);
    assert_eq!(api.registry.room_for_key(&key).await.unwrap(), None);
    assert_eq!(
        api.registry.room_for_key(new_key).await.unwrap().as_deref(),
        Some("movie")
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/rooms/movie/key", None)
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    // Kick.
    let (status, kicked) = api
        .call(Method::POST, "/api/v1/rooms/movie/kick", None)
        .await;
    assert_eq!(
        (status, kicked),
        (
            StatusCode::ACCEPTED,
            json!({"room": "movie", "app": "live", "kicked": true})
        )
    );
    assert_eq!(
        api.call(Method::POST, "/api/v1/rooms/idle/kick", None)
            .await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "room is not live in app 'live'"})
        )
    );

    // Delete.
    let (status, deleted) = api.call(Method::DELETE, "/api/v1/rooms/idle", None).await;
    assert_eq!(
        (status, deleted),
        (
            StatusCode::OK,
            json!({"room": "idle", "app": "live", "deleted": true, "kicked": false})
        )
    );
    assert_eq!(api.get("/api/v1/rooms/idle").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.call(Method::DELETE, "/api/v1/rooms/idle", None).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, deleted) = api.call(Method::DELETE, "/api/v1/rooms/movie", None).await;
    assert_eq!(
        (status, deleted["kicked"].clone()),
        (StatusCode::OK, json!(true))
    );
    assert_eq!(api.registry.room_for_key(new_key).await.unwrap(), None);

    // Unknown paths.
    let (status, body) = api.get("/api/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn openapi_lists_every_endpoint() {
    let api = api(ApiConfig {
        admin_token: Some("t".into()),
        ..config()
    })
    .await;
    let (status, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "open without a token");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/control/get", "get"),
        ("/control/reset", "get"),
        ("/control/delete", "get"),
        ("/stat/livestat", "get"),
        ("/api/v1/rooms", "get"),
        ("/api/v1/rooms/{room}", "get"),
        ("/api/v1/rooms/{room}", "delete"),
        ("/api/v1/rooms/{room}/key", "post"),
        ("/api/v1/rooms/{room}/kick", "post"),
        ("/api/v1/rooms/{room}/record", "post"),
        ("/api/v1/rooms/{room}/record", "delete"),
        ("/api/v1/recordings", "get"),
        ("/api/v1/recordings/{app}/{room}/{file}", "delete"),
        ("/api/v1/rooms/{room}/relays", "post"),
        ("/api/v1/rooms/{room}/relays", "get"),
        ("/api/v1/rooms/{room}/relays/{id}", "delete"),
        ("/api/v1/pulls", "post"),
        ("/api/v1/pulls", "get"),
        ("/api/v1/pulls/{id}", "delete"),
        ("/control/push", "get"),
        ("/control/pull", "get"),
        ("/api/v1/rooms/{room}/play", "get"),
        ("/api/v1/rooms/{room}/play.flv", "get"),
        ("/api/v1/rooms/{room}/play.m3u8", "get"),
        ("/api/v1/rooms/{room}/play.rtmp", "get"),
        ("/api/v1/nodes", "get"),
        ("/api/v1/rooms/{room}/play-token", "post"),
        ("/api/v1/openapi.json", "get"),
        ("/console", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ];
    for (path, method) in expected {
        let op = &paths[path][method];
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
    }
    assert_eq!(paths.len(), 27);
    assert!(
        paths["/api/v1/rooms/{room}/play.flv"]["get"]["responses"]["302"]["headers"]["Location"]
            .is_object()
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    // Every $ref resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "{r}");
    }
    // Path parameters are declared.
    assert!(paths["/api/v1/rooms/{room}"]["parameters"].is_array());
}

// --- the OpenAPI document against the real routes ---

/// The keys of an OpenAPI 3.0 path item that hold operations (the others are `parameters`,
/// `summary` and the like).
const OPENAPI_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The document's operations as (METHOD, path template), e.g. `("GET", "/api/v1/rooms")`.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item is an object");
            item.keys()
                .filter(|key| OPENAPI_METHODS.contains(&key.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// `ROUTES` in the shape of [`documented_operations`].
fn routes() -> BTreeSet<(String, String)> {
    crate::rest::ROUTES
        .iter()
        .map(|&(method, path)| (method.to_owned(), path.to_owned()))
        .collect()
}

/// A URI for a path template: `{room}` becomes a room name (the only parameter there is).
fn concrete(path: &str) -> String {
    let uri = path
        .replace("{room}", "movie")
        .replace("{app}", "live")
        .replace("{file}", "2026-12-06T23-41-05Z.mp4")
        .replace("{id}", "r0123abcd");
    assert!(
        !uri.contains('{'),
        "{path}: a path parameter this test cannot fill in"
    );
    uri
}

const ADMIN_TOKEN: &str = "routes-admin-token";

/// Every call carries the admin token: without it a guarded path answers 401 before the
/// router could say 405, which would hide a method it does not serve.
async fn api_with_admin_token() -> Api {
    api(ApiConfig {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..config()
    })
    .await
}

/// The router's answer for no route at this path; a handler's own 404 (`room not found`)
/// has another body.
fn is_fallback(status: StatusCode, body: &Value, uri: &str) -> bool {
    status == StatusCode::NOT_FOUND
        && *body == json!({ "error": format!("no such endpoint: {uri}") })
}

/// `method path` reaches a handler: neither 405 (the path exists, the method does not) nor
/// the fallback's 404 (no such path), nor refused for want of credentials.
async fn assert_served(api: &Api, method: &str, path: &str) {
    let uri = concrete(path);
    let (status, body) = api
        .call(method.parse().unwrap(), &uri, Some(ADMIN_TOKEN))
        .await;
    assert_ne!(
        status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{method} {path}: {body}"
    );
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
    assert!(
        !is_fallback(status, &body, &uri),
        "{method} {path}: {status} {body}"
    );
}

/// What the probes in `assert_served` rely on: an unknown path is the fallback's 404, a
/// known path with another method is 405 (with the token), and a handler's 404 is neither.
/// (TRACE as the other method: no route will ever want it.)
#[tokio::test]
async fn route_probes_tell_unserved_from_served() {
    let api = api_with_admin_token().await;
    let unknown = "/api/v1/rooms/movie/nope";
    let (status, body) = api.call(Method::GET, unknown, Some(ADMIN_TOKEN)).await;
    assert!(is_fallback(status, &body, unknown), "{status} {body}");
    let (status, _) = api
        .call(Method::TRACE, "/api/v1/rooms/movie", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // Without the token the guard answers first, whatever the method.
    let (status, _) = api.call(Method::TRACE, "/api/v1/rooms/movie", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = api
        .call(Method::GET, "/api/v1/rooms/movie", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!is_fallback(status, &body, "/api/v1/rooms/movie"), "{body}");
}

/// openapi.json documents exactly `ROUTES`: a route added without its operation, or an
/// operation for a route that does not exist, fails here.
#[tokio::test]
async fn openapi_documents_exactly_the_routes() {
    let (status, doc) = api(config()).await.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let routes = routes();
    assert_eq!(
        routes.len(),
        crate::rest::ROUTES.len(),
        "ROUTES lists a route twice"
    );
    let documented = documented_operations(&doc);
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let not_routed: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && not_routed.is_empty(),
        "routes missing from openapi.json: {undocumented:?}; \
         operations in openapi.json that are not in ROUTES: {not_routed:?}"
    );
}

/// The routes that act on a room's stream, and so take `?app=`.
const ROUTES_WITH_APP: &[(&str, &str)] = &[
    ("GET", "/control/delete"),
    ("POST", "/control/delete"),
    ("GET", "/control/push"),
    ("POST", "/control/push"),
    ("GET", "/control/pull"),
    ("POST", "/control/pull"),
    ("GET", "/api/v1/rooms/{room}"),
    ("DELETE", "/api/v1/rooms/{room}"),
    ("POST", "/api/v1/rooms/{room}/kick"),
    ("POST", "/api/v1/rooms/{room}/record"),
    ("DELETE", "/api/v1/rooms/{room}/record"),
    ("POST", "/api/v1/rooms/{room}/relays"),
    ("GET", "/api/v1/rooms/{room}/relays"),
    ("DELETE", "/api/v1/rooms/{room}/relays/{id}"),
    ("POST", "/api/v1/rooms/{room}/play-token"),
    ("GET", "/api/v1/rooms/{room}/play"),
    ("GET", "/api/v1/rooms/{room}/play.flv"),
    ("GET", "/api/v1/rooms/{room}/play.m3u8"),
    ("GET", "/api/v1/rooms/{room}/play.rtmp"),
];

/// openapi.json declares `app` (the one `AppQuery` parameter) on exactly the routes that
/// take it.
#[tokio::test]
async fn openapi_documents_the_app_parameter() {
    let (status, doc) = api(config()).await.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let app_query = &doc["components"]["parameters"]["AppQuery"];
    assert_eq!(
        (&app_query["name"], &app_query["in"]),
        (&json!("app"), &json!("query"))
    );
    let takes_app = |method: &str, path: &str| {
        let item = &doc["paths"][path];
        let path_level = item["parameters"].as_array().into_iter().flatten();
        let operation_level = item[method.to_lowercase()]["parameters"]
            .as_array()
            .into_iter()
            .flatten();
        path_level
            .chain(operation_level)
            .any(|p| p["$ref"] == "#/components/parameters/AppQuery")
    };
    for &(method, path) in crate::rest::ROUTES {
        assert_eq!(
            takes_app(method, path),
            ROUTES_WITH_APP.contains(&(method, path)),
            "{method} {path}"
        );
    }
}

/// Every operation in the served document reaches a handler of the real router.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let api = api_with_admin_token().await;
    let (status, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let operations = documented_operations(&doc);
    assert!(!operations.is_empty());
    for (method, path) in &operations {
        assert_served(&api, method, path).await;
    }
}

/// The router serves every entry of `ROUTES` and, on those paths, no other method (HEAD
/// only where GET is served: axum answers it with the GET handler).
#[tokio::test]
async fn router_serves_exactly_the_routes() {
    let api = api_with_admin_token().await;
    for &(method, path) in crate::rest::ROUTES {
        assert_served(&api, method, path).await;
    }
    let paths: BTreeSet<&str> = crate::rest::ROUTES.iter().map(|&(_, path)| path).collect();
    for path in paths {
        for method in OPENAPI_METHODS.iter().map(|m| m.to_uppercase()) {
            let routed = |method: &str| crate::rest::ROUTES.contains(&(method, path));
            if routed(&method) || (method == "HEAD" && routed("GET")) {
                continue;
            }
            let (status, body) = api
                .call(method.parse().unwrap(), &concrete(path), Some(ADMIN_TOKEN))
                .await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but not in ROUTES: {body}"
            );
        }
    }
}

/// The document is served byte for byte as checked in, as JSON, and its version is the
/// crate's (the file cannot follow a version bump by itself).
#[tokio::test]
async fn openapi_is_served_as_checked_in() {
    let api = api(config()).await;
    let (status, headers, body) = api
        .call_raw(Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let checked_in = include_str!("../openapi.json");
    assert_eq!(body, checked_in.as_bytes());
    let doc: Value = serde_json::from_str(checked_in).unwrap();
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
}

// --- play URLs ---

fn edge(id: &str, region: &str, host: &str, viewers: &[(&str, u64)], egress_bps: u64) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        role: NodeRole::Edge,
        region: region.into(),
        addrs: NodeAddrs {
            rtmp: format!("{host}:1935"),
            http: format!("{host}:8080"),
        },
        viewers: viewers.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        egress_bps,
        updated_at_ms: registry::now_ms(),
        pulls: Default::default(),
    }
}

async fn heartbeat(registry: &dyn Registry, node: NodeInfo) {
    registry.heartbeat(&node, TTL).await.unwrap();
}

fn play_body(room: &str, node: &str, region: Option<&str>, rtmp: &str, http: &str) -> Value {
    json!({
        "room": room,
        "app": "live",
        "node_id": node,
        "region": region,
        "rtmp": format!("rtmp://{rtmp}/live/{room}"),
        "flv": format!("http://{http}/live/{room}.flv"),
        "hls": format!("http://{http}/live/{room}.m3u8"),
    })
}

#[tokio::test]
async fn play_picks_regional_then_least_loaded_edge() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    go_live(reg, "movie").await;
    // The origin heartbeats too (with viewers) but is never chosen while edges exist.
    let mut origin = node("origin-1", NodeRole::Origin, "10.0.0.1:8080", &[]);
    origin.region = "us".into();
    origin.addrs.rtmp = "10.0.0.1:1935".into();
    heartbeat(reg, origin).await;
    // eu: two edges, the second less loaded over all its streams (3 < 4 + 1).
    heartbeat(
        reg,
        edge(
            "edge-eu-1",
            "eu",
            "10.1.0.1",
            &[("live/movie", 4), ("live/other", 1)],
            10,
        ),
    )
    .await;
    heartbeat(
        reg,
        edge("edge-eu-2", "eu", "10.1.0.2", &[("live/other", 3)], 900_000),
    )
    .await;
    // us: one edge, the least loaded of all.
    heartbeat(
        reg,
        edge("edge-us-1", "us", "10.2.0.1", &[("live/movie", 1)], 50),
    )
    .await;
    // A control API node is never a play target.
    heartbeat(
        reg,
        node("api-1", NodeRole::ControlApi, "10.9.0.1:8090", &[]),
    )
    .await;

    // A region hint picks the least-loaded edge in that region...
    let (status, body) = api.get("/api/v1/rooms/movie/play?region=eu").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        play_body(
            "movie",
            "edge-eu-2",
            Some("eu"),
            "10.1.0.2:1935",
            "10.1.0.2:8080"
        )
    );
    let (_, body) = api.get("/api/v1/rooms/movie/play?region=us").await;
    assert_eq!(body["node_id"], "edge-us-1");
    // ...without a hint, or with one no edge is in, the least loaded overall.
    for uri in [
        "/api/v1/rooms/movie/play",
        "/api/v1/rooms/movie/play?region=",
        "/api/v1/rooms/movie/play?region=ap",
    ] {
        let (status, body) = api.get(uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(
            body,
            play_body(
                "movie",
                "edge-us-1",
                Some("us"),
                "10.2.0.1:1935",
                "10.2.0.1:8080"
            ),
            "{uri}"
        );
    }

    // Equal viewers: lower egress wins; equal viewers and egress: lowest node id, every time.
    heartbeat(
        reg,
        edge("edge-us-1", "us", "10.2.0.1", &[("live/movie", 3)], 50),
    )
    .await;
    heartbeat(
        reg,
        edge("edge-eu-1", "eu", "10.1.0.1", &[("live/movie", 3)], 40),
    )
    .await;
    assert_eq!(
        api.get("/api/v1/rooms/movie/play").await.1["node_id"],
        "edge-eu-1"
    );
    heartbeat(
        reg,
        edge("edge-eu-1", "eu", "10.1.0.1", &[("live/movie", 3)], 50),
    )
    .await;
    heartbeat(
        reg,
        edge("edge-eu-2", "eu", "10.1.0.2", &[("live/movie", 3)], 50),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            api.get("/api/v1/rooms/movie/play").await.1["node_id"],
            "edge-eu-1"
        );
        assert_eq!(
            api.get("/api/v1/rooms/movie/play?region=us").await.1["node_id"],
            "edge-us-1"
        );
    }
    // The selection itself, heartbeat order aside.
    let mut nodes = api.registry.nodes().await.unwrap();
    nodes.reverse();
    assert_eq!(
        crate::rooms::best_edge(&nodes, None).unwrap().id,
        "edge-eu-1"
    );
    assert_eq!(
        crate::rooms::best_edge(&nodes, Some("US")).unwrap().id,
        "edge-us-1"
    );

    // Once an edge's heartbeat is gone it is no longer chosen.
    api.registry.remove_node("edge-eu-1").await.unwrap();
    assert_eq!(
        api.get("/api/v1/rooms/movie/play?region=eu").await.1["node_id"],
        "edge-eu-2"
    );
}

#[tokio::test]
async fn play_falls_back_to_the_origin_without_edges() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    go_live(reg, "movie").await;
    // No heartbeat from the origin at all: the lease's addresses, region unknown.
    let (status, body) = api.get("/api/v1/rooms/movie/play?region=eu").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        play_body("movie", "origin-1", None, "10.0.0.1:1935", "10.0.0.1:8080")
    );
    // With its heartbeat, its region; other origins are not play targets.
    let mut origin = node("origin-1", NodeRole::Origin, "10.0.0.1:8080", &[]);
    origin.region = "us".into();
    heartbeat(reg, origin).await;
    heartbeat(
        reg,
        node("origin-0", NodeRole::Origin, "10.0.0.9:8080", &[]),
    )
    .await;
    let (status, body) = api.get("/api/v1/rooms/movie/play?region=eu").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        play_body(
            "movie",
            "origin-1",
            Some("us"),
            "10.0.0.1:1935",
            "10.0.0.1:8080"
        )
    );
    let (status, headers, _) = api
        .call_raw(Method::GET, "/api/v1/rooms/movie/play.flv", None)
        .await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers[header::LOCATION],
        "http://10.0.0.1:8080/live/movie.flv"
    );
}

#[tokio::test]
async fn play_errors() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    heartbeat(reg, edge("edge-1", "eu", "10.1.0.1", &[], 0)).await;
    // A room with a key but no publisher is not live.
    api.registry.get_or_create_key("quiet").await.unwrap();
    for room in ["quiet", "nobody"] {
        for suffix in ["play", "play.flv", "play.m3u8", "play.rtmp"] {
            let uri = format!("/api/v1/rooms/{room}/{suffix}");
            let (status, headers, body) = api.call_raw(Method::GET, &uri, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert!(headers.get(header::LOCATION).is_none());
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                body,
                json!({"error": "room is not live in app 'live'"}),
                "{uri}"
            );
        }
    }
    for uri in [
        "/api/v1/rooms/sk_abc/play",
        "/api/v1/rooms/.hidden/play.flv",
        "/api/v1/rooms/a%20b/play.m3u8",
    ] {
        let (status, body) = api.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid room name"),
            "{uri}"
        );
    }
    // Unknown formats are unknown endpoints.
    go_live(reg, "movie").await;
    assert_eq!(
        api.get("/api/v1/rooms/movie/play.mp4").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::POST, "/api/v1/rooms/movie/play", None)
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn play_redirects() {
    let api = api(ApiConfig {
        admin_token: Some("tok".into()),
        ..config()
    })
    .await;
    let reg = api.registry.as_ref();
    go_live(reg, "movie").await;
    heartbeat(
        reg,
        edge("edge-eu", "eu", "10.1.0.1", &[("live/movie", 9)], 0),
    )
    .await;
    heartbeat(reg, edge("edge-us", "us", "10.2.0.1", &[], 0)).await;
    for (suffix, location) in [
        ("play.flv", "http://10.1.0.1:8080/live/movie.flv"),
        ("play.m3u8", "http://10.1.0.1:8080/live/movie.m3u8"),
        ("play.rtmp", "rtmp://10.1.0.1:1935/live/movie"),
    ] {
        let uri = format!("/api/v1/rooms/movie/{suffix}?region=eu");
        // Auth as for every /api/v1 endpoint.
        let (status, headers, _) = api.call_raw(Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(headers.get(header::LOCATION).is_none());
        assert_eq!(
            api.call_raw(Method::GET, &uri, Some("nope")).await.0,
            StatusCode::UNAUTHORIZED
        );

        let (status, headers, body) = api.call_raw(Method::GET, &uri, Some("tok")).await;
        assert_eq!(status, StatusCode::FOUND, "{uri}");
        assert_eq!(headers[header::LOCATION], location, "{uri}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["node_id"], "edge-eu");
    }
    // Without the hint: the least-loaded edge.
    let (status, headers, _) = api
        .call_raw(Method::GET, "/api/v1/rooms/movie/play.m3u8", Some("tok"))
        .await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers[header::LOCATION],
        "http://10.2.0.1:8080/live/movie.m3u8"
    );
    // The JSON form needs the token too.
    assert_eq!(
        api.get("/api/v1/rooms/movie/play").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = api
        .call(Method::GET, "/api/v1/rooms/movie/play", Some("tok"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["node_id"], "edge-us");
}

// --- apps other than `live` ---

#[tokio::test]
async fn every_app_is_listed_with_its_app() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    api.get("/control/get?room=movie").await;
    api.get("/control/get?room=idle").await;
    // One room live in two apps, another only in `game`.
    go_live_in(reg, "game", "movie").await;
    go_live_in(reg, "live", "movie").await;
    go_live_in(reg, "game", "arena").await;
    heartbeat(
        reg,
        edge(
            "edge-1",
            "eu",
            "10.1.0.1",
            &[("game/movie", 3), ("live/movie", 1)],
            0,
        ),
    )
    .await;

    // By room, then app; the key is the room's, whatever the app.
    let summary = |body: &Value| -> Vec<(String, String, bool, bool, u64)> {
        body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["room"].as_str().unwrap().to_owned(),
                    r["app"].as_str().unwrap().to_owned(),
                    r["live"].as_bool().unwrap(),
                    r["has_key"].as_bool().unwrap(),
                    r["viewers"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let owned = |rows: &[(&str, &str, bool, bool, u64)]| -> Vec<(String, String, bool, bool, u64)> {
        rows.iter()
            .map(|&(room, app, live, has_key, viewers)| {
                (room.into(), app.into(), live, has_key, viewers)
            })
            .collect()
    };
    let (status, body) = api.get("/api/v1/rooms").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        summary(&body),
        owned(&[
            ("arena", "game", true, false, 2),
            ("movie", "game", true, true, 5),
            ("movie", "live", true, true, 3),
        ])
    );
    // `all` adds the keyed room that is live nowhere, under the default app, and nothing
    // for a keyed room that is live in some app.
    let (status, body) = api.get("/api/v1/rooms?all=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        summary(&body),
        owned(&[
            ("arena", "game", true, false, 2),
            ("idle", "live", false, true, 0),
            ("movie", "game", true, true, 5),
            ("movie", "live", true, true, 3),
        ])
    );

    // livego's livestat: every app's publishers, with URLs in their app.
    let (status, body) = api.get("/stat/livestat").await;
    assert_eq!(status, StatusCode::OK);
    let publishers: Vec<(&str, &str)> = body["data"]["publishers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap(), p["url"].as_str().unwrap()))
        .collect();
    assert_eq!(
        publishers,
        [
            ("game/arena", "rtmp://10.0.0.1:1935/game/arena"),
            ("game/movie", "rtmp://10.0.0.1:1935/game/movie"),
            ("live/movie", "rtmp://10.0.0.1:1935/live/movie"),
        ]
    );
    let game_movie_on_the_edge = body["data"]["players"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["key"] == "game/movie" && p["url"] == "http://10.1.0.1:8080/game/movie.flv")
        .count();
    assert_eq!(game_movie_on_the_edge, 3);
}

#[tokio::test]
async fn app_query_picks_the_stream_to_get_play_and_kick() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    api.get("/control/get?room=movie").await;
    go_live_in(reg, "game", "movie").await;

    // Get: `?app=game` is the live stream; no app (or an empty one) means `live`, where
    // the room has its key but no stream.
    let (status, game) = api.get("/api/v1/rooms/movie?app=game").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&game["app"], &game["live"], &game["has_key"]),
        (&json!("game"), &json!(true), &json!(true))
    );
    assert_eq!(game["origin"]["node_id"], "origin-1");
    let (status, live) = api.get("/api/v1/rooms/movie").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&live["app"], &live["live"], &live["has_key"]),
        (&json!("live"), &json!(false), &json!(true))
    );
    assert_eq!(api.get("/api/v1/rooms/movie?app=live").await.1, live);
    assert_eq!(api.get("/api/v1/rooms/movie?app=").await.1, live);

    // Play: URLs in the app asked for.
    let (status, play) = api.get("/api/v1/rooms/movie/play?app=game").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        play,
        json!({
            "room": "movie",
            "app": "game",
            "node_id": "origin-1",
            "region": null,
            "rtmp": "rtmp://10.0.0.1:1935/game/movie",
            "flv": "http://10.0.0.1:8080/game/movie.flv",
            "hls": "http://10.0.0.1:8080/game/movie.m3u8",
        })
    );
    for (suffix, location) in [
        ("play.flv", "http://10.0.0.1:8080/game/movie.flv"),
        ("play.m3u8", "http://10.0.0.1:8080/game/movie.m3u8"),
        ("play.rtmp", "rtmp://10.0.0.1:1935/game/movie"),
    ] {
        let uri = format!("/api/v1/rooms/movie/{suffix}?region=eu&app=game");
        let (status, headers, _) = api.call_raw(Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::FOUND, "{uri}");
        assert_eq!(headers[header::LOCATION], location, "{uri}");
    }
    assert_eq!(
        api.get("/api/v1/rooms/movie/play").await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "room is not live in app 'live'"})
        )
    );

    // Kick: without the app, `live/movie`, which is not live; the game publisher stays.
    assert_eq!(
        api.call(Method::POST, "/api/v1/rooms/movie/kick", None)
            .await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "room is not live in app 'live'"})
        )
    );
    assert!(!was_kicked(reg, "game", "movie").await);
    assert_eq!(
        api.call(Method::POST, "/api/v1/rooms/movie/kick?app=game", None)
            .await,
        (
            StatusCode::ACCEPTED,
            json!({"room": "movie", "app": "game", "kicked": true})
        )
    );
    assert!(was_kicked(reg, "game", "movie").await);
}

#[tokio::test]
async fn delete_kicks_the_stream_of_the_app_it_names() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    for room in ["movie", "show", "third"] {
        api.get(&format!("/control/get?room={room}")).await;
        go_live_in(reg, "game", room).await;
    }

    let (status, body) = api
        .call(Method::DELETE, "/api/v1/rooms/movie?app=game", None)
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"room": "movie", "app": "game", "deleted": true, "kicked": true})
        )
    );
    assert!(was_kicked(reg, "game", "movie").await);
    assert_eq!(api.registry.room("movie").await.unwrap(), None);

    // livego's delete takes `app` the same way.
    assert_eq!(
        api.get("/control/delete?room=show&app=game").await,
        (StatusCode::OK, json!({"status": 200, "data": "Ok"}))
    );
    assert!(was_kicked(reg, "game", "show").await);
    assert_eq!(api.registry.room("show").await.unwrap(), None);

    // Without the app: the key goes (it is the room's in every app) and `live/third`,
    // which is not live, is all that could be kicked.
    let (status, body) = api.call(Method::DELETE, "/api/v1/rooms/third", None).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"room": "third", "app": "live", "deleted": true, "kicked": false})
        )
    );
    assert_eq!(api.registry.room("third").await.unwrap(), None);
    let (status, body) = api
        .call(Method::DELETE, "/api/v1/rooms/third?app=game", None)
        .await;
    assert_eq!(
        (status, body["kicked"].clone()),
        (StatusCode::OK, json!(true))
    );
    assert!(was_kicked(reg, "game", "third").await);
}

/// Every route that takes `?app=` refuses a name no app can have, before it acts.
#[tokio::test]
async fn invalid_app_names_are_refused() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    api.get("/control/get?room=movie").await;
    go_live_in(reg, "game", "movie").await;
    let invalid = [
        "a%2Fb",
        ".hidden",
        "a%20b",
        "..",
        "g%C3%A9",
        &"x".repeat(65),
    ];
    for (&(method, path), app) in ROUTES_WITH_APP.iter().zip(invalid.iter().cycle()) {
        let livego = path.starts_with("/control/");
        let uri = if livego {
            format!("{path}?room=movie&app={app}")
        } else {
            format!("{}?app={app}", concrete(path))
        };
        let (status, body) = api.call(method.parse().unwrap(), &uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}");
        let message = if livego {
            assert_eq!(body["status"], 400);
            &body["data"]
        } else {
            &body["error"]
        };
        assert!(
            message.as_str().unwrap().starts_with("invalid app name"),
            "{method} {uri}: {body}"
        );
    }
    // Refused before anything was done.
    assert!(api.registry.room("movie").await.unwrap().is_some());
    assert!(!was_kicked(reg, "game", "movie").await);
}

#[tokio::test]
async fn apps_outside_the_configured_list_are_refused() {
    let api = api(ApiConfig {
        apps: vec!["live".into(), "game".into()],
        ..config()
    })
    .await;
    let reg = api.registry.as_ref();
    api.get("/control/get?room=movie").await;
    go_live_in(reg, "game", "movie").await;
    for &(method, path) in ROUTES_WITH_APP {
        let livego = path.starts_with("/control/");
        let uri = if livego {
            format!("{path}?room=movie&app=music")
        } else {
            format!("{}?app=music", concrete(path))
        };
        let (status, body) = api.call(method.parse().unwrap(), &uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}");
        let message = if livego {
            &body["data"]
        } else {
            &body["error"]
        };
        assert_eq!(
            message, "unknown app 'music': this server's apps are live, game",
            "{method} {uri}"
        );
    }
    assert!(api.registry.room("movie").await.unwrap().is_some());
    // The listed apps work, `live` by default.
    assert_eq!(api.get("/api/v1/rooms/movie").await.1["app"], "live");
    assert_eq!(
        api.call(Method::POST, "/api/v1/rooms/movie/kick?app=game", None)
            .await
            .0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn without_live_in_the_list_the_first_app_is_the_default() {
    let api = api(ApiConfig {
        apps: vec!["game".into(), "music".into()],
        ..config()
    })
    .await;
    let reg = api.registry.as_ref();
    api.get("/control/get?room=movie").await;
    api.get("/control/get?room=idle").await;
    go_live_in(reg, "game", "movie").await;

    let (status, movie) = api.get("/api/v1/rooms/movie").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&movie["app"], &movie["live"]),
        (&json!("game"), &json!(true))
    );
    let (_, all) = api.get("/api/v1/rooms?all=true").await;
    let listed: Vec<_> = all["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["room"].as_str().unwrap(), r["app"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("idle", "game"), ("movie", "game")]);
    assert_eq!(
        api.get("/api/v1/rooms/movie?app=live").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.call(Method::POST, "/api/v1/rooms/movie/kick", None)
            .await,
        (
            StatusCode::ACCEPTED,
            json!({"room": "movie", "app": "game", "kicked": true})
        )
    );
}

// --- health ---

/// A registry whose store is down.
struct DownRegistry;

#[async_trait::async_trait]
impl Registry for DownRegistry {
    fn owner_changes(&self) -> tokio::sync::broadcast::Receiver<registry::OwnerChange> {
        tokio::sync::broadcast::channel(1).1
    }
    async fn take_over_lease(
        &self,
        _: &registry::StreamLease,
        _: &str,
        _: std::time::Duration,
    ) -> registry::Result<bool> {
        down()
    }
    async fn get_or_create_key(&self, _: &str) -> registry::Result<String> {
        down()
    }
    async fn reset_key(&self, _: &str) -> registry::Result<String> {
        down()
    }
    async fn delete_room(&self, _: &str) -> registry::Result<bool> {
        down()
    }
    async fn room_for_key(&self, _: &str) -> registry::Result<Option<String>> {
        down()
    }
    async fn room(&self, _: &str) -> registry::Result<Option<Room>> {
        down()
    }
    async fn rooms(&self) -> registry::Result<Vec<Room>> {
        down()
    }
    async fn acquire_lease(&self, _: &StreamLease, _: Duration) -> registry::Result<LeaseOutcome> {
        down()
    }
    async fn refresh_lease(
        &self,
        _: &StreamLease,
        _: Duration,
    ) -> registry::Result<registry::RefreshOutcome> {
        down()
    }
    async fn release_lease(&self, _: &str, _: &str) -> registry::Result<bool> {
        down()
    }
    async fn lease(&self, _: &str) -> registry::Result<Option<StreamLease>> {
        down()
    }
    async fn leases(&self) -> registry::Result<Vec<StreamLease>> {
        down()
    }
    async fn kick(&self, _: &str) -> registry::Result<bool> {
        down()
    }
    async fn order(&self, _: &str, _: &registry::Order) -> registry::Result<bool> {
        down()
    }
    async fn put_pull(&self, _: &registry::PullSpec) -> registry::Result<()> {
        down()
    }
    async fn delete_pull(&self, _: &str) -> registry::Result<bool> {
        down()
    }
    async fn pulls(&self) -> registry::Result<Vec<registry::PullSpec>> {
        down()
    }
    async fn heartbeat(&self, _: &NodeInfo, _: Duration) -> registry::Result<()> {
        down()
    }
    async fn remove_node(&self, _: &str) -> registry::Result<()> {
        down()
    }
    async fn nodes(&self) -> registry::Result<Vec<NodeInfo>> {
        down()
    }
}

fn down<T>() -> registry::Result<T> {
    Err(RegistryError::Unavailable("connection refused".into()))
}

#[tokio::test]
async fn health_and_unavailable_registry() {
    let up = api(config()).await;
    assert_eq!(up.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(up.get("/readyz").await.0, StatusCode::OK);

    let api = api_with(config(), Arc::new(DownRegistry)).await;
    assert_eq!(api.get("/healthz").await.0, StatusCode::OK);
    let (status, body) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.as_str().unwrap().contains("connection refused"),
        "{body}"
    );
    let unavailable = json!({"status": 503, "data": "registry unavailable: connection refused"});
    for uri in [
        "/control/get?room=a",
        "/control/reset?room=a",
        "/control/delete?room=a",
        "/stat/livestat",
    ] {
        assert_eq!(
            api.get(uri).await,
            (StatusCode::SERVICE_UNAVAILABLE, unavailable.clone()),
            "{uri}"
        );
    }
    let v1 = json!({"error": "registry unavailable: connection refused"});
    for (method, uri) in [
        (Method::GET, "/api/v1/rooms"),
        (Method::GET, "/api/v1/rooms/a"),
        (Method::POST, "/api/v1/rooms/a/key"),
        (Method::POST, "/api/v1/rooms/a/kick"),
        (Method::DELETE, "/api/v1/rooms/a"),
        (Method::GET, "/api/v1/rooms/a/play"),
        (Method::GET, "/api/v1/rooms/a/play.flv"),
        (Method::GET, "/api/v1/rooms/a/play.m3u8?region=eu"),
    ] {
        assert_eq!(
            api.call(method, uri, None).await,
            (StatusCode::SERVICE_UNAVAILABLE, v1.clone()),
            "{uri}"
        );
    }
}

// --- access control ---

const GUARDED: [(&str, &str); 13] = [
    ("GET", "/control/get?room=a"),
    ("GET", "/control/reset?room=a"),
    ("GET", "/control/delete?room=a"),
    ("GET", "/stat/livestat"),
    ("GET", "/api/v1/rooms"),
    ("GET", "/api/v1/rooms/a"),
    ("POST", "/api/v1/rooms/a/key"),
    ("POST", "/api/v1/rooms/a/kick"),
    ("DELETE", "/api/v1/rooms/a"),
    ("GET", "/api/v1/rooms/a/play"),
    ("GET", "/api/v1/rooms/a/play?region=eu"),
    ("GET", "/api/v1/rooms/a/play.flv"),
    ("GET", "/api/v1/rooms/a/play.m3u8"),
];

#[tokio::test]
async fn admin_token_guards_every_control_endpoint() {
    let api = api(ApiConfig {
        admin_token: Some("s3cret-token".into()),
        ..config()
    })
    .await;
    for (method, uri) in GUARDED {
        let method: Method = method.parse().unwrap();
        for token in [None, Some("wrong"), Some("s3cret-token2"), Some("")] {
            let (status, headers, body) = api.call_raw(method.clone(), uri, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {token:?}");
            assert!(headers.get(header::WWW_AUTHENTICATE).is_some());
            let body: Value = serde_json::from_slice(&body).unwrap();
            if uri.starts_with("/api/v1") {
                assert!(body["error"].as_str().unwrap().starts_with("unauthorized"));
            } else {
                assert_eq!(body["status"], 401);
            }
        }
        let (status, _) = api.call(method.clone(), uri, Some("s3cret-token")).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    // Nothing was changed by the refused calls... and the authorised ones worked.
    assert_eq!(
        api.call(Method::GET, "/control/get?room=b", Some("s3cret-token"))
            .await
            .0,
        StatusCode::OK
    );
    // Probes and the document stay open.
    for uri in ["/healthz", "/readyz", "/api/v1/openapi.json"] {
        assert_eq!(api.get(uri).await.0, StatusCode::OK, "{uri}");
    }
    // The admin token is not accepted as ?jwt= (that is for JWTs).
    assert_eq!(
        api.get("/control/get?room=a&jwt=s3cret-token").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn jwt_guards_every_control_endpoint() {
    let secret = "jwt-secret";
    let api = api(ApiConfig {
        jwt_secret: Some(secret.into()),
        ..config()
    })
    .await;
    let now = registry::now_ms() / 1000;
    let valid =
        crate::auth::sign_hs256(&json!({"sub": "ops", "exp": now + 300}), secret.as_bytes());
    let no_exp = crate::auth::sign_hs256(&json!({"sub": "ops"}), secret.as_bytes());
    let expired =
        crate::auth::sign_hs256(&json!({"sub": "ops", "exp": now - 10}), secret.as_bytes());
    let wrong_secret = crate::auth::sign_hs256(&json!({"exp": now + 300}), b"other");
    for (method, uri) in GUARDED {
        let method: Method = method.parse().unwrap();
        let sep = if uri.contains('?') { '&' } else { '?' };
        assert_eq!(
            api.call(method.clone(), uri, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        for bad in [&expired, &wrong_secret, &"not.a.jwt".to_owned()] {
            assert_eq!(
                api.call(method.clone(), uri, Some(bad)).await.0,
                StatusCode::UNAUTHORIZED,
                "{uri}"
            );
            let with_query = format!("{uri}{sep}jwt={bad}");
            assert_eq!(
                api.call(method.clone(), &with_query, None).await.0,
                StatusCode::UNAUTHORIZED,
                "{uri}"
            );
        }
        for good in [&valid, &no_exp] {
            assert_ne!(
                api.call(method.clone(), uri, Some(good)).await.0,
                StatusCode::UNAUTHORIZED,
                "{uri}"
            );
            let with_query = format!("{uri}{sep}jwt={good}");
            assert_ne!(
                api.call(method.clone(), &with_query, None).await.0,
                StatusCode::UNAUTHORIZED,
                "{uri}"
            );
        }
    }
    let (status, body) = api.call(Method::GET, "/api/v1/rooms", Some(&expired)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized: token expired");
    // livego-style query token, full flow.
    let (status, body) = api
        .get(&format!("/control/get?room=movie&jwt={valid}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["data"].as_str().unwrap().starts_with("sk_"));
}

// --- gRPC and the real listener ---

mod grpc {
    use super::*;
    use proto::v1::control_client::ControlClient;
    use proto::v1::room_event::Kind;
    use proto::v1::{ListRoomsRequest, RoomRequest, WatchRoomsRequest};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::transport::Channel;

    struct Server {
        addr: SocketAddr,
        registry: Arc<dyn Registry>,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(config: ApiConfig) -> Server {
        let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::in_memory());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve(
            listener,
            config,
            registry.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            registry,
            stop: Some(stop),
            task,
        }
    }

    impl Server {
        async fn channel(&self) -> Channel {
            Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect()
                .await
                .unwrap()
        }

        async fn shutdown(mut self) {
            let _ = self.stop.take().unwrap().send(());
            tokio::time::timeout(Duration::from_secs(3), self.task)
                .await
                .expect("serve returns promptly on shutdown")
                .unwrap()
                .unwrap();
        }
    }

    /// `app` empty: the default app.
    fn room_request(room: &str, app: &str) -> RoomRequest {
        RoomRequest {
            room: room.into(),
            app: app.into(),
        }
    }

    fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn relays_over_grpc() {
        use proto::v1::{AddPullRequest, AddRelayRequest, ListPullsRequest, RemovePullRequest};
        let server = start(config()).await;
        let mut client = ControlClient::new(server.channel().await);
        let relay = |url: &str| AddRelayRequest {
            room: "movie".into(),
            app: String::new(),
            url: url.into(),
        };
        let status = client
            .add_relay(relay("rtmp://x/app/key"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        go_live(server.registry.as_ref(), "movie").await;
        let status = client
            .add_relay(relay("https://x/a.flv"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let added = client
            .add_relay(relay("rtmps://live.example.com:443/app/secretkey"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (added.node_id.as_str(), added.state.as_str()),
            ("origin-1", "connecting")
        );
        assert!(!added.url.contains("secretkey"), "{}", added.url);
        let listed = client
            .list_relays(room_request("movie", ""))
            .await
            .unwrap()
            .into_inner();
        assert!(
            listed.relays.is_empty(),
            "the origin has not reported it yet"
        );

        let pull = client
            .add_pull(AddPullRequest {
                room: "cam".into(),
                app: String::new(),
                url: "rtmp://camera.local/live/cam".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let pulls = client
            .list_pulls(ListPullsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pulls;
        assert_eq!(pulls.len(), 1);
        assert_eq!(
            (pulls[0].id.as_str(), pulls[0].room.as_str()),
            (pull.id.as_str(), "cam")
        );
        let remove = || RemovePullRequest {
            id: pull.id.clone(),
        };
        client.remove_pull(remove()).await.unwrap();
        let status = client.remove_pull(remove()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn recordings_over_grpc() {
        use proto::v1::{DeleteRecordingRequest, ListRecordingsRequest};
        let dir =
            std::env::temp_dir().join(format!("ferrolive-grpc-recordings-{}", std::process::id()));
        let file = dir.join("live/movie/2026-12-06T10-00-00Z.flv");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let mut flv = media::flv::header(true, false).to_vec();
        flv.extend_from_slice(&media::flv::encode_tag(8, 0, &[0xaf, 0, 0x12, 0x10]));
        flv.extend_from_slice(&media::flv::encode_tag(8, 1500, &[0xaf, 1, 0x21]));
        std::fs::write(&file, &flv).unwrap();
        let server = start(ApiConfig {
            record_dir: Some(dir.clone()),
            ..config()
        })
        .await;
        let mut client = ControlClient::new(server.channel().await);

        let status = client
            .start_recording(room_request("movie", ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        go_live(server.registry.as_ref(), "movie").await;
        let reply = client
            .start_recording(room_request("movie", ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (reply.recording, reply.node_id.as_str()),
            (true, "origin-1")
        );
        assert_eq!(
            record_order(server.registry.as_ref(), "live", "movie").await,
            Some(true)
        );
        client
            .stop_recording(room_request("movie", ""))
            .await
            .unwrap();
        assert_eq!(
            record_order(server.registry.as_ref(), "live", "movie").await,
            Some(false)
        );

        let listed = client
            .list_recordings(ListRecordingsRequest {
                app: String::new(),
                room: "movie".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .recordings;
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (
                listed[0].path.as_str(),
                listed[0].duration,
                &listed[0].codecs[..]
            ),
            (
                "live/movie/2026-12-06T10-00-00Z.flv",
                1.5,
                &["aac".to_owned()][..]
            )
        );
        let delete = |path: &str| DeleteRecordingRequest { path: path.into() };
        client
            .delete_recording(delete(&listed[0].path))
            .await
            .unwrap();
        assert!(!file.exists());
        let status = client
            .delete_recording(delete(&listed[0].path))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        let status = client
            .delete_recording(delete("../../etc/passwd"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        server.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn control_service_over_the_wire() {
        let server = start(config()).await;
        // REST over HTTP/1.1 on the same port.
        let response = http_get(server.addr, "/control/get?room=movie").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""status":200"#), "{response}");

        let mut client = ControlClient::new(server.channel().await);
        let key = client
            .get_key(room_request("movie", ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(key.room, "movie");
        assert!(response.contains(&key.key), "the same key as over REST");

        let status = client
            .get_key(room_request("sk_bad", ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let status = client
            .get_room(room_request("nothing", ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        let status = client
            .kick_publisher(room_request("movie", ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);

        assert!(client
            .list_rooms(ListRoomsRequest {})
            .await
            .unwrap()
            .into_inner()
            .rooms
            .is_empty());
        go_live(server.registry.as_ref(), "movie").await;
        server
            .registry
            .heartbeat(
                &node(
                    "edge-1",
                    NodeRole::Edge,
                    "10.0.0.9:8080",
                    &[("live/movie", 4)],
                ),
                TTL,
            )
            .await
            .unwrap();
        let rooms = client
            .list_rooms(ListRoomsRequest {})
            .await
            .unwrap()
            .into_inner()
            .rooms;
        assert_eq!(rooms.len(), 1);
        let room = &rooms[0];
        assert_eq!(
            (
                room.room.as_str(),
                room.app.as_str(),
                room.live,
                room.has_key
            ),
            ("movie", "live", true, true)
        );
        assert_eq!(
            (room.origin_node_id.as_str(), room.origin_rtmp_addr.as_str()),
            ("origin-1", "10.0.0.1:1935")
        );
        assert_eq!(
            (
                room.video_codec.as_str(),
                room.width,
                room.height,
                room.bitrate_kbps
            ),
            ("H264", 1280, 720, 2400)
        );
        assert_eq!(room.viewers, 6);
        assert_eq!(room.viewers_by_node.len(), 2);
        let one = client
            .get_room(room_request("movie", ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(one.origin_node_id, "origin-1");

        let new_key = client
            .reset_key(room_request("movie", ""))
            .await
            .unwrap()
            .into_inner()
            .key;
        assert_ne!(new_key, key.key);
        assert_eq!(server.registry.room_for_key(&key.key).await.unwrap(), None);
        client
            .kick_publisher(room_request("movie", ""))
            .await
            .unwrap();
        client.delete_room(room_request("movie", "")).await.unwrap();
        let status = client
            .delete_room(room_request("idle", ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn rooms_of_other_apps_over_grpc() {
        let server = start(config()).await;
        let reg = server.registry.as_ref();
        let mut client = ControlClient::new(server.channel().await);
        client.get_key(room_request("movie", "")).await.unwrap();
        go_live_in(reg, "game", "movie").await;

        let rooms = client
            .list_rooms(ListRoomsRequest {})
            .await
            .unwrap()
            .into_inner()
            .rooms;
        let listed: Vec<_> = rooms
            .iter()
            .map(|r| (r.room.as_str(), r.app.as_str(), r.live, r.has_key))
            .collect();
        assert_eq!(listed, [("movie", "game", true, true)]);

        let game = client
            .get_room(room_request("movie", "game"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (game.app.as_str(), game.live, game.origin_node_id.as_str()),
            ("game", true, "origin-1")
        );
        // An empty app is the default app, where the room is not live.
        let live = client
            .get_room(room_request("movie", ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((live.app.as_str(), live.live), ("live", false));
        let status = client
            .get_room(room_request("movie", "a/b"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("invalid app name"),
            "{status:?}"
        );

        let status = client
            .kick_publisher(room_request("movie", ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "room is not live in app 'live'");
        assert!(!was_kicked(reg, "game", "movie").await);
        let kicked = client
            .kick_publisher(room_request("movie", "game"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (kicked.room.as_str(), kicked.app.as_str()),
            ("movie", "game")
        );
        assert!(was_kicked(reg, "game", "movie").await);

        go_live_in(reg, "game", "movie").await;
        let deleted = client
            .delete_room(room_request("movie", "game"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (deleted.room.as_str(), deleted.app.as_str(), deleted.kicked),
            ("movie", "game", true)
        );
        assert!(was_kicked(reg, "game", "movie").await);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn apps_outside_the_configured_list_over_grpc() {
        let server = start(ApiConfig {
            apps: vec!["game".into()],
            ..config()
        })
        .await;
        let mut client = ControlClient::new(server.channel().await);
        go_live_in(server.registry.as_ref(), "game", "movie").await;
        let status = client
            .kick_publisher(room_request("movie", "music"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "unknown app 'music': this server's apps are game"
        );
        // No app: the only configured app.
        let room = client
            .get_room(room_request("movie", ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((room.app.as_str(), room.live), ("game", true));
        server.shutdown().await;
    }

    async fn next_event(
        events: &mut tonic::Streaming<proto::v1::RoomEvent>,
    ) -> proto::v1::RoomEvent {
        tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("stream open")
    }

    #[tokio::test]
    async fn watch_rooms_reports_started_and_stopped() {
        let server = start(config()).await;
        go_live(server.registry.as_ref(), "before").await;
        let mut client = ControlClient::new(server.channel().await);
        let mut events = client
            .watch_rooms(WatchRoomsRequest {})
            .await
            .unwrap()
            .into_inner();

        go_live(server.registry.as_ref(), "movie").await;
        let started = next_event(&mut events).await;
        assert_eq!(started.kind, Kind::Started as i32);
        assert_eq!(
            (
                started.room.as_str(),
                started.app.as_str(),
                started.node_id.as_str()
            ),
            ("movie", "live", "origin-1")
        );
        assert!(started.at_ms > 0);

        // Streams of other apps too, with their app.
        go_live_in(server.registry.as_ref(), "game", "movie").await;
        let started = next_event(&mut events).await;
        assert_eq!(started.kind, Kind::Started as i32);
        assert_eq!(
            (started.room.as_str(), started.app.as_str()),
            ("movie", "game")
        );

        assert!(server
            .registry
            .release_lease("live/movie", "s1")
            .await
            .unwrap());
        let stopped = next_event(&mut events).await;
        assert_eq!(stopped.kind, Kind::Stopped as i32);
        assert_eq!(
            (stopped.room.as_str(), stopped.app.as_str()),
            ("movie", "live")
        );

        // Shutdown ends the stream and the server, even with the watch open.
        server.shutdown().await;
        let end = tokio::time::timeout(Duration::from_secs(3), events.message())
            .await
            .expect("stream ends");
        assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    }

    #[tokio::test]
    async fn health_reflection_and_auth() {
        let server = start(ApiConfig {
            admin_token: Some("tok".into()),
            ..config()
        })
        .await;
        let channel = server.channel().await;

        // Health needs no token.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for service in ["ferrolive.v1.Control", ""] {
            let reply = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                reply.status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }

        // Reflection lists the services.
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("{reply:?}")
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"ferrolive.v1.Control"), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

        // The same over v1alpha, which many tools still speak.
        {
            use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
            let mut reflection = ServerReflectionClient::new(channel.clone());
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut replies = reflection
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .expect("v1alpha reflection is served")
                .into_inner();
            let reply = replies.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
                panic!("{reply:?}")
            };
            let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
            assert!(names.contains(&"ferrolive.v1.Control"), "{names:?}");
        }

        // Control needs the token.
        let mut client = ControlClient::new(channel);
        let status = client.get_key(room_request("movie", "")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status = client
            .list_rooms(with_token(ListRoomsRequest {}, "wrong"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let status = client.watch_rooms(WatchRoomsRequest {}).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let key = client
            .get_key(with_token(room_request("movie", ""), "tok"))
            .await
            .unwrap()
            .into_inner();
        assert!(key.key.starts_with("sk_"));
        assert!(client
            .list_rooms(with_token(ListRoomsRequest {}, "tok"))
            .await
            .is_ok());

        // REST on the same port: guarded, probes open, unknown gRPC methods unimplemented.
        assert!(http_get(server.addr, "/stat/livestat")
            .await
            .starts_with("HTTP/1.1 401"));
        assert!(http_get(server.addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200"));
        server.shutdown().await;
    }
}

#[test]
fn watch_diff() {
    use proto::v1::room_event::Kind;
    let snap = |entries: &[(&str, &str, &str, &str)]| {
        entries
            .iter()
            .map(|(r, a, n, s)| {
                (
                    (r.to_string(), a.to_string()),
                    (n.to_string(), s.to_string()),
                )
            })
            .collect()
    };
    let old = snap(&[
        ("a", "live", "o1", "s1"),
        ("b", "live", "o1", "s2"),
        ("b", "game", "o1", "s5"),
    ]);
    let new = snap(&[
        ("b", "live", "o2", "s3"),
        ("c", "live", "o1", "s4"),
        ("b", "game", "o1", "s5"),
        ("a", "game", "o2", "s6"),
    ]);
    let events = crate::grpc::diff(&old, &new, 7);
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.room.as_str(),
                e.app.as_str(),
                e.node_id.as_str(),
                e.at_ms,
            )
        })
        .collect();
    // By room then app; the same room in another app is another stream.
    assert_eq!(
        summary,
        [
            (Kind::Stopped as i32, "a", "live", "o1", 7),
            (Kind::Stopped as i32, "b", "live", "o1", 7),
            (Kind::Started as i32, "a", "game", "o2", 7),
            (Kind::Started as i32, "b", "live", "o2", 7),
            (Kind::Started as i32, "c", "live", "o1", 7),
        ]
    );
    assert!(crate::grpc::diff(&new, &new, 8).is_empty());
}

#[test]
fn unauthenticated_api_binds_loopback_only() {
    let open = ApiConfig {
        addr: "0.0.0.0:8090".parse().unwrap(),
        ..ApiConfig::default()
    };
    assert_eq!(
        crate::listen_addr(&open),
        ("127.0.0.1:8090".parse().unwrap(), true)
    );
    let v6 = ApiConfig {
        addr: "[::]:8090".parse().unwrap(),
        ..ApiConfig::default()
    };
    assert_eq!(
        crate::listen_addr(&v6),
        ("127.0.0.1:8090".parse().unwrap(), true)
    );
    let local = ApiConfig {
        addr: "[::1]:9000".parse().unwrap(),
        ..ApiConfig::default()
    };
    assert_eq!(
        crate::listen_addr(&local),
        ("[::1]:9000".parse().unwrap(), false)
    );
    let guarded = ApiConfig {
        admin_token: Some("t".into()),
        ..open.clone()
    };
    assert_eq!(
        crate::listen_addr(&guarded),
        ("0.0.0.0:8090".parse().unwrap(), false)
    );
    let jwt = ApiConfig {
        jwt_secret: Some("s".into()),
        ..open
    };
    assert_eq!(
        crate::listen_addr(&jwt),
        ("0.0.0.0:8090".parse().unwrap(), false)
    );
}

// --- recordings ---

#[tokio::test]
async fn recording_is_started_and_stopped_on_the_origin_holding_the_room() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    let (status, body) = api
        .call(Method::POST, "/api/v1/rooms/movie/record", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    go_live_in(reg, "game", "movie").await;
    let (status, body) = api
        .call(Method::POST, "/api/v1/rooms/movie/record?app=game", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body,
        json!({ "room": "movie", "app": "game", "recording": true, "node_id": "origin-1" })
    );
    assert_eq!(record_order(reg, "game", "movie").await, Some(true));
    let (status, _) = api
        .call(Method::DELETE, "/api/v1/rooms/movie/record?app=game", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(record_order(reg, "game", "movie").await, Some(false));
    assert_eq!(
        record_order(reg, "game", "movie").await,
        None,
        "answered once"
    );
    assert_eq!(
        api.get("/api/v1/rooms/movie?app=game").await.1["recording"],
        false
    );

    // An origin without a record folder says so in its lease: 409, and nothing is asked.
    let mut no_folder = lease_in("live", "other", "origin-2", "s9");
    no_folder.recording = None;
    reg.acquire_lease(&no_folder, TTL).await.unwrap();
    let (status, body) = api
        .call(Method::POST, "/api/v1/rooms/other/record", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--record-dir"),
        "{body}"
    );
}

#[tokio::test]
async fn recordings_are_listed_and_deleted_from_the_folder() {
    let (status, body) = api(config()).await.get("/api/v1/recordings").await;
    assert_eq!(status, StatusCode::CONFLICT, "no folder: {body}");

    let dir = std::env::temp_dir().join(format!("ferrolive-api-recordings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |path: &str, bytes: &[u8]| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    // An FLV file of 4.2 s: an H.264 sequence header at 0 and a frame at 4200 ms.
    let mut flv = media::flv::header(false, true).to_vec();
    flv.extend_from_slice(&media::flv::encode_tag(
        9,
        0,
        &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f],
    ));
    flv.extend_from_slice(&media::flv::encode_tag(9, 4200, &[0x27, 1, 0, 0, 0, 0]));
    write("live/movie/2026-12-06T10-00-00Z.flv", &flv);
    write("live/movie/notes.txt", b"not a recording");
    write("game/movie/2026-12-06T09-00-00Z.flv", &flv);
    let api = api(ApiConfig {
        record_dir: Some(dir.clone()),
        ..config()
    })
    .await;

    let (status, body) = api.get("/api/v1/recordings").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let paths: Vec<&str> = body["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "game/movie/2026-12-06T09-00-00Z.flv",
            "live/movie/2026-12-06T10-00-00Z.flv"
        ]
    );
    let (_, body) = api.get("/api/v1/recordings?app=live&room=movie").await;
    assert_eq!(
        body["recordings"],
        json!([{
            "path": "live/movie/2026-12-06T10-00-00Z.flv",
            "app": "live",
            "room": "movie",
            "size": flv.len(),
            "start": "2026-12-06T10:00:00Z",
            "duration": 4.2,
            "codecs": ["h264"],
        }])
    );
    assert_eq!(
        api.get("/api/v1/recordings?room=other").await.1["recordings"],
        json!([])
    );

    let (status, _) = api
        .call(
            Method::DELETE,
            "/api/v1/recordings/live/movie/2026-12-06T10-00-00Z.flv",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!dir.join("live/movie/2026-12-06T10-00-00Z.flv").exists());
    for gone in [
        "/api/v1/recordings/live/movie/2026-12-06T10-00-00Z.flv",
        "/api/v1/recordings/live/movie/notes.txt",
        "/api/v1/recordings/live/movie/..%2f..%2fgame%2fmovie%2f2026-12-06T09-00-00Z.flv",
    ] {
        let (status, _) = api.call(Method::DELETE, gone, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    }
    assert!(dir.join("game/movie/2026-12-06T09-00-00Z.flv").exists());
    assert!(dir.join("live/movie/notes.txt").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

// --- relays ---

/// The orders the origin of `app/room` (taken live by [`go_live_in`]) sees at its next
/// lease refresh.
async fn orders(registry: &dyn Registry, app: &str, room: &str) -> Vec<registry::Order> {
    match registry
        .refresh_lease(&lease_in(app, room, "origin-1", "s1"), TTL)
        .await
        .unwrap()
    {
        registry::RefreshOutcome::Orders(orders) => orders,
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn forwards_are_asked_of_the_origin_holding_the_room() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    let url = "rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop";
    let (status, body) = api
        .send_json(
            Method::POST,
            "/api/v1/rooms/movie/relays",
            json!({ "url": url }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    go_live(reg, "movie").await;
    for (bad, why) in [
        (
            json!({ "url": "http://example.com/live/x.flv" }),
            "not rtmp",
        ),
        (json!({ "url": "rtmp://" }), "malformed"),
        (json!({ "uri": url }), "no url"),
    ] {
        let (status, body) = api
            .send_json(Method::POST, "/api/v1/rooms/movie/relays", bad)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
    }
    let (status, body) = api
        .send_json(
            Method::POST,
            "/api/v1/rooms/movie/relays",
            json!({ "url": url }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["node_id"], "origin-1");
    // The key is never shown whole.
    assert!(!body.to_string().contains("abcd-efgh-ijkl-mnop"), "{body}");
    assert_eq!(
        orders(reg, "live", "movie").await,
        [registry::Order::AddRelay {
            id: id.clone(),
            url: url.into()
        }]
    );

    // The origin reports it in the lease; the API lists what it reports.
    let mut reported = lease_in("live", "movie", "origin-1", "s1");
    reported.relays = vec![registry::RelayInfo {
        id: id.clone(),
        url: "rtmp://a.rtmp.youtube.com/live2/abcd…".into(),
        state: "live".into(),
        bytes: 1234,
        ..Default::default()
    }];
    reg.refresh_lease(&reported, TTL).await.unwrap();
    let (status, body) = api.get("/api/v1/rooms/movie/relays").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["relays"][0]["id"], id.as_str());
    assert_eq!(body["relays"][0]["state"], "live");
    assert_eq!(
        api.get("/api/v1/rooms/movie").await.1["relays"][0]["bytes"],
        1234
    );

    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/rooms/movie/relays/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        orders(reg, "live", "movie").await,
        [registry::Order::RemoveRelay { id: id.clone() }]
    );

    // livego's /control/push: the same relay by its URL.
    let push = |oper: &str| format!("/control/push?oper={oper}&app=live&name=movie&url={url}");
    let (status, body) = api.get(&push("start")).await;
    assert_eq!(
        (status, &body["data"]),
        (StatusCode::OK, &json!("Ok")),
        "{body}"
    );
    let (status, _) = api.get(&push("stop")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        orders(reg, "live", "movie").await,
        [
            registry::Order::AddRelay {
                id: id.clone(),
                url: url.into()
            },
            registry::Order::RemoveRelay { id }
        ]
    );
    let (status, _) = api.get("/control/push?oper=start&name=movie").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pulls_are_kept_in_the_registry_with_the_state_their_origin_reports() {
    let api = api(config()).await;
    let reg = api.registry.as_ref();
    let url = "rtmp://camera.local/live/secret-key";
    let (status, body) = api
        .send_json(
            Method::POST,
            "/api/v1/pulls",
            json!({ "room": "cam", "url": url }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&body["app"], &body["live"], &body["node_id"]),
        (&json!("live"), &json!(false), &Value::Null)
    );
    assert!(!body.to_string().contains("secret-key"), "{body}");
    assert_eq!(reg.pulls().await.unwrap()[0].url, url);

    // An origin runs it and says so in its heartbeat.
    let mut origin = node("origin-1", NodeRole::Origin, "10.0.0.1:8080", &[]);
    origin.pulls.insert(
        "live/cam".into(),
        registry::RelayInfo {
            id: id.clone(),
            state: "retrying".into(),
            error: Some("connection refused".into()),
            ..Default::default()
        },
    );
    reg.heartbeat(&origin, TTL).await.unwrap();
    let (_, body) = api.get("/api/v1/pulls").await;
    assert_eq!(body["pulls"][0]["node_id"], "origin-1");
    assert_eq!(body["pulls"][0]["state"], "retrying");
    assert_eq!(body["pulls"][0]["error"], "connection refused");

    // A new source for the room replaces the old.
    let (status, _) = api
        .send_json(
            Method::POST,
            "/api/v1/pulls",
            json!({ "app": "live", "room": "cam", "url": "http://other.local/live/cam.flv" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let pulls = reg.pulls().await.unwrap();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/pulls/{}", pulls[0].id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/pulls/{}", pulls[0].id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in [
        json!({ "room": "cam", "url": "ftp://x/y" }),
        json!({ "room": "sk_nope", "url": url }),
        json!({ "room": "cam" }),
    ] {
        let (status, body) = api.send_json(Method::POST, "/api/v1/pulls", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }

    // livego's /control/pull.
    let (status, body) = api
        .get(&format!(
            "/control/pull?oper=start&app=live&name=cam&url={url}"
        ))
        .await;
    assert_eq!(
        (status, &body["data"]),
        (StatusCode::OK, &json!("Ok")),
        "{body}"
    );
    assert_eq!(reg.pulls().await.unwrap().len(), 1);
    let (status, _) = api.get("/control/pull?oper=stop&app=live&name=cam").await;
    assert_eq!(status, StatusCode::OK);
    assert!(reg.pulls().await.unwrap().is_empty());
    let (status, _) = api.get("/control/pull?oper=stop&app=live&name=cam").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// `/api/v1/nodes` lists the nodes' heartbeats (behind the token); `/console` is the page,
/// open, with nothing in it that the API does not give.
#[tokio::test]
async fn nodes_are_listed_and_the_console_is_a_page() {
    let api = api(ApiConfig {
        admin_token: Some("t".into()),
        ..config()
    })
    .await;
    api.registry
        .heartbeat(
            &node(
                "edge-1",
                NodeRole::Edge,
                "10.0.0.9:8080",
                &[("live/movie", 3)],
            ),
            TTL,
        )
        .await
        .unwrap();
    let (status, _) = api.call(Method::GET, "/api/v1/nodes", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = api.call(Method::GET, "/api/v1/nodes", Some("t")).await;
    assert_eq!(status, StatusCode::OK);
    let edge = &body["nodes"][0];
    assert_eq!(
        (&edge["id"], &edge["role"], &edge["addrs"]["http"]),
        (&json!("edge-1"), &json!("edge"), &json!("10.0.0.9:8080"))
    );
    assert_eq!(edge["viewers"]["live/movie"], 3);
    assert!(edge["heartbeat_age_ms"]
        .as_u64()
        .is_some_and(|ms| ms < 5_000));
    assert!(edge.get("pulls").is_none(), "{edge}");
    let (status, headers, page) = api.call_raw(Method::GET, "/console", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("/api/v1/nodes") && page.contains("/api/v1/rooms?all=true"));
}

/// With a play secret the API mints play tokens any node accepts, and its play answers
/// carry one; without it, minting is refused.
#[tokio::test]
async fn play_tokens_are_minted_and_put_in_play_urls() {
    let secret = media::token::PlaySecret::new(b"cluster secret");
    let api = api(ApiConfig {
        play_secret: Some(secret.clone()),
        ..config()
    })
    .await;
    let now_s = registry::now_ms() / 1000;
    let client: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let (status, minted) = api
        .send_json(
            Method::POST,
            "/api/v1/rooms/movie/play-token",
            json!({"lifetime_s": 60, "ip": "192.0.2.7"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let token = minted["token"].as_str().unwrap();
    assert_eq!(
        secret.verify("live/movie", Some(token), now_s, client),
        Ok(())
    );
    let elsewhere = "192.0.2.8".parse().unwrap();
    assert!(secret
        .verify("live/movie", Some(token), now_s, elsewhere)
        .is_err());
    assert!(secret
        .verify("live/other", Some(token), now_s, client)
        .is_err());
    assert!(secret
        .verify("live/movie", Some(token), now_s + 62, client)
        .is_err());
    let expires = minted["expires_at_ms"].as_u64().unwrap();
    assert!(
        (now_s * 1000 + 59_000..=now_s * 1000 + 62_000).contains(&expires),
        "{minted}"
    );
    // Without a body: an hour, from anywhere.
    let (status, minted) = api
        .call(Method::POST, "/api/v1/rooms/movie/play-token", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let token = minted["token"].as_str().unwrap();
    assert_eq!(
        secret.verify("live/movie", Some(token), now_s + 3500, elsewhere),
        Ok(())
    );
    for bad in [
        json!({"lifetime_s": 0}),
        json!({"ip": "nowhere"}),
        json!({"other": 1}),
    ] {
        let (status, body) = api
            .send_json(Method::POST, "/api/v1/rooms/movie/play-token", bad.clone())
            .await;
        assert!(status.is_client_error(), "{bad}: {status} {body}");
    }
    // The play answer's URLs carry a token.
    go_live(api.registry.as_ref(), "movie").await;
    let (status, play) = api.get("/api/v1/rooms/movie/play").await;
    assert_eq!(status, StatusCode::OK, "{play}");
    let token = play["token"].as_str().unwrap();
    assert_eq!(
        secret.verify("live/movie", Some(token), now_s, elsewhere),
        Ok(())
    );
    for url in ["rtmp", "flv", "hls"] {
        let url = play[url].as_str().unwrap();
        assert!(url.ends_with(&format!("?token={token}")), "{url}");
    }
    // No secret, no tokens.
    let plain = self::api(config()).await;
    let (status, _) = plain
        .call(Method::POST, "/api/v1/rooms/movie/play-token", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
