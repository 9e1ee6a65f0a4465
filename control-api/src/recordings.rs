//! Recordings in the record folder the origins write: listed and deleted from the files
//! themselves, so that what is shown survives restarts of every node.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serve::recordings::{self, Recorded};

use crate::rooms::{ApiError, ApiResult};
use crate::AppState;

/// A recorded file as `/api/v1/recordings` and gRPC show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingView {
    /// `app/room/file`: served at `/recordings/{path}` on the origins' HTTP port.
    pub path: String,
    pub app: String,
    pub room: String,
    pub size: u64,
    /// When recording began (UTC), e.g. `2026-12-06T23:41:05Z`.
    pub start: String,
    /// Seconds of media in the file (`None`: unreadable).
    pub duration: Option<f64>,
    /// Short codec names, video first (`h264`, `aac`, ...).
    pub codecs: Vec<String>,
}

impl From<Recorded> for RecordingView {
    fn from(file: Recorded) -> Self {
        RecordingView {
            path: file.path,
            app: file.app,
            room: file.room,
            size: file.size,
            start: file.start,
            duration: file.duration_ms.map(|ms| ms as f64 / 1000.0),
            codecs: file.codecs.into_iter().map(str::to_owned).collect(),
        }
    }
}

impl AppState {
    /// The recordings of `app` and `room` (each: all when absent), oldest first.
    pub async fn recordings(
        &self,
        app: Option<String>,
        room: Option<String>,
    ) -> ApiResult<Vec<RecordingView>> {
        let dir = self.record_folder()?;
        let files =
            blocking(move || recordings::list(&dir, app.as_deref(), room.as_deref())).await?;
        Ok(files.into_iter().map(RecordingView::from).collect())
    }

    /// Delete the recording at `path` (`app/room/file`).
    pub async fn delete_recording(&self, client: IpAddr, path: String) -> ApiResult<()> {
        let dir = self.record_folder()?;
        let file = path.clone();
        if !blocking(move || recordings::remove(&dir, &file)).await? {
            return Err(ApiError::NotFound("recording not found".into()));
        }
        tracing::info!(path, %client, "recording deleted");
        Ok(())
    }

    fn record_folder(&self) -> ApiResult<Arc<Path>> {
        self.record_dir.clone().ok_or_else(|| {
            ApiError::Conflict(
                "recordings are not listed here: start the control API with --record-dir \
                 (the origins' record folder)"
                    .into(),
            )
        })
    }
}

/// Run file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ApiError::Internal(format!("record folder: {e}"))),
        Err(e) => Err(ApiError::Internal(format!("record folder: {e}"))),
    }
}
