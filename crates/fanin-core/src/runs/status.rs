//! Run states (docs/operations.md) and the transitions between them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// A trigger waiting in the backlog for admission.
    Deferred,
    PendingApproval,
    Running,
    WaitingAgent,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Deferred,
        RunStatus::PendingApproval,
        RunStatus::Running,
        RunStatus::WaitingAgent,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Deferred => "deferred",
            RunStatus::PendingApproval => "pending_approval",
            RunStatus::Running => "running",
            RunStatus::WaitingAgent => "waiting_agent",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }

    /// Holds one of its SOP's `max_concurrent` slots: a run waiting for an
    /// approval or being delivered. A run waiting for the agent loop to take
    /// its step does not: fanin never executes steps, and a headless step
    /// must not hold a slot forever (docs/operations.md#admission).
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::PendingApproval | RunStatus::Running)
    }

    /// Whether a run may move from `self` to `to`.
    pub fn can_become(self, to: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, to),
            (Deferred, PendingApproval | Running | WaitingAgent | Cancelled | Failed)
                | (PendingApproval, Running | WaitingAgent | Cancelled | Failed)
                | (Running, PendingApproval | WaitingAgent | Completed | Failed | Cancelled)
                | (WaitingAgent, Running | PendingApproval | Completed | Failed | Cancelled)
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in RunStatus::ALL {
            assert_eq!(RunStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(RunStatus::parse("done"), None);
    }

    #[test]
    fn terminal_states_never_move() {
        for from in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in RunStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_deferred_run_starts_gated_or_running() {
        assert!(RunStatus::Deferred.can_become(RunStatus::PendingApproval));
        assert!(RunStatus::Deferred.can_become(RunStatus::Running));
        assert!(!RunStatus::Deferred.can_become(RunStatus::Completed));
    }

    #[test]
    fn an_approved_or_promoted_run_can_hand_its_step_to_the_agent_loop() {
        assert!(RunStatus::PendingApproval.can_become(RunStatus::WaitingAgent));
        assert!(RunStatus::Deferred.can_become(RunStatus::WaitingAgent));
    }
}
