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
