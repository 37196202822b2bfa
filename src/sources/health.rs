//! What each source reports about itself, for `/ready` and `/metrics`:
//! whether it is connected, why not, how often it reconnected, and when its
//! last event arrived. Sources write; probes read a snapshot.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Up,
    Connecting,
    Down,
    /// A singleton duty another replica holds: this one is ready to take it
    /// over, and hears through the holder meanwhile.
    Standby,
}

impl Status {
    /// Whether `/ready` counts the source as hearing.
    pub fn is_ready(self) -> bool {
        matches!(self, Status::Up | Status::Standby)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceState {
    pub status: Status,
    /// Why the source is not up (the last error), if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub reconnects: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<DateTime<Utc>>,
    /// Polling sources: when the source last asked and was answered, so
    /// one that hears nothing is told apart from one that cannot ask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_poll_at: Option<DateTime<Utc>>,
}

impl Default for SourceState {
    fn default() -> Self {
        SourceState { status: Status::Connecting, detail: None, reconnects: 0, last_event_at: None, last_poll_at: None }
    }
}

/// Every source's state, by name (`webhook`, `mqtt`, `cron`,
/// `peripheral:<board>`, and `<kind>:<alias>` for channels and Drive:
/// `email:ops`, `slack:team`, `telegram:bot`, `google_drive:shared`).
#[derive(Default)]
pub struct SourcesHealth {
    sources: Mutex<BTreeMap<String, SourceState>>,
}

impl SourcesHealth {
    /// Changes one source's state (creating it on first use).
    pub fn update(&self, name: &str, change: impl FnOnce(&mut SourceState)) {
        let mut sources = self.sources.lock().expect("health lock");
        // Every event passes here: a known name costs no allocation.
        match sources.get_mut(name) {
            Some(state) => change(state),
            None => change(sources.entry(name.to_string()).or_default()),
        }
    }

    pub fn set_status(&self, name: &str, status: Status, detail: Option<String>) {
        self.update(name, |s| {
            s.status = status;
            s.detail = detail;
        });
    }

    pub fn event_seen(&self, name: &str, at: DateTime<Utc>) {
        self.update(name, |s| s.last_event_at = Some(at));
    }

    pub fn snapshot(&self) -> BTreeMap<String, SourceState> {
        self.sources.lock().expect("health lock").clone()
    }

    pub fn all_up(&self) -> bool {
        self.sources.lock().expect("health lock").values().all(|s| s.status.is_ready())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_connecting_until_it_says_otherwise() {
        let h = SourcesHealth::default();
        h.update("mqtt", |_| {});
        assert!(!h.all_up());
        h.set_status("mqtt", Status::Up, None);
        h.set_status("webhook", Status::Up, None);
        assert!(h.all_up());
        h.set_status("mqtt", Status::Down, Some("connection refused".into()));
        assert!(!h.all_up());
        assert_eq!(h.snapshot()["mqtt"].detail.as_deref(), Some("connection refused"));
    }
}
