//! The loaded, validated form of a SOP directory (docs/configuration.md).
//!
//! Everything here has already passed validation: conditions are parsed,
//! cron expressions checked, topic filters and paths checked. Code that holds
//! a `Sop` never re-validates.

use std::path::PathBuf;

use serde::Serialize;

use super::condition::Condition;
/// A cron trigger's checked expression and timezone; defined beside the
/// parser, which is the only place that builds one.
pub use crate::cron::Schedule;
use crate::event::TriggerType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Normal,
    High,
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    Auto,
    Supervised,
    StepByStep,
    PriorityBased,
    Deterministic,
}

/// What happens to a trigger that arrives while its SOP is at capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionPolicy {
    /// Up to `max_concurrent` runs at once; further triggers wait in the backlog.
    Parallel,
    /// One run at a time, in arrival order: a trigger waits while any run of
    /// the SOP is active or waiting, whatever `max_concurrent` says.
    Hold,
    /// At capacity, at most one trigger waits; newer ones merge into it.
    Coalesce,
    /// At capacity, the trigger is skipped (audited).
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    Agent,
    Executor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Tool,
    Capability,
    Usecase,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// 1-based position in the SOP.
    pub number: u32,
    pub title: String,
    pub body: String,
    pub tools: Vec<String>,
    pub requires_confirmation: bool,
    /// Executor steps: `type`, `ref`, `params` and an optional `id`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<StepKind>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Clone, Debug)]
pub enum TriggerSpec {
    /// `path` is exact: `/webhook` or a path under `/sop/`.
    Webhook {
        path: String,
    },
    /// `topic` is an MQTT filter, `+` and `#` allowed.
    Mqtt {
        topic: String,
    },
    Cron(Box<Schedule>),
    Peripheral {
        board: String,
        signal: String,
    },
    Manual,
}

#[derive(Clone, Debug)]
pub struct Trigger {
    pub spec: TriggerSpec,
    pub condition: Option<Condition>,
}

impl Trigger {
    pub fn trigger_type(&self) -> TriggerType {
        match self.spec {
            TriggerSpec::Webhook { .. } => TriggerType::Webhook,
            TriggerSpec::Mqtt { .. } => TriggerType::Mqtt,
            TriggerSpec::Cron(_) => TriggerType::Cron,
            TriggerSpec::Peripheral { .. } => TriggerType::Peripheral,
            TriggerSpec::Manual => TriggerType::Manual,
        }
    }

    /// A one-line human description, e.g. `mqtt sensors/+/alert if $.severity >= 2`.
    pub fn describe(&self) -> String {
        let base = match &self.spec {
            TriggerSpec::Webhook { path } => format!("webhook {path}"),
            TriggerSpec::Mqtt { topic } => format!("mqtt {topic}"),
            TriggerSpec::Cron(s) => format!("cron {} ({})", s.expression(), s.timezone().name()),
            TriggerSpec::Peripheral { board, signal } => format!("peripheral {board}/{signal}"),
            TriggerSpec::Manual => "manual".to_string(),
        };
        match &self.condition {
            Some(c) => format!("{base} if {}", c.source()),
            None => base,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sop {
    pub name: String,
    pub description: String,
    pub version: String,
    pub priority: Priority,
    pub execution_mode: ExecutionMode,
    pub cooldown_secs: u64,
    pub max_concurrent: u32,
    pub admission_policy: AdmissionPolicy,
    pub destination: Destination,
    pub triggers: Vec<Trigger>,
    pub steps: Vec<Step>,
    /// The SOP.toml this was loaded from (for messages).
    pub file: PathBuf,
}
