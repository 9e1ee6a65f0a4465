//! REST: livego-compatible `/control/*` and `/stat/livestat`, the `/api/v1` resource API,
//! `/healthz` and `/readyz`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::apps::{split_stream, App};
use crate::auth::AuthError;
use crate::rooms::{viewers_by_node, ApiError, ApiResult};
use crate::AppState;

/// At most this many entries in livestat's `players` (one per viewer, as livego lists them).
const MAX_PLAYER_ENTRIES: u64 = 10_000;

/// Every REST route as (method, path): the one list `router` serves and `openapi.json`
/// documents, so that neither can gain or lose a route without the other (the tests hold the
/// document to this list, operation for operation). livego's endpoints answer POST as well
/// as GET, as livego does; the document lists both. Like every axum GET route, the GET
/// routes also answer HEAD, which neither this list nor the document spells out.
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/control/get"),
    ("POST", "/control/get"),
    ("GET", "/control/reset"),
    ("POST", "/control/reset"),
    ("GET", "/control/delete"),
    ("POST", "/control/delete"),
    ("GET", "/control/push"),
    ("POST", "/control/push"),
    ("GET", "/control/pull"),
    ("POST", "/control/pull"),
    ("GET", "/stat/livestat"),
    ("GET", "/api/v1/rooms"),
    ("GET", "/api/v1/rooms/{room}"),
    ("DELETE", "/api/v1/rooms/{room}"),
    ("POST", "/api/v1/rooms/{room}/key"),
    ("POST", "/api/v1/rooms/{room}/kick"),
    ("POST", "/api/v1/rooms/{room}/record"),
    ("DELETE", "/api/v1/rooms/{room}/record"),
    ("GET", "/api/v1/recordings"),
    ("DELETE", "/api/v1/recordings/{app}/{room}/{file}"),
    ("POST", "/api/v1/rooms/{room}/relays"),
    ("GET", "/api/v1/rooms/{room}/relays"),
    ("DELETE", "/api/v1/rooms/{room}/relays/{id}"),
    ("POST", "/api/v1/pulls"),
    ("GET", "/api/v1/pulls"),
    ("DELETE", "/api/v1/pulls/{id}"),
    ("POST", "/api/v1/rooms/{room}/play-token"),
    ("GET", "/api/v1/rooms/{room}/play"),
    ("GET", "/api/v1/rooms/{room}/play.flv"),
    ("GET", "/api/v1/rooms/{room}/play.m3u8"),
    ("GET", "/api/v1/rooms/{room}/play.rtmp"),
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/console"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

/// The OpenAPI 3.0 description of [`ROUTES`], kept as a file so that what clients get is
/// what is reviewed and diffed; served byte for byte.
const OPENAPI_DOCUMENT: &str = include_str!("../openapi.json");

/// The REST router: exactly the routes in [`ROUTES`] (nothing is added any other way), and
/// `fallback` for any other path.
pub fn router(state: AppState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, &(method, path)| {
            // Routes on one path merge into one method router (axum allows that).
            router.route(path, endpoint(&state, method, path))
        })
        .fallback(fallback)
        .with_state(state)
}

/// Which credentials a route needs, and in which envelope a refusal comes.
enum Guard {
    /// Credentials required; refusals in livego's `{"status", "data"}` envelope.
    Livego,
    /// Credentials required; refusals as `{"error"}`.
    V1,
    /// No credentials: probes and the OpenAPI document.
    Open,
}

/// The handler for one entry of [`ROUTES`], behind its guard. Every arm names its guard, so
/// a new route cannot be left open by omission.
fn endpoint(state: &AppState, method: &str, path: &str) -> MethodRouter<AppState> {
    let (guard, handler) = match (method, path) {
        ("GET", "/control/get") => (Guard::Livego, get(control_get)),
        ("POST", "/control/get") => (Guard::Livego, post(control_get)),
        ("GET", "/control/reset") => (Guard::Livego, get(control_reset)),
        ("POST", "/control/reset") => (Guard::Livego, post(control_reset)),
        ("GET", "/control/delete") => (Guard::Livego, get(control_delete)),
        ("POST", "/control/delete") => (Guard::Livego, post(control_delete)),
        ("GET", "/control/push") => (Guard::Livego, get(control_push)),
        ("POST", "/control/push") => (Guard::Livego, post(control_push)),
        ("GET", "/control/pull") => (Guard::Livego, get(control_pull)),
        ("POST", "/control/pull") => (Guard::Livego, post(control_pull)),
        ("GET", "/stat/livestat") => (Guard::Livego, get(livestat)),
        ("GET", "/api/v1/rooms") => (Guard::V1, get(v1_list_rooms)),
        ("GET", "/api/v1/rooms/{room}") => (Guard::V1, get(v1_get_room)),
        ("DELETE", "/api/v1/rooms/{room}") => (Guard::V1, delete(v1_delete_room)),
        ("POST", "/api/v1/rooms/{room}/key") => (Guard::V1, post(v1_rotate_key)),
        ("POST", "/api/v1/rooms/{room}/kick") => (Guard::V1, post(v1_kick)),
        ("POST", "/api/v1/rooms/{room}/record") => (Guard::V1, post(v1_record_start)),
        ("DELETE", "/api/v1/rooms/{room}/record") => (Guard::V1, delete(v1_record_stop)),
        ("GET", "/api/v1/recordings") => (Guard::V1, get(v1_recordings)),
        ("DELETE", "/api/v1/recordings/{app}/{room}/{file}") => {
            (Guard::V1, delete(v1_delete_recording))
        }
        ("POST", "/api/v1/rooms/{room}/relays") => (Guard::V1, post(v1_add_relay)),
        ("GET", "/api/v1/rooms/{room}/relays") => (Guard::V1, get(v1_relays)),
        ("DELETE", "/api/v1/rooms/{room}/relays/{id}") => (Guard::V1, delete(v1_remove_relay)),
        ("POST", "/api/v1/pulls") => (Guard::V1, post(v1_add_pull)),
        ("GET", "/api/v1/pulls") => (Guard::V1, get(v1_pulls)),
        ("DELETE", "/api/v1/pulls/{id}") => (Guard::V1, delete(v1_remove_pull)),
        ("GET", "/api/v1/rooms/{room}/play") => (Guard::V1, get(v1_play)),
        ("GET", "/api/v1/rooms/{room}/play.flv") => (Guard::V1, play_redirect(PlayFormat::Flv)),
        ("GET", "/api/v1/rooms/{room}/play.m3u8") => (Guard::V1, play_redirect(PlayFormat::Hls)),
        ("GET", "/api/v1/rooms/{room}/play.rtmp") => (Guard::V1, play_redirect(PlayFormat::Rtmp)),
        ("GET", "/api/v1/nodes") => (Guard::V1, get(v1_nodes)),
        ("POST", "/api/v1/rooms/{room}/play-token") => (Guard::V1, post(v1_play_token)),
        ("GET", "/api/v1/openapi.json") => (Guard::Open, get(openapi)),
        // The page holds nothing: what it shows comes from the API, with the token the
        // operator types in.
        ("GET", "/console") => (Guard::Open, get(console)),
        ("GET", "/healthz") => (Guard::Open, get(healthz)),
        ("GET", "/readyz") => (Guard::Open, get(readyz)),
        _ => panic!("{method} {path} is in ROUTES but has no handler here"),
    };
    // `layer`, not `route_layer`: a wrong method on a guarded path is refused (401) before
    // it is told which methods exist (405).
    match guard {
        Guard::Livego => handler.layer(middleware::from_fn_with_state(
            state.clone(),
            require_auth_livego,
        )),
        Guard::V1 => handler.layer(middleware::from_fn_with_state(
            state.clone(),
            require_auth_v1,
        )),
        Guard::Open => handler,
    }
}

/// GET of a play URL's redirect form (`play.flv`, `play.m3u8`, `play.rtmp`).
fn play_redirect(format: PlayFormat) -> MethodRouter<AppState> {
    get(
        move |s: State<AppState>, p: Path<String>, q: PlayQueryResult| {
            v1_play_redirect(s, p, q, format)
        },
    )
}

// --- plumbing ---

/// The client's IP address (the TCP peer; `0.0.0.0` when unknown, as in in-process tests).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.extensions)))
    }
}

pub fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| {
            addr.ip()
        })
}

fn status_of(error: &ApiError) -> StatusCode {
    match error {
        ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::Conflict(_) => StatusCode::CONFLICT,
        ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn with_retry_after(mut response: Response, error: &ApiError) -> Response {
    if let ApiError::RateLimited(wait) = error {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let ApiError::Internal(message) = error {
        tracing::error!(%message, "control API internal error");
    }
    response
}

/// livego's envelope: `{"status": <code>, "data": ...}` with the same HTTP status.
fn livego(status: StatusCode, data: impl Serialize) -> Response {
    (
        status,
        Json(json!({ "status": status.as_u16(), "data": data })),
    )
        .into_response()
}

fn livego_error(error: ApiError) -> Response {
    with_retry_after(livego(status_of(&error), error.to_string()), &error)
}

/// `/api/v1` errors: `{"error": "..."}`.
fn v1_error(error: ApiError) -> Response {
    let status = status_of(&error);
    with_retry_after(
        (status, Json(json!({ "error": error.to_string() }))).into_response(),
        &error,
    )
}

fn unauthorized(body: Value) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ferrolive\""),
    );
    response
}

fn check_auth(state: &AppState, request: &Request) -> Result<(), AuthError> {
    if !state.auth.enabled() {
        return Ok(());
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let query = Query::<HashMap<String, String>>::try_from_uri(request.uri()).ok();
    let jwt = query
        .as_ref()
        .and_then(|q| q.get("jwt"))
        .map(String::as_str);
    state.auth.check(authorization, jwt)
}

async fn require_auth_livego(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match check_auth(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => unauthorized(json!({ "status": 401, "data": format!("unauthorized: {e}") })),
    }
}

async fn require_auth_v1(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check_auth(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => unauthorized(json!({ "error": format!("unauthorized: {e}") })),
    }
}

async fn fallback(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("no such method: {}", request.uri().path()))
            .into_http();
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no such endpoint: {}", request.uri().path()) })),
    )
        .into_response()
}

// --- livego compatibility ---

/// A query parameter (`None` when missing or empty).
fn param(query: &QueryMap, name: &str) -> Option<String> {
    let Ok(Query(query)) = query else {
        return None;
    };
    query.get(name).filter(|value| !value.is_empty()).cloned()
}

/// livego's answer to a missing `room`.
fn usage(path: &str) -> Response {
    livego(
        StatusCode::BAD_REQUEST,
        format!("url: {path}?room=<ROOM_NAME>"),
    )
}

type QueryMap = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

async fn control_get(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    query: QueryMap,
) -> Response {
    let Some(room) = param(&query, "room") else {
        return usage("/control/get");
    };
    match state.get_key(ip, &room).await {
        Ok(key) => livego(StatusCode::OK, key),
        Err(e) => livego_error(e),
    }
}

async fn control_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    query: QueryMap,
) -> Response {
    let Some(room) = param(&query, "room") else {
        return usage("/control/reset");
    };
    match state.reset_key(ip, &room).await {
        Ok(key) => livego(StatusCode::OK, key),
        Err(e) => livego_error(e),
    }
}

async fn control_delete(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    query: QueryMap,
) -> Response {
    let Some(room) = param(&query, "room") else {
        return usage("/control/delete");
    };
    let app = match state.apps.resolve(param(&query, "app").as_deref()) {
        Ok(app) => app,
        Err(e) => return livego_error(e.into()),
    };
    match state.delete_room(ip, &room, &app).await {
        Ok(_) => livego(StatusCode::OK, "Ok"),
        Err(e) => livego_error(e),
    }
}

/// livego's `/control/push?oper=start|stop&app=APP&name=ROOM&url=URL`: forward a live room.
async fn control_push(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    query: QueryMap,
) -> Response {
    // The app first, as on every route that takes one.
    let app = match state.apps.resolve(param(&query, "app").as_deref()) {
        Ok(app) => app,
        Err(e) => return livego_error(e.into()),
    };
    let (Some(oper), Some(room), Some(url)) = (
        param(&query, "oper"),
        param(&query, "name"),
        param(&query, "url"),
    ) else {
        return livego(
            StatusCode::BAD_REQUEST,
            "url: /control/push?oper=start|stop&app=<APP>&name=<ROOM>&url=<URL>",
        );
    };
    let done = match oper.as_str() {
        "start" => state
            .add_relay(ip, &room, &app, &url)
            .await
            .map(|r| r.relay.id),
        "stop" => state.remove_relay(ip, &room, &app, None, Some(&url)).await,
        _ => Err(ApiError::BadRequest("oper: start or stop".into())),
    };
    match done {
        Ok(_) => livego(StatusCode::OK, "Ok"),
        Err(e) => livego_error(e),
    }
}

/// livego's `/control/pull?oper=start|stop&app=APP&name=ROOM&url=URL`: feed a room.
async fn control_pull(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    query: QueryMap,
) -> Response {
    // The app first, as on every route that takes one.
    let app = match state.apps.resolve(param(&query, "app").as_deref()) {
        Ok(app) => app,
        Err(e) => return livego_error(e.into()),
    };
    let (Some(oper), Some(room)) = (param(&query, "oper"), param(&query, "name")) else {
        return livego(
            StatusCode::BAD_REQUEST,
            "url: /control/pull?oper=start|stop&app=<APP>&name=<ROOM>&url=<URL>",
        );
    };
    let done = match (oper.as_str(), param(&query, "url")) {
        ("start", Some(url)) => state.add_pull(ip, &room, &app, &url).await.map(|p| p.id),
        ("start", None) => Err(ApiError::BadRequest("url: the source to pull".into())),
        ("stop", _) => state.remove_pull(ip, None, Some((&app, &room))).await,
        _ => Err(ApiError::BadRequest("oper: start or stop".into())),
    };
    match done {
        Ok(_) => livego(StatusCode::OK, "Ok"),
        Err(e) => livego_error(e),
    }
}

/// One entry of livestat's `publishers`/`players`, with livego's field names.
#[derive(Debug, Serialize)]
struct LivegoStream {
    /// `app/room`.
    key: String,
    url: String,
    stream_id: u32,
    video_total_bytes: u64,
    /// livego: bytes per millisecond.
    video_speed: u64,
    audio_total_bytes: u64,
    audio_speed: u64,
}

async fn livestat(State(state): State<AppState>) -> Response {
    match livestat_data(&state).await {
        Ok(data) => livego(StatusCode::OK, data),
        Err(e) => livego_error(e),
    }
}

async fn livestat_data(state: &AppState) -> ApiResult<Value> {
    let mut leases = state.registry.leases().await?;
    leases.sort_by(|a, b| a.stream.cmp(&b.stream));
    let nodes = state.registry.nodes().await?;
    let nodes_by_id = crate::rooms::nodes_by_id(&nodes);
    let mut publishers = Vec::new();
    let mut players = Vec::new();
    let mut player_entries = 0u64;
    for lease in &leases {
        let Some((app, room)) = split_stream(&lease.stream) else {
            continue;
        };
        // livego's speeds are bytes per millisecond: kbit/s / 8. The lease has one recent
        // rate; it is shared out by the tracks' byte counts.
        let total_speed = lease.bitrate_kbps / 8;
        let total_bytes = lease.video_bytes + lease.audio_bytes;
        let video_speed = match total_bytes {
            0 => total_speed,
            _ => {
                (u128::from(total_speed) * u128::from(lease.video_bytes) / u128::from(total_bytes))
                    as u64
            }
        };
        publishers.push(LivegoStream {
            key: lease.stream.clone(),
            url: format!("rtmp://{}/{app}/{room}", lease.addrs.rtmp),
            stream_id: 0,
            video_total_bytes: lease.video_bytes,
            video_speed,
            audio_total_bytes: lease.audio_bytes,
            audio_speed: total_speed - video_speed,
        });
        for (node_id, viewers) in viewers_by_node(lease, &nodes) {
            let http = match nodes_by_id.get(node_id.as_str()) {
                Some(node) => node.addrs.http.clone(),
                None if node_id == lease.node_id => lease.addrs.http.clone(),
                None => continue,
            };
            for _ in 0..viewers.min(MAX_PLAYER_ENTRIES - player_entries) {
                players.push(LivegoStream {
                    key: lease.stream.clone(),
                    url: format!("http://{http}/{app}/{room}.flv"),
                    stream_id: 0,
                    video_total_bytes: 0,
                    video_speed: 0,
                    audio_total_bytes: 0,
                    audio_speed: 0,
                });
            }
            player_entries = (player_entries + viewers).min(MAX_PLAYER_ENTRIES);
        }
    }
    Ok(json!({ "publishers": publishers, "players": players }))
}

// --- /api/v1 ---

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    /// Also list rooms that have a key but are not live.
    #[serde(default)]
    all: bool,
}

async fn v1_list_rooms(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return v1_error(ApiError::BadRequest(
            "query parameter `all` must be true or false".into(),
        ));
    };
    match state.list_rooms(query.all).await {
        Ok(rooms) => Json(json!({ "rooms": rooms })).into_response(),
        Err(e) => v1_error(e),
    }
}

/// `?app=`: the app of the stream a room operation acts on.
#[derive(Debug, serde::Deserialize)]
struct AppQuery {
    app: Option<String>,
}

type AppQueryResult = Result<Query<AppQuery>, axum::extract::rejection::QueryRejection>;

/// The app a request names in `?app=` (the default app when it names none), if it is one
/// this server serves.
fn requested_app(state: &AppState, query: AppQueryResult) -> ApiResult<App> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::BadRequest("bad query parameters".into()));
    };
    Ok(state.apps.resolve(query.app.as_deref())?)
}

async fn v1_get_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    query: AppQueryResult,
) -> Response {
    let view = match requested_app(&state, query) {
        Ok(app) => state.room_view(&room, &app).await,
        Err(e) => Err(e),
    };
    match view {
        Ok(view) => Json(view).into_response(),
        Err(e) => v1_error(e),
    }
}

async fn v1_rotate_key(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(room): Path<String>,
) -> Response {
    match state.reset_key(ip, &room).await {
        Ok(key) => Json(json!({ "room": room, "key": key })).into_response(),
        Err(e) => v1_error(e),
    }
}

async fn v1_delete_room(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(room): Path<String>,
    query: AppQueryResult,
) -> Response {
    let app = match requested_app(&state, query) {
        Ok(app) => app,
        Err(e) => return v1_error(e),
    };
    match state.delete_room(ip, &room, &app).await {
        Ok(kicked) => Json(json!({
            "room": room,
            "app": app.as_str(),
            "deleted": true,
            "kicked": kicked
        }))
        .into_response(),
        Err(e) => v1_error(e),
    }
}

async fn v1_kick(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(room): Path<String>,
    query: AppQueryResult,
) -> Response {
    let app = match requested_app(&state, query) {
        Ok(app) => app,
        Err(e) => return v1_error(e),
    };
    match state.kick(ip, &room, &app).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "room": room, "app": app.as_str(), "kicked": true })),
        )
            .into_response(),
        Err(e) => v1_error(e),
    }
}

async fn v1_record(
    state: AppState,
    ip: IpAddr,
    room: String,
    query: AppQueryResult,
    on: bool,
) -> Response {
    let app = match requested_app(&state, query) {
        Ok(app) => app,
        Err(e) => return v1_error(e),
    };
    match state.record(ip, &room, &app, on).await {
        Ok(node) => (
            StatusCode::ACCEPTED,
            Json(json!({ "room": room, "app": app.as_str(), "recording": on, "node_id": node })),
        )
            .into_response(),
        Err(e) => v1_error(e),
    }
}

async fn v1_record_start(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(room): Path<String>,
    query: AppQueryResult,
) -> Response {
    v1_record(state, ip, room, query, true).await
}

async fn v1_record_stop(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(room): Path<String>,
    query: AppQueryResult,
) -> Response {
    v1_record(state, ip, room, query, false).await
}

#[derive(Debug, serde::Deserialize)]
struct RecordingsQuery {
    app: Option<String>,
    room: Option<String>,
}

async fn v1_recordings(
    State(state): State<AppState>,
    query: Result<Query<RecordingsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return v1_error(ApiError::BadRequest("bad query parameters".into()));
    };
    match state.recordings(query.app, query.room).await {
        Ok(files) => Json(json!({ "recordings": files })).into_response(),
        Err(e) => v1_error(e),
    }
}

async fn v1_delete_recording(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path((app, room, file)): Path<(String, String, String)>,
) -> Response {
    let path = format!("{app}/{room}/{file}");
    match state.delete_recording(ip, path.clone()).await {
        Ok(()) => Json(json!({ "path": path, "deleted": true })).into_response(),
        Err(e) => v1_error(e),
    }
}

#[derive(Debug, serde::Deserialize)]
struct RelayBody {
    url: String,
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// A JSON body, or the 400 that says what is wrong with it.
fn body<T>(body: JsonBody<T>) -> ApiResult<T> {
    body.map(|Json(body)| body)
        .map_err(|e| ApiError::BadRequest(format!("body: {}", e.body_text())))
}

async fn v1_add_relay(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(room): Path<String>,
    query: AppQueryResult,
    relay: JsonBody<RelayBody>,
) -> Response {
    let added = match (requested_app(&state, query), body(relay)) {
        (Ok(app), Ok(relay)) => state.add_relay(ip, &room, &app, &relay.url).await,
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match added {
        Ok(view) => (StatusCode::ACCEPTED, Json(view)).into_response(),
        Err(e) => v1_error(e),
    }
}

async fn v1_relays(
    State(state): State<AppState>,
    Path(room): Path<String>,
    query: AppQueryResult,
) -> Response {
    let relays = match requested_app(&state, query) {
        Ok(app) => state.relays(&room, &app).await,
        Err(e) => Err(e),
    };
    match relays {
        Ok(relays) => Json(json!({ "relays": relays })).into_response(),
        Err(e) => v1_error(e),
    }
}

async fn v1_remove_relay(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path((room, id)): Path<(String, String)>,
    query: AppQueryResult,
) -> Response {
    let removed = match requested_app(&state, query) {
        Ok(app) => state.remove_relay(ip, &room, &app, Some(&id), None).await,
        Err(e) => Err(e),
    };
    match removed {
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "removed": true })),
        )
            .into_response(),
        Err(e) => v1_error(e),
    }
}

#[derive(Debug, serde::Deserialize)]
struct PullBody {
    app: Option<String>,
    room: String,
    url: String,
}

async fn v1_add_pull(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    pull: JsonBody<PullBody>,
) -> Response {
    let added = async {
        let pull = body(pull)?;
        let app = state.apps.resolve(pull.app.as_deref())?;
        state.add_pull(ip, &pull.room, &app, &pull.url).await
    };
    match added.await {
        Ok(view) => (StatusCode::CREATED, Json(view)).into_response(),
        Err(e) => v1_error(e),
    }
}

/// A node as `/api/v1/nodes` lists it: its heartbeat without the relays' details.
#[derive(Serialize)]
struct NodeView {
    id: String,
    role: registry::NodeRole,
    region: String,
    addrs: registry::NodeAddrs,
    /// Viewers per stream on the node.
    viewers: std::collections::BTreeMap<String, u64>,
    egress_bps: u64,
    /// Milliseconds since its last heartbeat.
    heartbeat_age_ms: u64,
}

async fn v1_nodes(State(state): State<AppState>) -> Response {
    match state.registry.nodes().await {
        Ok(nodes) => {
            let now = registry::now_ms();
            let mut views: Vec<NodeView> = nodes
                .into_iter()
                .map(|n| NodeView {
                    heartbeat_age_ms: now.saturating_sub(n.updated_at_ms),
                    id: n.id,
                    role: n.role,
                    region: n.region,
                    addrs: n.addrs,
                    viewers: n.viewers,
                    egress_bps: n.egress_bps,
                })
                .collect();
            views.sort_by(|a, b| a.id.cmp(&b.id));
            Json(json!({ "nodes": views })).into_response()
        }
        Err(e) => v1_error(e.into()),
    }
}

/// The control console: rooms and keys, nodes, live rooms with their play URLs.
async fn console() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../console.html"),
    )
        .into_response()
}

async fn v1_pulls(State(state): State<AppState>) -> Response {
    match state.pulls().await {
        Ok(pulls) => Json(json!({ "pulls": pulls })).into_response(),
        Err(e) => v1_error(e),
    }
}

async fn v1_remove_pull(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Response {
    match state.remove_pull(ip, Some(&id), None).await {
        Ok(id) => Json(json!({ "id": id, "removed": true })).into_response(),
        Err(e) => v1_error(e),
    }
}

#[derive(Debug, serde::Deserialize)]
struct PlayQuery {
    /// The player's region: edges there are preferred.
    region: Option<String>,
    /// The app of the stream (the default app when absent).
    app: Option<String>,
}

type PlayQueryResult = Result<Query<PlayQuery>, axum::extract::rejection::QueryRejection>;

#[derive(Debug, Clone, Copy)]
enum PlayFormat {
    Flv,
    Hls,
    Rtmp,
}

/// Play URLs depend on current load: never cached.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn play_view(
    state: &AppState,
    room: &str,
    query: PlayQueryResult,
) -> ApiResult<crate::rooms::PlayView> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::BadRequest("bad query parameters".into()));
    };
    let app = state.apps.resolve(query.app.as_deref())?;
    state.play(room, &app, query.region.as_deref()).await
}

async fn v1_play(
    State(state): State<AppState>,
    Path(room): Path<String>,
    query: PlayQueryResult,
) -> Response {
    match play_view(&state, &room, query).await {
        Ok(view) => no_store(Json(view).into_response()),
        Err(e) => v1_error(e),
    }
}

/// What a play token is asked for: how long it is good for, and the one client address it
/// is good from.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayTokenRequest {
    lifetime_s: Option<u64>,
    ip: Option<std::net::IpAddr>,
}

/// The longest a minted play token may live: a week.
const MAX_TOKEN_LIFETIME_S: u64 = 7 * 24 * 3600;

async fn v1_play_token(
    State(state): State<AppState>,
    Path(room): Path<String>,
    query: AppQueryResult,
    body: Option<Json<PlayTokenRequest>>,
) -> Response {
    let app = match requested_app(&state, query) {
        Ok(app) => app,
        Err(e) => return v1_error(e),
    };
    let asked = body.map(|Json(b)| b).unwrap_or_default();
    let lifetime = asked
        .lifetime_s
        .unwrap_or(crate::rooms::PLAY_TOKEN_LIFETIME.as_secs());
    if !(1..=MAX_TOKEN_LIFETIME_S).contains(&lifetime) {
        return v1_error(ApiError::BadRequest(format!(
            "lifetime_s must be 1 to {MAX_TOKEN_LIFETIME_S}"
        )));
    }
    let lifetime = std::time::Duration::from_secs(lifetime);
    match state.play_token(&room, &app, lifetime, asked.ip) {
        Ok(token) => no_store(Json(token).into_response()),
        Err(e) => v1_error(e),
    }
}

/// 302 to one of the play URLs, for players that open the control API URL directly.
async fn v1_play_redirect(
    State(state): State<AppState>,
    Path(room): Path<String>,
    query: PlayQueryResult,
    format: PlayFormat,
) -> Response {
    let view = match play_view(&state, &room, query).await {
        Ok(view) => view,
        Err(e) => return v1_error(e),
    };
    let url = match format {
        PlayFormat::Flv => &view.flv,
        PlayFormat::Hls => &view.hls,
        PlayFormat::Rtmp => &view.rtmp,
    };
    let Ok(location) = HeaderValue::from_str(url) else {
        return v1_error(ApiError::Internal(format!(
            "node {} advertises an address that is not valid in a URL",
            view.node_id
        )));
    };
    let mut response = (StatusCode::FOUND, Json(&view)).into_response();
    response.headers_mut().insert(header::LOCATION, location);
    no_store(response)
}

async fn openapi() -> Response {
    // A `&str` body would be labelled text/plain.
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_DOCUMENT,
    )
        .into_response()
}

// --- health ---

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    // One cheap lookup that touches the store.
    match state.registry.lease("live/.readyz").await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}
