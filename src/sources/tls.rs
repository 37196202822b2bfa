//! The TLS client configuration of the sources that dial out (MQTT over
//! `mqtts://`, IMAP): which roots are trusted and which client certificate
//! is shown, built once at start so an unreadable or invalid file stops the
//! daemon with the file, the key and the reason.
//!
//! Trust: the operating system's roots (`rustls-native-certs`, so a CA the
//! operator installed system-wide is trusted), or the Mozilla roots compiled
//! in (`webpki-roots`) when the system offers none (a bare container); plus
//! every certificate in `ca_file`, which is *added* to those roots, never a
//! replacement. The crypto is rustls with its `ring` provider: it builds with
//! a C compiler alone (aws-lc-rs would want cmake here), and reqwest already
//! uses it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::ClientConfig;

use crate::config::{Config, ConfigError};
use crate::trust::{read, read_certificates};

/// Where the roots came from, for the start-up log.
#[derive(Debug, PartialEq, Eq)]
pub struct Trust {
    pub system_roots: usize,
    pub bundled_roots: usize,
    pub ca_file_roots: usize,
}

/// The certificate files a source's config names, each `""` when not set
/// (a client key goes with a client certificate).
pub struct TlsFiles<'a> {
    pub ca_file: &'a str,
    pub client_cert_file: &'a str,
    pub client_key_file: &'a str,
}

/// Builds the client configuration. Every error names the config file, the
/// key (`key` turns `ca_file` into its dotted path in the config) and the
/// certificate file.
pub fn client_config(
    config: &Config,
    key: &dyn Fn(&str) -> String,
    files: TlsFiles<'_>,
) -> Result<(ClientConfig, Trust), String> {
    let problem = |name: &str, path: &Path, reason: String| {
        ConfigError {
            file: config.file.display().to_string(),
            key: key(name),
            reason: format!("{}: {reason}", path.display()),
        }
        .to_string()
    };

    let (mut roots, system_roots, bundled_roots) = crate::trust::default_roots();
    let mut ca_file_roots = 0;
    if !files.ca_file.is_empty() {
        let path = config.resolve(files.ca_file);
        let certs = read_certificates(&path).map_err(|reason| problem("ca_file", &path, reason))?;
        for cert in certs {
            roots.add(cert).map_err(|e| problem("ca_file", &path, format!("not a usable CA certificate ({e})")))?;
            ca_file_roots += 1;
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let client_config = if files.client_cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let cert_path = config.resolve(files.client_cert_file);
        let key_path = config.resolve(files.client_key_file);
        let chain = read_certificates(&cert_path).map_err(|reason| problem("client_cert_file", &cert_path, reason))?;
        let key = read_private_key(&key_path).map_err(|reason| problem("client_key_file", &key_path, reason))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| problem("client_key_file", &key_path, format!("does not go with client_cert_file ({e})")))?
    };
    Ok((client_config, Trust { system_roots, bundled_roots, ca_file_roots }))
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "holds no PEM private key (expected -----BEGIN PRIVATE KEY----- or similar)".to_string()
        }
        other => format!("is not a valid PEM private key ({other})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttConfig;

    fn config_in(dir: &Path) -> Config {
        let file = dir.join("config.toml");
        std::fs::write(
            &file,
            "[channels_config.mqtt]\nbroker_url = \"mqtts://b\"\nclient_id = \"c\"\ntopics = [\"a\"]\n",
        )
        .unwrap();
        crate::config::load(&file).unwrap()
    }

    fn mqtt(config: &Config) -> MqttConfig {
        config.channels_config.mqtt.clone().unwrap()
    }

    fn client_config(config: &Config, m: &MqttConfig) -> Result<(ClientConfig, Trust), String> {
        let files = TlsFiles {
            ca_file: &m.ca_file,
            client_cert_file: &m.client_cert_file,
            client_key_file: &m.client_key_file,
        };
        super::client_config(config, &|name| m.key(name), files)
    }

    fn ca_pem() -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).unwrap().pem(), key)
    }

    #[test]
    fn without_files_the_system_or_bundled_roots_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let (_, trust) = client_config(&config, &mqtt(&config)).unwrap();
        assert!(trust.system_roots + trust.bundled_roots > 0, "{trust:?}");
        assert_eq!(trust.ca_file_roots, 0);
    }

    #[test]
    fn a_ca_file_adds_its_certificates_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        std::fs::write(dir.path().join("ca.pem"), ca_pem().0 + &ca_pem().0).unwrap();
        let mut m = mqtt(&config);
        m.ca_file = "ca.pem".into();
        let (_, trust) = client_config(&config, &m).unwrap();
        assert_eq!(trust.ca_file_roots, 2);
    }

    #[test]
    fn a_client_certificate_and_its_key_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["fanin".to_string()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.path().join("client.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), key.serialize_pem()).unwrap();
        let mut m = mqtt(&config);
        m.client_cert_file = "client.pem".into();
        m.client_key_file = "client.key".into();
        client_config(&config, &m).unwrap();
    }

    #[test]
    fn bad_files_are_named_with_their_key_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        std::fs::write(dir.path().join("garbage.pem"), "-----BEGIN CERTIFICATE-----\n!!!\n").unwrap();
        let (ca, ca_key) = ca_pem();
        std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
        std::fs::write(dir.path().join("other.key"), rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.key"), ca_key.serialize_pem()).unwrap();

        type Case = (&'static str, &'static str, &'static str, &'static str, &'static str);
        // (ca_file, client_cert_file, client_key_file, key named, reason)
        let cases: &[Case] = &[
            ("missing.pem", "", "", "channels_config.mqtt.ca_file", "cannot read it"),
            ("empty.pem", "", "", "channels_config.mqtt.ca_file", "holds no PEM certificate"),
            ("garbage.pem", "", "", "channels_config.mqtt.ca_file", "not a valid PEM"),
            ("", "missing.pem", "ca.key", "channels_config.mqtt.client_cert_file", "cannot read it"),
            ("", "ca.pem", "missing.key", "channels_config.mqtt.client_key_file", "cannot read it"),
            ("", "ca.pem", "ca.pem", "channels_config.mqtt.client_key_file", "holds no PEM private key"),
            ("", "ca.pem", "other.key", "channels_config.mqtt.client_key_file", "does not go with"),
        ];
        for (ca_file, cert, key, named, reason) in cases {
            let mut m = mqtt(&config);
            m.ca_file = ca_file.to_string();
            m.client_cert_file = cert.to_string();
            m.client_key_file = key.to_string();
            let err = client_config(&config, &m).map(|_| ()).unwrap_err();
            assert!(err.contains(named), "{named}: {err}");
            assert!(err.contains(reason), "{reason}: {err}");
            assert!(err.contains("config.toml"), "the config file is named: {err}");
            let file = [ca_file, cert, key].into_iter().find(|f| err.contains(&format!("/{f}")));
            assert!(file.is_some(), "the certificate file is named: {err}");
        }
    }
}
