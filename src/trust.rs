//! The roots every TLS client of fanin trusts (the sources that dial out,
//! the PostgreSQL store): the operating system's (`rustls-native-certs`, so
//! a CA the operator installed system-wide is trusted), or the Mozilla roots
//! compiled in (`webpki-roots`) when the system offers none (a bare
//! container); and the reading of PEM certificate files an operator adds.
//!
//! Why below the store: the store dials PostgreSQL and the sources dial
//! brokers and mail servers, and both must trust the same way.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The system's roots, else the bundled ones; with how many of each.
pub fn default_roots() -> (RootCertStore, usize, usize) {
    let mut roots = RootCertStore::empty();
    let system = add_system_roots(&mut roots);
    let bundled = if system == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        webpki_roots::TLS_SERVER_ROOTS.len()
    } else {
        0
    };
    (roots, system, bundled)
}

/// Adds what the system trusts; certificates it cannot parse are skipped
/// (a system store often holds a few that rustls rejects).
fn add_system_roots(roots: &mut RootCertStore) -> usize {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "a system root store could not be read");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    added
}

/// Every certificate in a PEM file; none at all is an error.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not a valid PEM file ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// A file's bytes, or why not, worded to follow its path.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))
}
