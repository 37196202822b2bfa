//! SOP directories from disk. The SOP language — the model, parsing and
//! validating `SOP.toml` and `SOP.md`, conditions — is fanin-core's
//! (`fanin_core::sop`, re-exported here so the runtime names one `sop`);
//! this module adds the one effect: reading the directory tree.

use std::path::{Path, PathBuf};

pub use fanin_core::sop::*;

/// Loads every `<dir>/<name>/SOP.toml` on disk, sorted by directory name. A
/// missing or unreadable `dir` is an error naming it.
pub fn load_dir(dir: &Path, default_mode: ExecutionMode) -> LoadReport {
    load_tree(dir, &Disk, default_mode)
}

/// The SOP loader's files, read from disk.
struct Disk;

impl SopFiles for Disk {
    fn subdirs(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
        Ok(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect())
    }

    fn read(&self, file: &Path) -> Option<Result<String, String>> {
        if !file.is_file() {
            return None;
        }
        Some(std::fs::read_to_string(file).map_err(|e| e.to_string()))
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::envelope::registry::Category;
    use crate::envelope::test_support::{self as fixtures, deploy_envelope, example_registries};
    use crate::envelope::{legacy, schema, Run};
    use crate::event::Source;

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let report = load_dir(Path::new("/nonexistent/fanin-sops"), ExecutionMode::Supervised);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].file, Path::new("/nonexistent/fanin-sops"));
    }

    #[test]
    fn the_examples_load_without_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sops");
        let report = load_dir(&dir, ExecutionMode::Supervised);
        assert!(report.errors.is_empty(), "{:#?}", report.errors);
        assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
        let names: Vec<&str> = report.sops.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "amqp-release",
                "csv-intake",
                "deploy-pipeline",
                "door-button",
                "drive-invoices",
                "inbox-deploy",
                "incident-response",
                "morning-report",
                "sensor-alert",
                "slack-incident",
                "telegram-status"
            ]
        );
        let release = &report.sops[0];
        assert_eq!(release.steps.len(), 3, "steps from SOP.md");
        assert!(release.steps[1].requires_confirmation);
        let intake = &report.sops[1];
        assert_eq!(intake.steps.len(), 3, "steps from SOP.md");
        let deploy = &report.sops[2];
        assert_eq!(deploy.max_concurrent, 4);
        let incident = &report.sops[6];
        assert_eq!(incident.steps.len(), 4, "steps from SOP.md");
        assert!(incident.steps[2].requires_confirmation);
        let mut types: Vec<String> =
            report.sops.iter().flat_map(|s| s.triggers.iter().map(|t| format!("{:?}", t.trigger_type()))).collect();
        types.sort();
        types.dedup();
        assert_eq!(
            types,
            ["Amqp", "Channel", "Cron", "Drive", "Filesystem", "Manual", "Mqtt", "Peripheral", "Webhook"],
            "every served trigger type is exercised"
        );
    }

    #[test]
    fn the_example_config_points_at_the_example_sops() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.toml");
        let config = crate::config::load(&path).unwrap();
        let report = load_dir(&config.sops_dir(), config.sop.default_execution_mode);
        assert!(report.errors.is_empty(), "{:#?}", report.errors);
        assert_eq!(report.sops.len(), 11);
    }

    fn category_of(kind: StepKind) -> Category {
        match kind {
            StepKind::Tool => Category::Tools,
            StepKind::Capability => Category::Capabilities,
            StepKind::Usecase => Category::Usecases,
        }
    }

    /// Every example SOP, loaded by the real loader, gives envelopes the
    /// schema accepts, and every executor step names an entry of the example
    /// registries.
    #[test]
    fn the_example_sops_build_valid_envelopes_against_the_example_registries() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sops");
        let report = load_dir(&dir, ExecutionMode::Supervised);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.sops.iter().any(|sop| sop.destination == Destination::Executor));
        let registries = example_registries();
        for sop in &report.sops {
            if sop.destination == Destination::Executor {
                let envelope = deploy_envelope(Source::Manual, sop.destination, &sop.steps, None);
                if let Err(errors) = schema::validate(&envelope) {
                    panic!("{}: {errors:#?}", sop.name);
                }
            }
            let trigger = legacy::event_json(&fixtures::deploy_event(Source::Manual));
            let run = Run {
                run_id: "r",
                sop_name: &sop.name,
                sop_version: &sop.version,
                source: Source::Manual,
                trigger: &trigger,
                session: None,
            };
            // An agent SOP with steps goes step by step, without an envelope.
            let handover = crate::runs::lifecycle::handover(sop);
            if handover == crate::runs::lifecycle::Handover::Envelope(Destination::Agent) {
                schema::validate(&legacy::build_for_run(&run, &sop.steps)).unwrap();
            }
            for step in sop.steps.iter().filter(|_| sop.destination == Destination::Executor) {
                let category = category_of(step.kind.unwrap());
                let reference = step.reference.as_deref().unwrap();
                let entries = registries.get(category).unwrap().local[category.as_str()].as_array().unwrap();
                let found = entries.iter().any(|entry| entry["ref"] == json!(reference));
                assert!(found, "{}: {reference} is not in examples/registries/{}", sop.name, category.file_name());
            }
        }
    }
}
