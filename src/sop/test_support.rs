//! Builders for SOPs in unit tests elsewhere in the crate.

use std::path::PathBuf;

use super::*;

/// A SOP with the given triggers (no conditions) and SOP.toml's defaults,
/// in `auto` mode so runs start `running`.
pub fn sop_with(name: &str, specs: Vec<TriggerSpec>) -> Sop {
    Sop {
        name: name.to_string(),
        description: format!("test SOP {name}"),
        version: "1.0.0".into(),
        priority: Priority::Normal,
        execution_mode: ExecutionMode::Auto,
        cooldown_secs: 0,
        max_concurrent: 1,
        admission_policy: AdmissionPolicy::Parallel,
        destination: Destination::Agent,
        triggers: specs.into_iter().map(|spec| Trigger { spec, condition: None }).collect(),
        steps: Vec::new(),
        file: PathBuf::from(format!("sops/{name}/SOP.toml")),
    }
}

/// Step `n` (1-based) of a test SOP: an executor-ready tool step named
/// `tool_<n>`, gated when `confirm`.
pub fn step(n: u32, confirm: bool) -> Step {
    Step {
        number: n,
        title: format!("step {n}"),
        body: "do it".into(),
        tools: vec![],
        requires_confirmation: confirm,
        kind: Some(StepKind::Tool),
        reference: Some(format!("tool_{n}")),
        params: Default::default(),
        id: None,
    }
}
