//! Why this replica is not taking new jobs right now. A sink that cannot be reached or a
//! temp directory that is full is not a fault of the job in hand: burning its attempts
//! would dead-letter every queued job during an outage. Instead the replica stops
//! taking deliveries, the jobs it holds wait, `/readyz` says why, and a monitor lifts the
//! pause once the cause has gone.

use std::time::Duration;

use tokio::sync::watch;

/// A cause of a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A sink answers no writes (connection refused, server shutting down, statement
    /// timeouts).
    Sink,
    /// The temp directory is out of space or file handles (ENOSPC, EDQUOT, EMFILE…).
    TempDir,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Sink => "sink unavailable",
            Cause::TempDir => "temp dir exhausted",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Causes {
    sink: bool,
    temp_dir: bool,
}

impl Causes {
    fn slot(&mut self, cause: Cause) -> &mut bool {
        match cause {
            Cause::Sink => &mut self.sink,
            Cause::TempDir => &mut self.temp_dir,
        }
    }

    fn any(&self) -> bool {
        self.sink || self.temp_dir
    }
}

/// Shared by the consume loop, the pipeline, the monitor and `/readyz`; cheap to clone.
#[derive(Debug, Clone)]
pub struct Pause {
    tx: watch::Sender<Causes>,
}

impl Default for Pause {
    fn default() -> Self {
        Pause { tx: watch::Sender::new(Causes::default()) }
    }
}

impl Pause {
    /// Starts (or lifts) a pause for `cause`; returns whether that changed anything.
    pub fn set(&self, cause: Cause, on: bool) -> bool {
        self.tx.send_if_modified(|c| {
            let slot = c.slot(cause);
            let changed = *slot != on;
            *slot = on;
            changed
        })
    }

    pub fn is_paused(&self) -> bool {
        self.tx.borrow().any()
    }

    /// The causes in force, for `/readyz`.
    pub fn causes(&self) -> Vec<&'static str> {
        let c = *self.tx.borrow();
        [(c.sink, Cause::Sink), (c.temp_dir, Cause::TempDir)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, cause)| cause.as_str())
            .collect()
    }

    /// Returns once no cause is in force.
    pub async fn resumed(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|c| !c.any()).await;
    }

    /// Returns once some cause is in force.
    pub async fn paused(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(Causes::any).await;
    }

    /// Returns once `cause` is lifted, or after `limit` (then `false`).
    pub async fn lifted(&self, cause: Cause, limit: Duration) -> bool {
        let mut rx = self.tx.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|c| !*c.clone().slot(cause))).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pause_lasts_until_every_cause_is_lifted() {
        let p = Pause::default();
        assert!(!p.is_paused());
        assert!(p.set(Cause::Sink, true));
        assert!(!p.set(Cause::Sink, true), "setting it twice changes nothing");
        p.set(Cause::TempDir, true);
        assert_eq!(p.causes(), vec!["sink unavailable", "temp dir exhausted"]);
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.resumed().await }
        });
        p.set(Cause::Sink, false);
        assert!(!p.lifted(Cause::TempDir, Duration::from_millis(20)).await);
        assert!(!waiter.is_finished());
        p.set(Cause::TempDir, false);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        assert!(p.lifted(Cause::Sink, Duration::from_millis(1)).await);
    }
}
