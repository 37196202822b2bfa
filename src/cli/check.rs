//! Commands that only read files: `validate`, `explain`, `sop list|show`.
//! They never touch the store, so they are safe anywhere.

use std::path::Path;

use chrono::Utc;
use serde_json::json;

use super::{load_config, output, Failure, SopCommand};

use crate::event::{Event, Payload, Source};
use crate::sop::{self, Sop};

pub fn validate(config_path: &Path, json: bool) -> Result<(), Failure> {
    let (config, mut errors) = match crate::config::load(config_path) {
        Ok(c) => (Some(c), Vec::new()),
        Err(errs) => (None, errs.iter().map(ToString::to_string).collect::<Vec<_>>()),
    };
    let mut warnings = Vec::new();
    let mut count = 0;
    if let Some(config) = &config {
        let report = sop::load_dir(&config.sops_dir(), config.sop.default_execution_mode);
        errors.extend(report.errors.iter().map(ToString::to_string));
        warnings.extend(report.warnings.iter().map(ToString::to_string));
        warnings.extend(crate::checks::cross_warnings(config, &report.sops));
        count = report.sops.len();
    }
    if json {
        output::json(&json!({"ok": errors.is_empty(), "sops": count, "errors": errors, "warnings": warnings}));
    } else {
        for w in &warnings {
            println!("warning: {w}");
        }
        if errors.is_empty() {
            println!("ok: {} and {count} SOP(s) are valid", config_path.display());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure { message: format!("{} error(s) in {}", errors.len(), config_path.display()), details: errors })
    }
}

fn load_sops(config_path: &Path) -> Result<Vec<Sop>, Failure> {
    let config = load_config(config_path)?;
    let report = sop::load_dir(&config.sops_dir(), config.sop.default_execution_mode);
    if !report.errors.is_empty() {
        return Err(Failure {
            message: format!("{} SOP error(s); run `fanin validate`", report.errors.len()),
            details: report.errors.iter().map(ToString::to_string).collect(),
        });
    }
    Ok(report.sops)
}

pub fn explain(
    config_path: &Path,
    json: bool,
    source: &str,
    topic: &str,
    payload: Option<&str>,
    timezone: Option<String>,
) -> Result<(), Failure> {
    let source = Source::parse(source).ok_or_else(|| {
        let names: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
        Failure::new(format!("--source {source:?}: expected one of {}", names.join(", ")))
    })?;
    let max_depth = load_config(config_path)?.gateway.max_payload_depth;
    let payload = match payload {
        Some(p) => {
            crate::event::parse_payload(p.as_bytes(), max_depth).map_err(|e| Failure::new(format!("--payload: {e}")))?
        }
        None => Payload::Json(serde_json::Value::Null),
    };
    let catalog = crate::dispatch::Catalog::new(load_sops(config_path)?);
    let mut event = Event::new(crate::ids::fresh(), source, topic, payload, Utc::now());
    event.timezone = timezone;
    let explanation = catalog.explain(&event);
    if json {
        output::json(&json!(explanation));
        return Ok(());
    }
    if explanation.matches.is_empty() {
        println!("no trigger matches {} {topic:?}", source.as_str());
    }
    for m in &explanation.matches {
        println!("match      {}  triggers[{}]  {}", m.sop, m.trigger_index, m.trigger);
    }
    for n in &explanation.near_misses {
        println!("near miss  {}  triggers[{}]  {}: {}", n.sop, n.trigger_index, n.trigger, n.reason);
    }
    Ok(())
}

pub fn sop(config_path: &Path, json: bool, command: SopCommand) -> Result<(), Failure> {
    let sops = load_sops(config_path)?;
    match command {
        SopCommand::List => {
            if json {
                output::json(&json!({"sops": sops.iter().map(summary).collect::<Vec<_>>()}));
            } else {
                let rows: Vec<Vec<String>> = sops
                    .iter()
                    .map(|s| {
                        let triggers: Vec<String> = s.triggers.iter().map(|t| t.describe()).collect();
                        vec![s.name.clone(), s.version.clone(), format!("{:?}", s.execution_mode), triggers.join("; ")]
                    })
                    .collect();
                output::table(&["NAME", "VERSION", "MODE", "TRIGGERS"], &rows);
            }
        }
        SopCommand::Show { name } => {
            let sop =
                sops.iter().find(|s| s.name == name).ok_or_else(|| Failure::new(format!("no SOP named {name}")))?;
            let mut value = summary(sop);
            value["steps"] = json!(sop.steps);
            if json {
                output::json(&value);
            } else {
                println!("{}", serde_json::to_string_pretty(&value).expect("JSON prints"));
            }
        }
    }
    Ok(())
}

fn summary(s: &Sop) -> serde_json::Value {
    json!({
        "name": s.name, "description": s.description, "version": s.version, "priority": s.priority,
        "execution_mode": s.execution_mode, "cooldown_secs": s.cooldown_secs, "max_concurrent": s.max_concurrent,
        "admission_policy": s.admission_policy, "destination": s.destination,
        "triggers": s.triggers.iter().map(|t| t.describe()).collect::<Vec<_>>(),
        "steps": s.steps.len(), "file": s.file,
    })
}
