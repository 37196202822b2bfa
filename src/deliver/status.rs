//! What `/ready` says of each destination: whether it is configured, how
//! many envelopes wait for one that is not, and whether deliveries to it
//! fail and why. The outbox worker writes it; the probe reads it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::notices::Failing;
use crate::cluster::DutyState;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationStatus {
    pub configured: bool,
    /// Pending entries for it when the daemon started (`/ready` adds those
    /// enqueued since, for a destination nothing delivers to).
    pub pending_at_start: u64,
    /// The current spell of failed attempts, if any.
    pub failing: Option<Failing>,
    /// For a replica: whether it holds this destination's lease (`None`
    /// when the daemon is alone).
    pub duty: Option<DutyState>,
}

#[derive(Debug, Default)]
pub struct DeliveryStatus {
    destinations: Mutex<BTreeMap<&'static str, DestinationStatus>>,
}

impl DeliveryStatus {
    pub fn set(&self, name: &'static str, status: DestinationStatus) {
        self.lock().insert(name, status);
    }

    pub fn set_failing(&self, name: &'static str, failing: Option<Failing>) {
        self.lock().entry(name).or_default().failing = failing;
    }

    pub fn set_duty(&self, name: &'static str, duty: DutyState) {
        self.lock().entry(name).or_default().duty = Some(duty);
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, DestinationStatus> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, DestinationStatus>> {
        self.destinations.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
