//! Recording: live streams to files on the origin's disk (FLV and fragmented MP4).
//!
//! A recording is a consumer of the hub like a viewer: a task of its own takes the
//! stream's frames, [`cut`] decides where files begin and end, a format writer turns
//! frames into bytes, and each file is written by a thread of its own through a bounded
//! queue ([`file`]). A disk that is slow or full ends that recording (the file is closed
//! with what it has, one log line, `ferrolive_record_errors_total`); the publisher and the
//! viewers never wait for it.

mod cut;
mod file;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use media::flv::FlvFileWriter;
use media::fmp4::Fmp4Writer;
use media::frame::{Frame, MediaKind};
use media::hub::{Audience, Delivery, Hub};
use serve::hooks::{HookEvent, HookRequest, Hooks};
use serve::metrics::Metrics;
use serve::recordings::{prune, Retention};
use serve::Shared;
use tokio::sync::Notify;
use tracing::{info, warn};

use self::cut::{Cut, Cutter};
use self::file::{Closing, Sink};
use serve::recordings::file_path;

/// What a recording writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Flv,
    Mp4,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Flv => "flv",
            Format::Mp4 => "mp4",
        }
    }
}

/// How an origin records.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Where files go: `DIR/APP/ROOM/<UTC start>.EXT`.
    pub dir: PathBuf,
    pub formats: Vec<Format>,
    /// A new file begins at the first keyframe once a file is this long.
    pub segment: Duration,
    /// Apps whose streams are recorded from their first frame (empty: every app). Others
    /// are recorded only when asked (the control API).
    pub apps: Vec<String>,
    /// When the oldest files are deleted.
    pub retention: Retention,
}

/// Time a stopping recording has to write what it holds (at shutdown too).
const FINISH_WITHIN: Duration = Duration::from_secs(3);

/// The recordings of one origin.
pub struct Recordings {
    config: RecordConfig,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Told of every file finished (`on_record_done`).
    hooks: Arc<Hooks>,
    /// Streams being recorded, each with the signal that stops it.
    active: Mutex<HashMap<String, Arc<Notify>>>,
    /// Raised when the last recording has finished.
    idle: Notify,
    /// Raised when a file is opened: retention may have to make room.
    opened: Notify,
}

/// How often retention looks at the folder when no file is opened.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Recordings {
    pub fn new(config: RecordConfig, shared: &Shared) -> Arc<Recordings> {
        let recordings = Arc::new(Recordings {
            config,
            hub: shared.hub.clone(),
            metrics: shared.metrics.clone(),
            hooks: shared.hooks.clone(),
            active: Mutex::default(),
            idle: Notify::new(),
            opened: Notify::new(),
        });
        if recordings.config.retention != Retention::default() {
            tokio::spawn(recordings.clone().retain());
        }
        recordings
    }

    /// Delete what retention expires, every [`PRUNE_EVERY`] and whenever a file is opened.
    async fn retain(self: Arc<Self>) {
        loop {
            let (dir, retention) = (self.config.dir.clone(), self.config.retention);
            match tokio::task::spawn_blocking(move || prune(&dir, retention)).await {
                Ok(Ok(deleted)) => {
                    for file in deleted {
                        info!(file = %file.display(), "recording deleted by retention");
                    }
                }
                Ok(Err(e)) => {
                    warn!(dir = %self.config.dir.display(), error = %e, "retention cannot read the record folder")
                }
                Err(_) => {}
            }
            let _ = tokio::time::timeout(PRUNE_EVERY, self.opened.notified()).await;
        }
    }

    /// Whether streams of `app` are recorded as soon as they are published.
    pub fn records_app(&self, app: &str) -> bool {
        self.config.apps.is_empty() || self.config.apps.iter().any(|a| a == app)
    }

    pub fn is_recording(&self, stream: &str) -> bool {
        self.active().contains_key(stream)
    }

    /// Start recording the live stream `stream` (`app/room`); `false` when it is not live
    /// or already recorded.
    pub fn start(self: &Arc<Self>, stream: &str) -> bool {
        let Some((app, room)) = stream.split_once('/') else {
            return false;
        };
        let mut active = self.active();
        if active.contains_key(stream) {
            return false;
        }
        let Some(subscriber) = self.hub.subscribe(stream, Audience::Internal) else {
            return false;
        };
        let stop = Arc::new(Notify::new());
        active.insert(stream.to_owned(), stop.clone());
        drop(active);
        Metrics::add(&self.metrics.recordings, 1);
        info!(stream, dir = %self.config.dir.display(), "recording");
        let recording = Recording {
            stream: stream.to_owned(),
            app: app.to_owned(),
            room: room.to_owned(),
            config: self.config.clone(),
            hooks: self.hooks.clone(),
            files: Vec::new(),
            closing: Vec::new(),
        };
        let recordings = self.clone();
        tokio::spawn(async move {
            let opened = &recordings.opened;
            let stream = recording.stream.clone();
            let result = recording.run(subscriber, &stop, opened).await;
            if let Err(why) = result {
                Metrics::add(&recordings.metrics.record_errors_total, 1);
                warn!(%stream, error = %why, "recording stopped");
            } else {
                info!(%stream, "recording ended");
            }
            recordings
                .metrics
                .recordings
                .fetch_sub(1, Ordering::Relaxed);
            let mut active = recordings.active();
            if active.get(&stream).is_some_and(|s| Arc::ptr_eq(s, &stop)) {
                active.remove(&stream);
            }
            if active.is_empty() {
                recordings.idle.notify_waiters();
            }
        });
        true
    }

    /// Stop recording `stream`: its files are closed. `false` when it was not recorded.
    pub fn stop(&self, stream: &str) -> bool {
        match self.active().get(stream) {
            Some(stop) => {
                stop.notify_one();
                true
            }
            None => false,
        }
    }

    /// Stop every recording and wait (at most until `deadline`) for its files to close.
    pub async fn stop_all(&self, deadline: tokio::time::Instant) {
        let idle = self.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        let streams: Vec<Arc<Notify>> = self.active().values().cloned().collect();
        if streams.is_empty() {
            return;
        }
        for stop in streams {
            stop.notify_one();
        }
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            warn!("recordings not closed in time");
        }
    }

    fn active(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One stream's recording, in its task.
struct Recording {
    stream: String,
    app: String,
    room: String,
    config: RecordConfig,
    hooks: Arc<Hooks>,
    /// The open file of each format.
    files: Vec<OpenFile>,
    /// Files closed and still being written.
    closing: Vec<Closing>,
}

/// A file being written, in one format.
struct OpenFile {
    sink: Sink,
    writer: FileWriter,
}

enum FileWriter {
    Flv(FlvFileWriter),
    /// The init segment goes out with the first fragment: a VP9 picture size is only known
    /// from the first keyframe.
    Mp4 {
        writer: Fmp4Writer,
        started: bool,
    },
}

impl Recording {
    /// Record until the stream ends, `stop` is signalled or a file cannot be written.
    async fn run(
        mut self,
        mut subscriber: media::hub::Subscriber,
        stop: &Notify,
        opened: &Notify,
    ) -> Result<(), String> {
        let mut cutter = Cutter::new(self.config.segment);
        let mut cuts = Vec::new();
        let result = loop {
            let delivery = tokio::select! {
                delivery = subscriber.next() => delivery,
                () = stop.notified() => break Ok(()),
            };
            match delivery {
                Delivery::Frame(frame) => cutter.push(frame, &mut cuts),
                Delivery::Skipped(_) => {
                    // Only a recording task starved of CPU falls behind the hub: the file
                    // would lack frames, so it ends here and the next keyframe begins one.
                    warn!(stream = %self.stream, "recording fell behind the stream; starting a new file at the next keyframe");
                    cutter.end(&mut cuts);
                }
                Delivery::End => break Ok(()),
            }
            if let Err(why) = self.apply(&mut cuts, opened).await {
                break Err(why);
            }
        };
        cutter.end(&mut cuts);
        let ended = self.apply(&mut cuts, opened).await;
        let closed = self.closed().await;
        result.and(ended).and(closed)
    }

    async fn apply(&mut self, cuts: &mut Vec<Cut>, opened: &Notify) -> Result<(), String> {
        for cut in cuts.drain(..) {
            match cut {
                Cut::Open { start_ms, preamble } => {
                    self.close_files();
                    self.reap_closed().await?;
                    self.open_files(start_ms, &preamble)?;
                    opened.notify_one();
                }
                Cut::Write(frame) => {
                    for file in &mut self.files {
                        if let Some(bytes) = file.writer.frame(&frame) {
                            file.write(bytes)?;
                        }
                    }
                }
                Cut::Close => self.close_files(),
            }
        }
        Ok(())
    }

    fn open_files(&mut self, start_ms: u64, preamble: &[Arc<Frame>]) -> Result<(), String> {
        let now = SystemTime::now();
        let has = |kind| preamble.iter().any(|f| f.kind == kind && f.sequence_header);
        let (audio, video) = (has(MediaKind::Audio), has(MediaKind::Video));
        for &format in &self.config.formats {
            let path = file_path(
                &self.config.dir,
                &self.app,
                &self.room,
                now,
                format.extension(),
            );
            let sink = Sink::create(path.clone())
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let writer = match format {
                Format::Flv => FileWriter::Flv(FlvFileWriter::new(audio, video, start_ms)),
                Format::Mp4 => FileWriter::Mp4 {
                    writer: self.mp4_writer(preamble)?,
                    started: false,
                },
            };
            let mut file = OpenFile { sink, writer };
            let start = file.writer.start();
            file.write(start)?;
            for frame in preamble {
                if let Some(bytes) = file.writer.frame(frame) {
                    file.write(bytes)?;
                }
            }
            info!(stream = %self.stream, file = %path.display(), "recording to a new file");
            self.files.push(file);
        }
        Ok(())
    }

    /// An MP4 writer for the tracks the preamble's sequence headers describe. A track whose
    /// codec MP4 cannot carry (MP3 audio, say) is left out with a warning.
    fn mp4_writer(&self, preamble: &[Arc<Frame>]) -> Result<Fmp4Writer, String> {
        let header = |kind| {
            preamble
                .iter()
                .rev()
                .find(|f| f.kind == kind && f.sequence_header)
                .map(|f| &**f)
        };
        // A WHIP publisher's audio is recorded as the Opus it sent.
        let mut audio = None;
        if let Some(header) = header(MediaKind::Audio) {
            header
                .as_published(|h| audio = Some(Frame::new(h.kind, h.timestamp, h.payload.clone())));
        }
        let (video, audio) = (header(MediaKind::Video), audio.as_ref());
        let error = match Fmp4Writer::new(video, audio) {
            Ok(writer) => return Ok(writer),
            Err(error) => error,
        };
        for (video, audio, dropped) in [(video, None, "audio"), (None, audio, "video")] {
            if video.or(audio).is_some() {
                if let Ok(writer) = Fmp4Writer::new(video, audio) {
                    warn!(stream = %self.stream, %error, "recording MP4 without the {dropped} track");
                    return Ok(writer);
                }
            }
        }
        Err(format!("cannot record MP4: {error}"))
    }

    /// Close the open files. They finish in the background; a file that cannot is
    /// counted and logged there (the next file, on the same disk, ends the recording).
    fn close_files(&mut self) {
        for mut file in self.files.drain(..) {
            if let Some(bytes) = file.writer.finish() {
                let _ = file.write(bytes);
            }
            self.closing.push(file.sink.close());
        }
    }

    /// The result of the files that finished closing since the last look: a file the disk
    /// could not take ends the recording.
    async fn reap_closed(&mut self) -> Result<(), String> {
        let (done, pending): (Vec<Closing>, Vec<Closing>) =
            self.closing.drain(..).partition(Closing::is_done);
        self.closing = pending;
        for closing in done {
            self.finished(closing).await?;
        }
        Ok(())
    }

    /// Wait for a closing file: the `on_record_done` hook is told of it once it is whole.
    async fn finished(&self, closing: Closing) -> Result<(), String> {
        let file = closing.path().display().to_string();
        closing.wait(FINISH_WITHIN).await?;
        let request = HookRequest {
            extra: vec![("file", file)],
            ..HookRequest::for_stream(&self.stream, "record")
        };
        self.hooks.notify(HookEvent::RecordDone, &request);
        Ok(())
    }

    /// Wait for the files closed so far.
    async fn closed(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        for closing in std::mem::take(&mut self.closing) {
            result = result.and(self.finished(closing).await);
        }
        result
    }
}

impl OpenFile {
    /// Queue `bytes` for the file; the error names the file and why it cannot take them.
    fn write(&mut self, bytes: Bytes) -> Result<(), String> {
        self.sink
            .write(bytes)
            .map_err(|why| format!("{}: {why}", self.sink.path().display()))
    }
}

impl FileWriter {
    /// What the file begins with.
    fn start(&self) -> Bytes {
        match self {
            FileWriter::Flv(flv) => flv.header(),
            FileWriter::Mp4 { .. } => Bytes::new(),
        }
    }

    fn frame(&mut self, frame: &Frame) -> Option<Bytes> {
        match self {
            FileWriter::Flv(flv) => flv.tag(frame),
            // A WHIP publisher's audio as the Opus it sent, as the file's header says.
            FileWriter::Mp4 { writer, started } => {
                let mut out: Option<Bytes> = None;
                frame.as_published(|frame| {
                    if let Some(fragment) = writer.push(frame) {
                        let fragment = Self::after_init(writer, started, fragment);
                        out = Some(match out.take() {
                            Some(before) => [before, fragment].concat().into(),
                            None => fragment,
                        });
                    }
                });
                out
            }
        }
    }

    /// What the file ends with, if anything.
    fn finish(&mut self) -> Option<Bytes> {
        match self {
            FileWriter::Flv(_) => None,
            // Nothing came out: the file stays empty rather than a movie without media.
            FileWriter::Mp4 { writer, started } => match writer.cut() {
                Some(fragment) => {
                    let fragment = Self::after_init(writer, started, fragment);
                    let index = writer.finish();
                    Some([fragment, index].concat().into())
                }
                None if *started => Some(writer.finish()),
                None => None,
            },
        }
    }

    /// `fragment`, preceded by the init segment if it is the file's first.
    fn after_init(writer: &Fmp4Writer, started: &mut bool, fragment: Bytes) -> Bytes {
        if std::mem::replace(started, true) {
            fragment
        } else {
            [writer.init(), fragment].concat().into()
        }
    }
}
