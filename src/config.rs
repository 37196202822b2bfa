//! `config.toml` from disk. What the file may say, its defaults and its
//! validation are fanin-core's (`fanin_core::config`, re-exported here so the
//! runtime names one `config`); this module adds the effects: reading the
//! file, resolving the directory its relative paths start from, and reading
//! the environment variables secrets are named by.

use std::path::Path;

pub use fanin_core::config::*;

/// Reads, parses and validates `path`. Every problem found is returned, each
/// naming the file.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let file = path.display().to_string();
    let whole_file = |reason: String| vec![ConfigError { file: file.clone(), key: String::new(), reason }];
    let text = std::fs::read_to_string(path).map_err(|e| whole_file(format!("cannot read the config file: {e}")))?;
    let base_dir = std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| whole_file("cannot resolve the directory holding the config file".into()))?;
    Config::parse(&text, path, base_dir)
}

/// A secret's value: given inline, or read from the environment variable
/// the block names. `key` is the dotted key it was configured by, for the
/// message; the message never holds the value.
pub fn secret(source: SecretSource<'_>, key: &str) -> Result<String, String> {
    match source {
        SecretSource::Inline(value) => Ok(value.to_string()),
        SecretSource::Env(var) => match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(value),
            Ok(_) => Err(format!("{key}: the environment variable {var} is empty")),
            Err(std::env::VarError::NotPresent) => Err(format!("{key}: the environment variable {var} is not set")),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("{key}: the environment variable {var} is not UTF-8"))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let errors = load(Path::new("/nonexistent/fanin/config.toml")).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].file, "/nonexistent/fanin/config.toml");
        assert!(errors[0].reason.contains("cannot read"));
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.toml");
        let c = load(&path).unwrap_or_else(|e| panic!("{e:#?}"));
        assert!(c.gateway.require_pairing);
        assert_eq!(c.store.url, "sqlite://data/fanin.db");
        assert!(c.channels_config.mqtt.is_none());
    }

    #[test]
    fn relative_paths_resolve_against_the_directory_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[sop]\nsops_dir = \"my-sops\"\n").unwrap();
        let c = load(&path).unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(c.base_dir, base);
        assert_eq!(c.sops_dir(), base.join("my-sops"));
        assert_eq!(c.file, path);
    }
}
