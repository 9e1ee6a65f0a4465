//! Say when the registry goes away and when it is back. Requests that fail during an outage
//! answer 503 with the reason, but an operator reading the control API's log should see
//! the outage itself once, and its end, whether or not anyone calls the API meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::Registry;

/// How often the registry is probed.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Whether the registry is reachable, and since when it is not.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    down_since: Option<Instant>,
}

/// A change worth a log line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Down(String),
    Up { after: Duration },
}

impl Outage {
    /// A probe at `now` found the registry reachable (`Ok`) or not.
    pub(crate) fn observe(&mut self, probe: Result<(), String>, now: Instant) -> Option<Change> {
        match (probe, self.down_since) {
            (Ok(()), Some(since)) => {
                self.down_since = None;
                Some(Change::Up {
                    after: now.saturating_duration_since(since),
                })
            }
            (Err(why), None) => {
                self.down_since = Some(now);
                Some(Change::Down(why))
            }
            _ => None,
        }
    }
}

/// Probe `registry` until the task is dropped, logging each change once.
pub(crate) async fn watch(registry: Arc<dyn Registry>) {
    let mut outage = Outage::default();
    loop {
        // The same cheap look-up as /readyz.
        let probe = registry
            .lease("live/.readyz")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        match outage.observe(probe, Instant::now()) {
            Some(Change::Down(why)) => {
                tracing::warn!(error = %why, "registry unreachable: requests that need it answer 503")
            }
            Some(Change::Up { after }) => {
                tracing::info!(?after, "registry reachable again")
            }
            None => {}
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_told_once() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut outage = Outage::default();
        assert_eq!(outage.observe(Ok(()), at(0)), None);
        assert_eq!(
            outage.observe(Err("refused".into()), at(2)),
            Some(Change::Down("refused".into()))
        );
        assert_eq!(outage.observe(Err("refused".into()), at(4)), None);
        assert_eq!(
            outage.observe(Ok(()), at(9)),
            Some(Change::Up {
                after: Duration::from_secs(7)
            })
        );
        assert_eq!(outage.observe(Ok(()), at(11)), None);
    }
}
