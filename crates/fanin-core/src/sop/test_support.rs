//! Builders for SOPs in unit tests, here and in the runtime crate, and a
//! SOP directory held in memory for the loader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

/// A SOP with the given triggers (no conditions) and the documented defaults,
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

/// A directory tree of text files in memory. Every directory asked for
/// exists; its subdirectories are those with a file under them.
#[derive(Default)]
pub struct MemFiles {
    files: BTreeMap<PathBuf, String>,
}

impl MemFiles {
    pub fn insert(&mut self, file: impl Into<PathBuf>, text: &str) {
        self.files.insert(file.into(), text.to_string());
    }
}

impl SopFiles for MemFiles {
    fn subdirs(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        let mut dirs: Vec<PathBuf> = self
            .files
            .keys()
            .filter_map(|f| f.strip_prefix(dir).ok())
            .filter_map(|rest| rest.components().next().filter(|_| rest.components().count() > 1))
            .map(|first| dir.join(first))
            .collect();
        dirs.dedup();
        Ok(dirs)
    }

    fn read(&self, file: &Path) -> Option<Result<String, String>> {
        self.files.get(file).cloned().map(Ok)
    }
}
