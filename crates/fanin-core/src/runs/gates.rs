//! Where approval gates sit (docs/operations.md#approvals): decided by the SOP's execution mode,
//! its priority and each step's `requires_confirmation`.

use super::RunStatus;
use crate::sop::{ExecutionMode, Priority, Sop};

/// Whether an operator must approve before step `index` (0-based) runs. A
/// SOP without steps has one gate position: before its event is delivered.
pub fn approval_before(sop: &Sop, index: usize) -> bool {
    let confirm = sop.steps.get(index).is_some_and(|s| s.requires_confirmation);
    confirm
        || match sop.execution_mode {
            ExecutionMode::Supervised => index == 0,
            ExecutionMode::StepByStep => true,
            ExecutionMode::PriorityBased => sop.priority >= Priority::High,
            ExecutionMode::Auto | ExecutionMode::Deterministic => false,
        }
}

/// The state a run of `sop` is in once admitted.
pub fn initial_status(sop: &Sop) -> RunStatus {
    if approval_before(sop, 0) {
        RunStatus::PendingApproval
    } else {
        RunStatus::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sop::test_support::{sop_with, step};
    use crate::sop::TriggerSpec;

    fn sop(mode: ExecutionMode, priority: Priority, confirms: &[bool]) -> Sop {
        let mut s = sop_with("s", vec![TriggerSpec::Manual]);
        s.execution_mode = mode;
        s.priority = priority;
        s.steps = confirms.iter().enumerate().map(|(i, c)| step(i as u32 + 1, *c)).collect();
        s
    }

    #[test]
    fn gates_by_mode() {
        use ExecutionMode::*;
        let rows = [
            (Supervised, Priority::Normal, [true, false, false]),
            (StepByStep, Priority::Low, [true, true, true]),
            (PriorityBased, Priority::Normal, [false, false, false]),
            (PriorityBased, Priority::High, [true, true, true]),
            (PriorityBased, Priority::Critical, [true, true, true]),
            (Auto, Priority::Critical, [false, false, false]),
            (Deterministic, Priority::High, [false, false, false]),
        ];
        for (mode, prio, want) in rows {
            let s = sop(mode, prio, &[false, false, false]);
            let got: Vec<bool> = (0..3).map(|i| approval_before(&s, i)).collect();
            assert_eq!(got, want, "{mode:?} {prio:?}");
        }
    }

    #[test]
    fn requires_confirmation_always_gates() {
        let s = sop(ExecutionMode::Auto, Priority::Low, &[false, true]);
        assert!(!approval_before(&s, 0));
        assert!(approval_before(&s, 1));
        let first = sop(ExecutionMode::Auto, Priority::Low, &[true]);
        assert_eq!(initial_status(&first), RunStatus::PendingApproval);
    }

    #[test]
    fn initial_status_follows_the_first_gate() {
        assert_eq!(initial_status(&sop(ExecutionMode::Supervised, Priority::Low, &[])), RunStatus::PendingApproval);
        assert_eq!(initial_status(&sop(ExecutionMode::Auto, Priority::Low, &[])), RunStatus::Running);
    }
}
