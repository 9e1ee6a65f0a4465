//! gRPC: `ferrolive.v1.Control`, `grpc.health.v1.Health` and server reflection, routed on
//! the same port as REST.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use proto::v1::control_server::{Control, ControlServer};
use proto::v1::{
    room_event, AddPullRequest, AddRelayRequest, DeleteRecordingReply, DeleteRecordingRequest,
    DeleteRoomReply, KeyReply, KickReply, ListPullsReply, ListPullsRequest, ListRecordingsReply,
    ListRecordingsRequest, ListRelaysReply, ListRoomsReply, ListRoomsRequest, NodeViewers, Pull,
    RecordReply, Recording, Relay, RemovePullReply, RemovePullRequest, RemoveRelayReply,
    RemoveRelayRequest, RoomEvent, RoomInfo, RoomRequest, WatchRoomsRequest,
};
use registry::StreamLease;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::apps::{split_stream, App};
use crate::rest::client_ip;
use crate::rooms::{ApiError, RoomView};
use crate::AppState;

/// How often `WatchRooms` polls the stream leases.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The gRPC services as an axum router (each under `/{service}/...`).
pub async fn routes(state: AppState) -> axum::Router {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ControlServer<ControlService>>()
        .await;
    // Both reflection versions: grpcurl and newer tools ask v1, many others (Postman,
    // grpc_cli, older grpcurl) still ask v1alpha only.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the descriptor sets are built with the crate");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the descriptor sets are built with the crate");
    let auth = state.auth.clone();
    let control =
        ControlServer::with_interceptor(ControlService { state }, move |request: Request<()>| {
            let authorization = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            match auth.check(authorization, None) {
                Ok(()) => Ok(request),
                Err(e) => Err(Status::unauthenticated(e.to_string())),
            }
        });
    tonic::service::Routes::new(control)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare()
        .into_axum_router()
}

pub struct ControlService {
    state: AppState,
}

fn status(error: ApiError) -> Status {
    let message = error.to_string();
    match error {
        ApiError::BadRequest(_) => Status::invalid_argument(message),
        ApiError::NotFound(_) => Status::not_found(message),
        ApiError::Conflict(_) => Status::failed_precondition(message),
        ApiError::RateLimited(_) => Status::resource_exhausted(message),
        ApiError::Unavailable(_) => Status::unavailable(message),
        ApiError::Internal(_) => Status::internal(message),
    }
}

fn room_info(view: RoomView) -> RoomInfo {
    let origin = view.origin.unwrap_or_else(|| crate::rooms::OriginView {
        node_id: String::new(),
        region: None,
        rtmp: String::new(),
        http: String::new(),
    });
    RoomInfo {
        room: view.room,
        app: view.app,
        live: view.live,
        has_key: view.has_key,
        origin_node_id: origin.node_id,
        origin_rtmp_addr: origin.rtmp,
        origin_http_addr: origin.http,
        video_codec: view.video_codec.unwrap_or_default(),
        audio_codec: view.audio_codec.unwrap_or_default(),
        width: view.width.unwrap_or(0),
        height: view.height.unwrap_or(0),
        bitrate_kbps: view.bitrate_kbps,
        started_at_ms: view.started_at_ms.unwrap_or(0),
        uptime_s: view.uptime_s,
        viewers: view.viewers,
        viewers_by_node: view
            .viewers_by_node
            .into_iter()
            .map(|(node_id, viewers)| NodeViewers { node_id, viewers })
            .collect(),
        recording: view.recording.unwrap_or(false),
    }
}

fn relay(view: crate::relays::RelayView) -> Relay {
    Relay {
        id: view.relay.id,
        room: view.room,
        app: view.app,
        url: view.relay.url,
        state: view.relay.state,
        error: view.relay.error.unwrap_or_default(),
        bytes: view.relay.bytes,
        frames_skipped: view.relay.frames_skipped,
        node_id: view.node_id,
    }
}

fn pull(view: crate::relays::PullView) -> Pull {
    Pull {
        id: view.id,
        app: view.app,
        room: view.room,
        url: view.url,
        live: view.live,
        node_id: view.node_id.unwrap_or_default(),
        state: view.state.unwrap_or_default(),
        error: view.error.unwrap_or_default(),
    }
}

impl ControlService {
    /// The app named `app` (empty: the default app), if this server serves it.
    fn app_named(&self, app: &str) -> Result<App, Status> {
        self.state
            .apps
            .resolve(Some(app))
            .map_err(|e| status(e.into()))
    }

    async fn record(
        &self,
        request: Request<RoomRequest>,
        on: bool,
    ) -> Result<Response<RecordReply>, Status> {
        let ip = client_ip(request.extensions());
        let request = request.into_inner();
        let app = self.app(&request)?;
        let node_id = self
            .state
            .record(ip, &request.room, &app, on)
            .await
            .map_err(status)?;
        Ok(Response::new(RecordReply {
            room: request.room,
            app: app.to_string(),
            recording: on,
            node_id,
        }))
    }

    /// The app a request names (empty: the default app), if this server serves it.
    fn app(&self, request: &RoomRequest) -> Result<App, Status> {
        self.state
            .apps
            .resolve(Some(&request.app))
            .map_err(|e| status(e.into()))
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn get_key(&self, request: Request<RoomRequest>) -> Result<Response<KeyReply>, Status> {
        let ip = client_ip(request.extensions());
        let room = request.into_inner().room;
        let key = self.state.get_key(ip, &room).await.map_err(status)?;
        Ok(Response::new(KeyReply { room, key }))
    }

    async fn reset_key(&self, request: Request<RoomRequest>) -> Result<Response<KeyReply>, Status> {
        let ip = client_ip(request.extensions());
        let room = request.into_inner().room;
        let key = self.state.reset_key(ip, &room).await.map_err(status)?;
        Ok(Response::new(KeyReply { room, key }))
    }

    async fn delete_room(
        &self,
        request: Request<RoomRequest>,
    ) -> Result<Response<DeleteRoomReply>, Status> {
        let ip = client_ip(request.extensions());
        let request = request.into_inner();
        let app = self.app(&request)?;
        let kicked = self
            .state
            .delete_room(ip, &request.room, &app)
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteRoomReply {
            room: request.room,
            app: app.to_string(),
            kicked,
        }))
    }

    async fn list_rooms(
        &self,
        _request: Request<ListRoomsRequest>,
    ) -> Result<Response<ListRoomsReply>, Status> {
        let rooms = self.state.list_rooms(false).await.map_err(status)?;
        Ok(Response::new(ListRoomsReply {
            rooms: rooms.into_iter().map(room_info).collect(),
        }))
    }

    async fn get_room(&self, request: Request<RoomRequest>) -> Result<Response<RoomInfo>, Status> {
        let request = request.into_inner();
        let app = self.app(&request)?;
        let view = self
            .state
            .room_view(&request.room, &app)
            .await
            .map_err(status)?;
        Ok(Response::new(room_info(view)))
    }

    async fn kick_publisher(
        &self,
        request: Request<RoomRequest>,
    ) -> Result<Response<KickReply>, Status> {
        let ip = client_ip(request.extensions());
        let request = request.into_inner();
        let app = self.app(&request)?;
        self.state
            .kick(ip, &request.room, &app)
            .await
            .map_err(status)?;
        Ok(Response::new(KickReply {
            room: request.room,
            app: app.to_string(),
        }))
    }

    async fn start_recording(
        &self,
        request: Request<RoomRequest>,
    ) -> Result<Response<RecordReply>, Status> {
        self.record(request, true).await
    }

    async fn stop_recording(
        &self,
        request: Request<RoomRequest>,
    ) -> Result<Response<RecordReply>, Status> {
        self.record(request, false).await
    }

    async fn list_recordings(
        &self,
        request: Request<ListRecordingsRequest>,
    ) -> Result<Response<ListRecordingsReply>, Status> {
        let request = request.into_inner();
        let some = |s: String| (!s.is_empty()).then_some(s);
        let files = self
            .state
            .recordings(some(request.app), some(request.room))
            .await
            .map_err(status)?;
        Ok(Response::new(ListRecordingsReply {
            recordings: files
                .into_iter()
                .map(|file| Recording {
                    path: file.path,
                    app: file.app,
                    room: file.room,
                    size: file.size,
                    start: file.start,
                    duration: file.duration.unwrap_or(0.0),
                    codecs: file.codecs,
                })
                .collect(),
        }))
    }

    async fn delete_recording(
        &self,
        request: Request<DeleteRecordingRequest>,
    ) -> Result<Response<DeleteRecordingReply>, Status> {
        let ip = client_ip(request.extensions());
        let path = request.into_inner().path;
        self.state
            .delete_recording(ip, path.clone())
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteRecordingReply { path }))
    }

    async fn add_relay(
        &self,
        request: Request<AddRelayRequest>,
    ) -> Result<Response<Relay>, Status> {
        let ip = client_ip(request.extensions());
        let request = request.into_inner();
        let app = self.app_named(&request.app)?;
        let view = self
            .state
            .add_relay(ip, &request.room, &app, &request.url)
            .await
            .map_err(status)?;
        Ok(Response::new(relay(view)))
    }

    async fn list_relays(
        &self,
        request: Request<RoomRequest>,
    ) -> Result<Response<ListRelaysReply>, Status> {
        let request = request.into_inner();
        let app = self.app(&request)?;
        let views = self
            .state
            .relays(&request.room, &app)
            .await
            .map_err(status)?;
        Ok(Response::new(ListRelaysReply {
            relays: views.into_iter().map(relay).collect(),
        }))
    }

    async fn remove_relay(
        &self,
        request: Request<RemoveRelayRequest>,
    ) -> Result<Response<RemoveRelayReply>, Status> {
        let ip = client_ip(request.extensions());
        let request = request.into_inner();
        let app = self.app_named(&request.app)?;
        let id = self
            .state
            .remove_relay(ip, &request.room, &app, Some(&request.id), None)
            .await
            .map_err(status)?;
        Ok(Response::new(RemoveRelayReply { id }))
    }

    async fn add_pull(&self, request: Request<AddPullRequest>) -> Result<Response<Pull>, Status> {
        let ip = client_ip(request.extensions());
        let request = request.into_inner();
        let app = self.app_named(&request.app)?;
        let view = self
            .state
            .add_pull(ip, &request.room, &app, &request.url)
            .await
            .map_err(status)?;
        Ok(Response::new(pull(view)))
    }

    async fn list_pulls(
        &self,
        _request: Request<ListPullsRequest>,
    ) -> Result<Response<ListPullsReply>, Status> {
        let views = self.state.pulls().await.map_err(status)?;
        Ok(Response::new(ListPullsReply {
            pulls: views.into_iter().map(pull).collect(),
        }))
    }

    async fn remove_pull(
        &self,
        request: Request<RemovePullRequest>,
    ) -> Result<Response<RemovePullReply>, Status> {
        let ip = client_ip(request.extensions());
        let id = request.into_inner().id;
        let id = self
            .state
            .remove_pull(ip, Some(&id), None)
            .await
            .map_err(status)?;
        Ok(Response::new(RemovePullReply { id }))
    }

    type WatchRoomsStream = Pin<Box<dyn Stream<Item = Result<RoomEvent, Status>> + Send + 'static>>;

    async fn watch_rooms(
        &self,
        _request: Request<WatchRoomsRequest>,
    ) -> Result<Response<Self::WatchRoomsStream>, Status> {
        // The baseline is taken before the call returns: every change after it is reported.
        let baseline = snapshot(
            &self
                .state
                .registry
                .leases()
                .await
                .map_err(|e| status(e.into()))?,
        );
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watch(self.state.clone(), baseline, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Live streams of every app: (room, app) -> (node id, publisher session).
type Snapshot = HashMap<(String, String), (String, String)>;

fn snapshot(leases: &[StreamLease]) -> Snapshot {
    leases
        .iter()
        .filter_map(|l| {
            let (app, room) = split_stream(&l.stream)?;
            Some((
                (room.to_owned(), app.to_owned()),
                (l.node_id.clone(), l.session.clone()),
            ))
        })
        .collect()
}

/// The events that turn `old` into `new`, by room then app: a stream whose publisher
/// session changed between two polls stopped (on its old node) and started again.
pub(crate) fn diff(old: &Snapshot, new: &Snapshot, at_ms: u64) -> Vec<RoomEvent> {
    let event = |kind: room_event::Kind, (room, app): &(String, String), node_id: &str| RoomEvent {
        kind: kind as i32,
        room: room.clone(),
        app: app.clone(),
        node_id: node_id.to_owned(),
        at_ms,
    };
    let mut events = Vec::new();
    let mut stopped: Vec<_> = old
        .iter()
        .filter(|(stream, owner)| new.get(*stream) != Some(owner))
        .map(|(stream, (node, _))| event(room_event::Kind::Stopped, stream, node))
        .collect();
    let mut started: Vec<_> = new
        .iter()
        .filter(|(stream, owner)| old.get(*stream) != Some(owner))
        .map(|(stream, (node, _))| event(room_event::Kind::Started, stream, node))
        .collect();
    let by_room_then_app = |a: &RoomEvent, b: &RoomEvent| (&a.room, &a.app).cmp(&(&b.room, &b.app));
    stopped.sort_by(by_room_then_app);
    started.sort_by(by_room_then_app);
    events.append(&mut stopped);
    events.append(&mut started);
    events
}

/// One subscriber's poller: ends when the client goes away or the server shuts down.
async fn watch(
    state: AppState,
    mut current: Snapshot,
    tx: mpsc::Sender<Result<RoomEvent, Status>>,
) {
    let mut shutdown = state.shutdown.clone();
    let mut interval = tokio::time::interval(WATCH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = tx.closed() => return,
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
        let leases = match state.registry.leases().await {
            Ok(leases) => leases,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "WatchRooms: cannot poll the registry, retrying");
                    failing = true;
                }
                continue;
            }
        };
        failing = false;
        let next = snapshot(&leases);
        for event in diff(&current, &next, registry::now_ms()) {
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
        current = next;
    }
}
