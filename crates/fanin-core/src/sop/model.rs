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
    /// ZeroClaw's `channel` trigger: messages of one kind of channel, from
    /// one configured instance (`alias`) or, without one, from every instance.
    Channel {
        channel: ChannelKind,
        alias: Option<String>,
    },
    /// Changes of a Drive instance (`alias`, else every one), of the kinds
    /// in `events` (empty = every kind).
    Drive {
        alias: Option<String>,
        events: Vec<DriveChange>,
        /// Only files whose parents hold this folder.
        folder_id: Option<String>,
    },
    /// Changes of files whose absolute path `path` matches, of the kinds in
    /// `events` (empty = every kind).
    Filesystem {
        path: PathGlob,
        events: Vec<FsChange>,
    },
    /// AMQP deliveries whose routing key `routing_key` matches (topic
    /// semantics, `crate::routing_key`).
    Amqp {
        routing_key: String,
    },
}

/// A filesystem trigger's `path` as written and compiled. A path without
/// glob characters names a file or a directory: it matches the path itself
/// and anything under it.
#[derive(Clone, Debug)]
pub struct PathGlob {
    written: String,
    matcher: globset::GlobMatcher,
    /// Set for a plain path: anything under it matches too.
    under: Option<String>,
}

impl PathGlob {
    /// `path` must be absolute; `*` does not cross `/`, `**` does.
    pub fn parse(path: &str) -> Result<PathGlob, String> {
        if !path.starts_with('/') {
            return Err(format!("{path:?} is not an absolute path"));
        }
        let glob = globset::GlobBuilder::new(path)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("{path:?} is not a glob: {}", e.kind()))?;
        let plain = !path.contains(['*', '?', '[', '{']);
        let under = plain.then(|| format!("{}/", path.trim_end_matches('/')));
        Ok(PathGlob { written: path.to_string(), matcher: glob.compile_matcher(), under })
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }

    pub fn matches(&self, path: &str) -> bool {
        self.matcher.is_match(path) || self.under.as_ref().is_some_and(|dir| path.starts_with(dir.as_str()))
    }

    /// The directory the glob cannot match outside of: its part before the
    /// first glob character, cut at the last `/` (`/srv/drop/**/*.csv` →
    /// `/srv/drop`).
    pub fn base(&self) -> &str {
        let first = self.written.find(['*', '?', '[', '{']).unwrap_or(self.written.len());
        if first == self.written.len() {
            return self.written.trim_end_matches('/');
        }
        match self.written[..first].rfind('/') {
            Some(0) | None => "/",
            Some(cut) => &self.written[..cut],
        }
    }
}

/// What happened to a file, as the filesystem source names it in a
/// change's payload (`kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsChange {
    Created,
    Modified,
    Deleted,
    Renamed,
}

impl FsChange {
    pub const ALL: [FsChange; 4] = [FsChange::Created, FsChange::Modified, FsChange::Deleted, FsChange::Renamed];

    pub fn as_str(self) -> &'static str {
        match self {
            FsChange::Created => "created",
            FsChange::Modified => "modified",
            FsChange::Deleted => "deleted",
            FsChange::Renamed => "renamed",
        }
    }

    pub fn parse(s: &str) -> Option<FsChange> {
        FsChange::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The channels a `channel` trigger may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Email,
    Slack,
    Telegram,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 3] = [ChannelKind::Email, ChannelKind::Slack, ChannelKind::Telegram];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Slack => "slack",
            ChannelKind::Telegram => "telegram",
        }
    }

    pub fn parse(s: &str) -> Option<ChannelKind> {
        ChannelKind::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The source whose events this channel's triggers match.
    pub fn source(self) -> crate::event::Source {
        use crate::event::Source;
        match self {
            ChannelKind::Email => Source::Email,
            ChannelKind::Slack => Source::Slack,
            ChannelKind::Telegram => Source::Telegram,
        }
    }
}

/// What happened to a file, as the Drive source names it in a change's
/// payload (`change`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriveChange {
    Created,
    Modified,
    Trashed,
    Removed,
}

impl DriveChange {
    pub const ALL: [DriveChange; 4] =
        [DriveChange::Created, DriveChange::Modified, DriveChange::Trashed, DriveChange::Removed];

    pub fn as_str(self) -> &'static str {
        match self {
            DriveChange::Created => "created",
            DriveChange::Modified => "modified",
            DriveChange::Trashed => "trashed",
            DriveChange::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<DriveChange> {
        DriveChange::ALL.into_iter().find(|c| c.as_str() == s)
    }
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
            TriggerSpec::Channel { .. } => TriggerType::Channel,
            TriggerSpec::Drive { .. } => TriggerType::Drive,
            TriggerSpec::Filesystem { .. } => TriggerType::Filesystem,
            TriggerSpec::Amqp { .. } => TriggerType::Amqp,
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
            TriggerSpec::Channel { channel, alias } => match alias {
                Some(alias) => format!("channel {}/{alias}", channel.as_str()),
                None => format!("channel {}", channel.as_str()),
            },
            TriggerSpec::Drive { alias, events, .. } => {
                let alias = alias.as_deref().map(|a| format!(" {a}")).unwrap_or_default();
                let events: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
                match events.is_empty() {
                    true => format!("drive{alias}"),
                    false => format!("drive{alias} [{}]", events.join(", ")),
                }
            }
            TriggerSpec::Filesystem { path, events } => {
                let events: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
                match events.is_empty() {
                    true => format!("filesystem {}", path.as_str()),
                    false => format!("filesystem {} [{}]", path.as_str(), events.join(", ")),
                }
            }
            TriggerSpec::Amqp { routing_key } => format!("amqp {routing_key}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_globs_match_as_zeroclaw_writes_them() {
        let csv = PathGlob::parse("/srv/drop/**/*.csv").unwrap();
        assert!(csv.matches("/srv/drop/a.csv") && csv.matches("/srv/drop/x/y/a.csv"));
        assert!(!csv.matches("/srv/drop/a.txt") && !csv.matches("/srv/other/a.csv"));
        assert_eq!(csv.base(), "/srv/drop");
        let one_level = PathGlob::parse("/srv/drop/*.csv").unwrap();
        assert!(!one_level.matches("/srv/drop/x/a.csv"), "* does not cross /");
        let dir = PathGlob::parse("/srv/drop").unwrap();
        assert!(dir.matches("/srv/drop") && dir.matches("/srv/drop/x/a.csv") && !dir.matches("/srv/dropped"));
        assert_eq!(dir.base(), "/srv/drop");
        assert_eq!(PathGlob::parse("/*.csv").unwrap().base(), "/");
        assert!(PathGlob::parse("drop/*.csv").unwrap_err().contains("absolute"));
        assert!(PathGlob::parse("/srv/[drop").is_err());
    }
}
