//! The matcher index: one lookup structure per source, built once per SOP
//! set, so matching an event costs a hash lookup (or a walk down the MQTT
//! filter trie) instead of a scan over every SOP. Conditions are not the
//! index's business: the dispatcher evaluates them on the candidates.

use std::collections::HashMap;

use crate::event::{Event, Source, TriggerType};
use crate::sop::{Sop, TriggerSpec};

/// A trigger, named by the position of its SOP in the catalog and its own
/// position in that SOP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TriggerRef {
    pub sop: u32,
    pub trigger: u32,
}

#[derive(Debug, Default)]
pub struct Index {
    webhook: HashMap<Box<str>, Vec<TriggerRef>>,
    /// Keyed by `board/signal`, the peripheral event topic.
    peripheral: HashMap<Box<str>, Vec<TriggerRef>>,
    /// Keyed by SOP name.
    manual: HashMap<Box<str>, Vec<TriggerRef>>,
    /// Keyed by expression; the timezone is checked on lookup.
    cron: HashMap<Box<str>, Vec<TriggerRef>>,
    mqtt: FilterTrie,
    /// Channel and drive triggers, keyed by the topic they listen on: the
    /// instance's (`email/ops`) or, without an alias, the kind's (`email`).
    instances: HashMap<Box<str>, Vec<TriggerRef>>,
    /// Filesystem and AMQP triggers, tried one by one: their globs and
    /// patterns are not keys.
    filesystem: Vec<TriggerRef>,
    amqp: Vec<TriggerRef>,
}

impl Index {
    pub fn build(sops: &[Sop]) -> Index {
        let mut index = Index::default();
        for (s, sop) in sops.iter().enumerate() {
            for (t, trigger) in sop.triggers.iter().enumerate() {
                let r = TriggerRef { sop: s as u32, trigger: t as u32 };
                match &trigger.spec {
                    TriggerSpec::Webhook { path } => index.webhook.entry(path.as_str().into()).or_default().push(r),
                    TriggerSpec::Mqtt { topic } => index.mqtt.insert(topic, r),
                    TriggerSpec::Cron(schedule) => index.cron.entry(schedule.expression().into()).or_default().push(r),
                    TriggerSpec::Peripheral { board, signal } => {
                        index.peripheral.entry(format!("{board}/{signal}").into()).or_default().push(r)
                    }
                    TriggerSpec::Manual => index.manual.entry(sop.name.as_str().into()).or_default().push(r),
                    TriggerSpec::Channel { channel, alias } => {
                        index.instances.entry(instance_key(channel.source(), alias)).or_default().push(r)
                    }
                    TriggerSpec::Drive { alias, .. } => {
                        index.instances.entry(instance_key(Source::GoogleDrive, alias)).or_default().push(r)
                    }
                    TriggerSpec::Filesystem { .. } => index.filesystem.push(r),
                    TriggerSpec::Amqp { .. } => index.amqp.push(r),
                }
            }
        }
        index
    }

    /// Appends to `out` every trigger whose source and topic fit the event,
    /// sorted by SOP then trigger position. Conditions are not evaluated.
    pub fn candidates(&self, sops: &[Sop], event: &Event, out: &mut Vec<TriggerRef>) {
        let start = out.len();
        let topic = event.topic.as_str();
        match event.source.trigger_type() {
            TriggerType::Webhook => extend(out, self.webhook.get(topic)),
            TriggerType::Peripheral => extend(out, self.peripheral.get(topic)),
            TriggerType::Manual => extend(out, self.manual.get(topic)),
            TriggerType::Cron => {
                let Some(refs) = self.cron.get(topic) else { return };
                out.extend(refs.iter().copied().filter(|r| match (&event.timezone, trigger_spec(sops, *r)) {
                    (Some(tz), TriggerSpec::Cron(s)) => s.timezone().name() == tz,
                    _ => true,
                }));
            }
            TriggerType::Mqtt => {
                self.mqtt.matches(topic, out);
                out[start..].sort_unstable();
            }
            TriggerType::Channel | TriggerType::Drive => {
                // `email/ops` is heard by the `email/ops` triggers and by
                // the `email` ones; an event of a kind alone (`explain`
                // with topic `email`) by the kind's triggers only.
                if topic.split('/').next() != Some(event.source.as_str()) {
                    return;
                }
                extend(out, self.instances.get(topic));
                if let Some((kind, _)) = topic.split_once('/') {
                    extend(out, self.instances.get(kind));
                }
                out[start..].sort_unstable();
                let payload = event.payload.json();
                let mut kept = start;
                for i in start..out.len() {
                    if drive_filters_hold(trigger_spec(sops, out[i]), payload) {
                        out[kept] = out[i];
                        kept += 1;
                    }
                }
                out.truncate(kept);
            }
            TriggerType::Filesystem => {
                let kind = event.payload.json().and_then(|p| p.get("kind")).and_then(serde_json::Value::as_str);
                out.extend(self.filesystem.iter().copied().filter(|r| match trigger_spec(sops, *r) {
                    TriggerSpec::Filesystem { path, events } => {
                        path.matches(topic)
                            && (events.is_empty() || kind.is_some_and(|k| events.iter().any(|e| e.as_str() == k)))
                    }
                    _ => false,
                }));
            }
            TriggerType::Amqp => out.extend(self.amqp.iter().copied().filter(|r| match trigger_spec(sops, *r) {
                TriggerSpec::Amqp { routing_key } => crate::routing_key::matches(routing_key, topic),
                _ => false,
            })),
        }
    }
}

/// The topic a channel or drive trigger listens on.
fn instance_key(source: Source, alias: &Option<String>) -> Box<str> {
    match alias {
        Some(alias) => format!("{}/{alias}", source.as_str()).into(),
        None => source.as_str().into(),
    }
}

/// A drive trigger's `events` and `folder_id` against a change's payload
/// (`change`, `file.parents`); every other trigger passes.
fn drive_filters_hold(spec: &TriggerSpec, payload: Option<&serde_json::Value>) -> bool {
    let TriggerSpec::Drive { events, folder_id, .. } = spec else { return true };
    let change = payload.and_then(|p| p.get("change")).and_then(serde_json::Value::as_str);
    let kind_ok = events.is_empty() || change.is_some_and(|c| events.iter().any(|e| e.as_str() == c));
    let folder_ok = folder_id.as_ref().is_none_or(|folder| {
        let parents = payload.and_then(|p| p.pointer("/file/parents")).and_then(serde_json::Value::as_array);
        parents.is_some_and(|parents| parents.iter().any(|p| p.as_str() == Some(folder)))
    });
    kind_ok && folder_ok
}

fn extend(out: &mut Vec<TriggerRef>, refs: Option<&Vec<TriggerRef>>) {
    if let Some(refs) = refs {
        out.extend_from_slice(refs);
    }
}

fn trigger_spec(sops: &[Sop], r: TriggerRef) -> &TriggerSpec {
    &sops[r.sop as usize].triggers[r.trigger as usize].spec
}

/// MQTT filters stored level by level: a topic is matched by walking its
/// levels once, following the exact child, the `+` child, and collecting `#`.
#[derive(Debug, Default)]
struct FilterTrie {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    exact: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Filters ending in `/#` below this node (or `#` at the root).
    hash: Vec<TriggerRef>,
    /// Filters ending exactly here.
    end: Vec<TriggerRef>,
}

impl FilterTrie {
    fn insert(&mut self, filter: &str, r: TriggerRef) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "#" => {
                    node.hash.push(r);
                    return;
                }
                "+" => node.plus.get_or_insert_with(Default::default),
                _ => node.exact.entry(level.into()).or_default(),
            };
        }
        node.end.push(r);
    }

    fn matches(&self, topic: &str, out: &mut Vec<TriggerRef>) {
        // Wildcards in the first level never match `$`-topics (MQTT §4.7.2).
        let dollar = topic.starts_with('$');
        walk(&self.root, topic.split('/'), !dollar, out);
    }
}

fn walk<'a>(node: &Node, mut levels: std::str::Split<'a, char>, wildcards: bool, out: &mut Vec<TriggerRef>) {
    if wildcards {
        out.extend_from_slice(&node.hash);
    }
    let Some(level) = levels.next() else {
        out.extend_from_slice(&node.end);
        return;
    };
    if let Some(child) = node.exact.get(level) {
        walk(child, levels.clone(), true, out);
    }
    if wildcards {
        if let Some(child) = &node.plus {
            walk(child, levels, true, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Payload, Source};
    use crate::sop::test_support::sop_with;
    use crate::topic::filter_matches;

    fn event(source: Source, topic: &str) -> Event {
        Event::new("e-1", source, topic, Payload::Json(serde_json::Value::Null), chrono::Utc::now())
    }

    fn mqtt_sops(filters: &[&str]) -> Vec<Sop> {
        filters
            .iter()
            .enumerate()
            .map(|(i, f)| sop_with(&format!("s{i}"), vec![TriggerSpec::Mqtt { topic: f.to_string() }]))
            .collect()
    }

    fn matched(index: &Index, sops: &[Sop], source: Source, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        index.candidates(sops, &event(source, topic), &mut out);
        out.into_iter().map(|r| r.sop).collect()
    }

    #[test]
    fn mqtt_trie_agrees_with_the_reference_rule() {
        let filters = [
            "a/b",
            "a/+",
            "a/#",
            "#",
            "+",
            "+/+",
            "a/+/c",
            "+/b/#",
            "$SYS/#",
            "$SYS/+",
            "/",
            "/+",
            "a//b",
            "a/+/+",
            "sensors/+/alert",
        ];
        let sops = mqtt_sops(&filters);
        let index = Index::build(&sops);
        let topics = [
            "a",
            "a/b",
            "a/c",
            "a/b/c",
            "a/b/d",
            "b",
            "/",
            "/a",
            "a//b",
            "$SYS",
            "$SYS/x",
            "$SYS/x/y",
            "x/b",
            "x/b/y",
            "sensors/kitchen/alert",
            "sensors/alert",
            "",
            "a/",
        ];
        for topic in topics {
            let want: Vec<u32> =
                (0..filters.len() as u32).filter(|&i| filter_matches(filters[i as usize], topic)).collect();
            assert_eq!(matched(&index, &sops, Source::Mqtt, topic), want, "topic {topic:?}");
        }
    }

    #[test]
    fn mqtt_edge_cases() {
        let sops = mqtt_sops(&["a/#", "+/+", "#", "$SYS/#"]);
        let index = Index::build(&sops);
        // `a/#` also matches the parent level `a`.
        assert_eq!(matched(&index, &sops, Source::Mqtt, "a"), vec![0, 2]);
        // `+/+` needs exactly two levels; an empty level counts.
        assert_eq!(matched(&index, &sops, Source::Mqtt, "/x"), vec![1, 2]);
        // `$`-topics are only matched by filters that name the `$` level.
        assert_eq!(matched(&index, &sops, Source::Mqtt, "$SYS/broker/load"), vec![3]);
    }

    #[test]
    fn exact_indexes_per_source() {
        let sops = vec![
            sop_with("hook", vec![TriggerSpec::Webhook { path: "/sop/deploy".into() }, TriggerSpec::Manual]),
            sop_with("hook2", vec![TriggerSpec::Webhook { path: "/webhook".into() }]),
            sop_with("button", vec![TriggerSpec::Peripheral { board: "nucleo".into(), signal: "pin_3".into() }]),
        ];
        let index = Index::build(&sops);
        assert_eq!(matched(&index, &sops, Source::SopWebhook, "/sop/deploy"), vec![0]);
        assert_eq!(matched(&index, &sops, Source::Webhook, "/webhook"), vec![1]);
        assert_eq!(matched(&index, &sops, Source::SopWebhook, "/sop/deploy/"), Vec::<u32>::new());
        assert_eq!(matched(&index, &sops, Source::Peripheral, "nucleo/pin_3"), vec![2]);
        assert_eq!(matched(&index, &sops, Source::Manual, "hook"), vec![0]);
        assert_eq!(matched(&index, &sops, Source::Manual, "button"), Vec::<u32>::new());
        // A webhook path never matches an MQTT topic of the same text.
        assert_eq!(matched(&index, &sops, Source::Mqtt, "/webhook"), Vec::<u32>::new());
    }

    #[test]
    fn channel_triggers_hear_their_instance_or_every_instance_of_their_kind() {
        use crate::sop::ChannelKind;
        let channel = |channel, alias: Option<&str>| TriggerSpec::Channel { channel, alias: alias.map(Into::into) };
        let sops = vec![
            sop_with("ops-mail", vec![channel(ChannelKind::Email, Some("ops"))]),
            sop_with("any-mail", vec![channel(ChannelKind::Email, None)]),
            sop_with("slack", vec![channel(ChannelKind::Slack, Some("ops"))]),
        ];
        let index = Index::build(&sops);
        assert_eq!(matched(&index, &sops, Source::Email, "email/ops"), vec![0, 1]);
        assert_eq!(matched(&index, &sops, Source::Email, "email/sales"), vec![1]);
        assert_eq!(matched(&index, &sops, Source::Email, "email"), vec![1]);
        assert_eq!(matched(&index, &sops, Source::Slack, "slack/ops"), vec![2]);
        assert_eq!(matched(&index, &sops, Source::Telegram, "telegram/ops"), Vec::<u32>::new());
        // A channel topic never matches a trigger of another kind.
        assert_eq!(matched(&index, &sops, Source::Mqtt, "email/ops"), Vec::<u32>::new());
    }

    #[test]
    fn drive_triggers_filter_by_change_and_folder() {
        use crate::sop::DriveChange;
        let drive = |events: Vec<DriveChange>, folder: Option<&str>| TriggerSpec::Drive {
            alias: Some("shared".into()),
            events,
            folder_id: folder.map(Into::into),
        };
        let sops = vec![
            sop_with("created", vec![drive(vec![DriveChange::Created], None)]),
            sop_with("all", vec![TriggerSpec::Drive { alias: None, events: vec![], folder_id: None }]),
            sop_with("in-folder", vec![drive(vec![], Some("F1"))]),
        ];
        let index = Index::build(&sops);
        let change = |change: &str, parents: &[&str]| {
            let mut e = event(Source::GoogleDrive, "google_drive/shared");
            e.payload =
                crate::event::Payload::Json(serde_json::json!({"change": change, "file": {"parents": parents}}));
            e
        };
        let mut out = Vec::new();
        let mut ids = |e: &Event| {
            out.clear();
            index.candidates(&sops, e, &mut out);
            out.iter().map(|r| r.sop).collect::<Vec<u32>>()
        };
        assert_eq!(ids(&change("created", &["F2"])), vec![0, 1]);
        assert_eq!(ids(&change("modified", &["F1"])), vec![1, 2]);
        assert_eq!(ids(&change("created", &["F0", "F1"])), vec![0, 1, 2]);
    }

    #[test]
    fn filesystem_and_amqp_triggers_match_by_glob_and_pattern() {
        use crate::sop::{FsChange, PathGlob};
        let fs = |glob: &str, events: Vec<FsChange>| TriggerSpec::Filesystem {
            path: PathGlob::parse(glob).unwrap(),
            events,
        };
        let sops = vec![
            sop_with("csv", vec![fs("/srv/drop/**/*.csv", vec![FsChange::Created])]),
            sop_with("any", vec![fs("/srv/drop", vec![])]),
            sop_with("alerts", vec![TriggerSpec::Amqp { routing_key: "sensors.*.alert".into() }]),
            sop_with("all", vec![TriggerSpec::Amqp { routing_key: "#".into() }]),
        ];
        let index = Index::build(&sops);
        let change = |path: &str, kind: &str| {
            let mut e = event(Source::Filesystem, path);
            e.payload = crate::event::Payload::Json(serde_json::json!({"kind": kind}));
            let mut out = Vec::new();
            index.candidates(&sops, &e, &mut out);
            out.into_iter().map(|r| r.sop).collect::<Vec<u32>>()
        };
        assert_eq!(change("/srv/drop/in/a.csv", "created"), vec![0, 1]);
        assert_eq!(change("/srv/drop/in/a.csv", "deleted"), vec![1]);
        assert_eq!(change("/srv/other/a.csv", "created"), Vec::<u32>::new());
        assert_eq!(matched(&index, &sops, Source::Amqp, "sensors.kitchen.alert"), vec![2, 3]);
        assert_eq!(matched(&index, &sops, Source::Amqp, "sensors.alert"), vec![3]);
    }

    #[test]
    fn cron_matches_expression_and_timezone() {
        let paris = crate::cron::parse_schedule("0 0 8 * * *", Some("Europe/Paris")).unwrap();
        let utc = crate::cron::parse_schedule("0 0 8 * * *", None).unwrap();
        let sops = vec![
            sop_with("p", vec![TriggerSpec::Cron(Box::new(paris))]),
            sop_with("u", vec![TriggerSpec::Cron(Box::new(utc))]),
        ];
        let index = Index::build(&sops);
        let mut e = event(Source::Cron, "0 0 8 * * *");
        let mut out = Vec::new();
        index.candidates(&sops, &e, &mut out);
        assert_eq!(out.len(), 2, "no timezone: every timezone");
        e.timezone = Some("Europe/Paris".into());
        out.clear();
        index.candidates(&sops, &e, &mut out);
        assert_eq!(out, vec![TriggerRef { sop: 0, trigger: 0 }]);
    }
}
