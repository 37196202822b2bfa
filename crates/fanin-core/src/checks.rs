//! Checks that need both `config.toml` and the SOPs: a trigger the config
//! makes unreachable loads, but is warned about, so an operator learns at
//! start-up (and from `fanin validate`) rather than from silence.

use crate::config::{self, Config};
use crate::sop::{Sop, TriggerSpec};
use crate::topic::filter_covers;

/// The config's own warnings, and those that need both the config and the
/// SOPs.
pub fn cross_warnings(config: &Config, sops: &[Sop]) -> Vec<String> {
    let mut warnings = config.warnings();
    let file = config.file.display();
    let ingests = sops.iter().flat_map(|s| &s.triggers).any(|t| matches!(t.spec, TriggerSpec::Webhook { .. }));
    if ingests && !config.gateway.require_pairing && config.gateway.webhook_secret.is_empty() {
        warnings.push(format!(
            "{file}: gateway: neither require_pairing nor webhook_secret is set: /sop/* and SOP-matching /webhook \
             requests will be refused with 401"
        ));
    }
    for sop in sops {
        for (i, t) in sop.triggers.iter().enumerate() {
            // `/peripheral/{board}/…` and the serial bridge serve declared boards only.
            if let TriggerSpec::Peripheral { board, signal } = &t.spec {
                if !config.peripherals.contains_key(board) {
                    warnings.push(format!(
                        "{}: triggers[{i}].board: board {board:?} (signal {signal:?}) is not declared in [peripherals] \
                         of {file}; this trigger will never fire",
                        sop.file.display()
                    ));
                }
            }
            let instance = match &t.spec {
                TriggerSpec::Channel { channel, alias } => Some((channel.as_str(), alias)),
                TriggerSpec::Drive { alias, .. } => Some(("google_drive", alias)),
                _ => None,
            };
            if let Some((kind, alias)) = instance {
                if let Some(unheard) = unheard_instance(config, kind, alias.as_deref()) {
                    warnings.push(format!(
                        "{}: triggers[{i}]: {unheard}; this trigger will never fire",
                        sop.file.display()
                    ));
                }
            }
            if let Some(unheard) = unheard_file_or_delivery(config, &t.spec) {
                warnings
                    .push(format!("{}: triggers[{i}]: {unheard}; this trigger will never fire", sop.file.display()));
            }
            if let TriggerSpec::Mqtt { topic } = &t.spec {
                let mqtt = config.channels_config.mqtt.as_ref();
                let subscribed = mqtt.map(|m| m.topics.as_slice()).unwrap_or(&[]);
                let table = mqtt.map_or(config::MQTT_TABLE, |m| m.table.as_str());
                if !subscribed.iter().any(|s| filter_covers(s, topic)) {
                    warnings.push(format!(
                        "{}: triggers[{i}].topic: {topic:?} is not covered by any topic in [{table}] topics \
                         ({subscribed:?}); this trigger will never see a message",
                        sop.file.display()
                    ));
                }
            }
        }
    }
    warnings
}

/// Why a channel or drive trigger hears nothing, if it does not: no enabled
/// block of its kind (and alias) in config.toml.
fn unheard_instance(config: &Config, kind: &str, alias: Option<&str>) -> Option<String> {
    let mut of_kind = config.channels_config.instances().filter(|(k, _, _)| *k == kind);
    let heard = match alias {
        Some(alias) => of_kind.any(|(_, a, enabled)| a == alias && enabled),
        None => of_kind.any(|(_, _, enabled)| enabled),
    };
    let table = match alias {
        Some(alias) => format!("[channels_config.{kind}.{alias}]"),
        None => format!("[channels_config.{kind}.<alias>]"),
    };
    (!heard).then(|| format!("no enabled {table} in {}", config.file.display()))
}

/// Why a filesystem or AMQP trigger hears nothing, if it does not: no
/// enabled block, a path outside every watched root, a routing key no
/// binding brings to the queue.
fn unheard_file_or_delivery(config: &Config, spec: &TriggerSpec) -> Option<String> {
    let file = config.file.display();
    match spec {
        TriggerSpec::Filesystem { path, .. } => {
            let Some(fs) = config.channels_config.filesystem.as_ref().filter(|f| f.enabled) else {
                return Some(format!("no enabled [channels_config.filesystem] in {file}"));
            };
            let roots: Vec<String> = fs
                .paths
                .iter()
                .map(|p| config.resolve(p).display().to_string().trim_end_matches('/').to_string())
                .collect();
            let base = path.base();
            let inside =
                roots.iter().any(|root| base == root || base.starts_with(&format!("{root}/")) || root.is_empty());
            (!inside).then(|| format!("path {:?} is under none of the watched paths {roots:?}", path.as_str()))
        }
        TriggerSpec::Amqp { routing_key } => {
            let Some(amqp) = config.channels_config.amqp.as_ref().filter(|a| a.enabled) else {
                return Some(format!("no enabled [channels_config.amqp] in {file}"));
            };
            let bound = amqp.exchange.is_empty()
                || amqp.exchange_type != "topic"
                || amqp.bindings.iter().any(|b| crate::routing_key::overlaps(b, routing_key));
            (!bound).then(|| format!("routing_key {routing_key:?} matches no key of the bindings {:?}", amqp.bindings))
        }
        _ => None,
    }
}
