//! The thread that writes each recording file.
//!
//! Each file of a recording is written by a thread of its own through a queue bounded in
//! bytes, so that a slow or full disk stops that recording (and only it) instead of making
//! the hub wait or memory grow: when the queue is full or a write fails, the sink reports
//! the failure and accepts nothing more.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

/// Bytes a recording may have waiting for the disk: at 2.7 Mbit/s, about a minute and a
/// half. A disk further behind than that is not keeping up.
const MAX_QUEUED: usize = 32 * 1024 * 1024;

enum Job {
    Write(Bytes),
    /// Everything is written: close the file.
    Close,
}

/// One file being written by its own thread.
pub struct Sink {
    path: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    queued: Arc<AtomicUsize>,
    /// Why the file could not be written, once it could not.
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    /// Create `path` (and its folders) and start its writer.
    pub fn create(path: PathBuf) -> std::io::Result<Sink> {
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        let file = File::options().write(true).create_new(true).open(&path)?;
        let (jobs, receiver) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let failure = Arc::new(Mutex::new(None));
        let thread = {
            let (queued, failure) = (queued.clone(), failure.clone());
            std::thread::Builder::new()
                .name("recording".into())
                .spawn(move || write_file(file, receiver, &queued, &failure))?
        };
        Ok(Sink {
            path,
            jobs: Some(jobs),
            queued,
            failure,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue `bytes`; an error says why the file cannot take them (and nothing after).
    pub fn write(&mut self, bytes: Bytes) -> Result<(), String> {
        if let Some(why) = self.failure() {
            return Err(why);
        }
        if self.queued.load(Ordering::Relaxed) + bytes.len() > MAX_QUEUED {
            let why = format!(
                "the disk is not keeping up: {} MiB waiting to be written",
                MAX_QUEUED >> 20
            );
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
            return Err(why);
        }
        self.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        match &self.jobs {
            Some(jobs) if jobs.send(Job::Write(bytes)).is_ok() => Ok(()),
            _ => Err(self
                .failure()
                .unwrap_or_else(|| "the file is closed".into())),
        }
    }

    /// Why the file could not be written, if it could not.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Write what is queued and close the file. The returned handle tells when that is
    /// done, and whether it all went to disk.
    pub fn close(mut self) -> Closing {
        if let Some(jobs) = self.jobs.take() {
            let _ = jobs.send(Job::Close);
        }
        Closing {
            path: std::mem::take(&mut self.path),
            thread: self.thread.take(),
            failure: self.failure.clone(),
        }
    }
}

/// A file being closed by its thread.
pub struct Closing {
    path: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Closing {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the file is closed (or its writer gave up).
    pub fn is_done(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Wait (without blocking the runtime) at most `within` for the file to be closed; why
    /// it is incomplete, if it is. The thread goes on by itself after that.
    pub async fn wait(mut self, within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "{}: the disk did not finish writing in time",
                        self.path.display()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = thread.join();
        }
        match self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            Some(why) => Err(format!("{}: {why}", self.path.display())),
            None => Ok(()),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Unclosed (the recording task was cancelled): the thread writes what it has and
        // closes the file when the queue's sender goes away.
        self.jobs.take();
    }
}

fn write_file(
    mut file: File,
    jobs: mpsc::Receiver<Job>,
    queued: &AtomicUsize,
    failure: &Mutex<Option<String>>,
) {
    let failed = |why: String| {
        let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(why);
    };
    for job in jobs {
        match job {
            Job::Write(bytes) => {
                let result = file.write_all(&bytes);
                queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                if let Err(e) = result {
                    failed(e.to_string());
                    return;
                }
            }
            Job::Close => break,
        }
    }
    if let Err(e) = file.flush() {
        failed(e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn futures_wait(closing: Closing) -> Result<(), String> {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(closing.wait(Duration::from_secs(5)))
    }

    #[test]
    fn a_sink_writes_in_order_and_reports_a_failure() {
        let dir = std::env::temp_dir().join(format!("ferrolive-sink-{}", std::process::id()));
        let path = dir.join("a/b/file.flv");
        let mut sink = Sink::create(path.clone()).unwrap();
        for chunk in [&b"one "[..], b"two ", b"three"] {
            sink.write(Bytes::from_static(chunk)).unwrap();
        }
        futures_wait(sink.close()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one two three");

        // /dev/full fails every write with ENOSPC, like a full disk.
        let file = File::options().write(true).open("/dev/full").unwrap();
        let (jobs, receiver) = mpsc::channel();
        let (queued, failure) = (AtomicUsize::new(0), Mutex::new(None));
        jobs.send(Job::Write(Bytes::from_static(b"x"))).unwrap();
        drop(jobs);
        write_file(file, receiver, &queued, &failure);
        let why = failure.into_inner().unwrap().unwrap();
        assert!(why.contains("No space left"), "{why}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
