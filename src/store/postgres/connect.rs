//! Reaching PostgreSQL: the `[store].url` read as libpq reads it, and TLS
//! over rustls (ring) as its `sslmode` asks.
//!
//! `sslmode` keeps libpq's meaning: `disable` (plain), `prefer` (the
//! default: TLS when the server offers it, certificate not checked),
//! `require` (TLS, certificate not checked), `verify-ca` (TLS, the chain
//! must lead to a trusted root), `verify-full` (and name the host).
//! `sslrootcert=<file>` (relative to config.toml's directory) replaces the
//! trusted roots, as in libpq; without it, the system's (else the bundled
//! ones) are trusted. tokio-postgres knows only the first three modes and
//! neither key, so both are taken out of the URL before it reads the rest
//! (`options`, `application_name`, `connect_timeout`, … as libpq).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{AsyncMessage, Client, Notification};

use crate::store::StoreError;

/// How long a statement waits for another session's lock, as SQLite's
/// writer waits for another process's.
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What libpq's `sslmode` asks of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// No TLS at all.
    Disable,
    /// TLS when offered; the certificate is taken as it is.
    Prefer,
    /// TLS; the certificate is taken as it is.
    Require,
    /// TLS; the chain must lead to a trusted root, whatever the name.
    Ca,
    /// TLS; a trusted chain naming the host.
    Full,
}

/// How to reach one store: the parsed URL and the TLS that goes with it.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    verify: Verify,
    tls: Option<Arc<ClientConfig>>,
    /// The URL without password and query: how messages name the store.
    pub name: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("name", &self.name).field("verify", &self.verify).finish()
    }
}

impl Connector {
    /// Reads a `postgres://` (or `postgresql://`) URL; `base_dir` resolves
    /// a relative `sslrootcert`.
    pub fn new(url: &str, base_dir: &Path) -> Result<Connector, StoreError> {
        let name = display_name(url);
        let invalid = |reason: String| StoreError::Invalid(format!("store {name}: {reason}"));
        let (rest, sslmode, rootcert) = take_tls_keys(url);
        let verify = match sslmode.as_deref() {
            None | Some("prefer") => Verify::Prefer,
            Some("disable") => Verify::Disable,
            Some("require") => Verify::Require,
            Some("verify-ca") => Verify::Ca,
            Some("verify-full") => Verify::Full,
            Some("allow") => return Err(invalid("sslmode=allow is not supported; use prefer or disable".into())),
            Some(other) => {
                return Err(invalid(format!(
                    "unknown sslmode {other:?} (expected disable, prefer, require, verify-ca or verify-full)"
                )))
            }
        };
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| invalid(format!("{e}")))?;
        config.ssl_mode(match verify {
            Verify::Disable => SslMode::Disable,
            Verify::Prefer => SslMode::Prefer,
            Verify::Require | Verify::Ca | Verify::Full => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("fanin");
        }
        let tls = match verify {
            Verify::Disable => None,
            _ => Some(Arc::new(tls_config(verify, rootcert.as_deref(), base_dir).map_err(invalid)?)),
        };
        Ok(Connector { config, verify, tls, name })
    }

    #[cfg(test)]
    pub fn verify(&self) -> Verify {
        self.verify
    }

    /// A new connection; its driver runs on its own task until the client
    /// is dropped or the connection breaks. A statement waits at most
    /// [`LOCK_TIMEOUT`] for a lock another session holds (unless the URL's
    /// `options` set `lock_timeout`), then fails: the request is answered
    /// 503 rather than held behind a stuck writer.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        self.open(None).await
    }

    /// [`connect`](Connector::connect) for a connection that `LISTEN`s: the
    /// server's notifications on it arrive on the receiver, which ends (an
    /// error last, when there is one) when the connection does.
    pub async fn connect_listening(&self) -> Result<(Client, Notifications), tokio_postgres::Error> {
        let (sender, notifications) = tokio::sync::mpsc::channel(NOTIFICATIONS_BUFFERED);
        Ok((self.open(Some(sender)).await?, notifications))
    }

    async fn open(&self, notify: Option<NotificationSender>) -> Result<Client, tokio_postgres::Error> {
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(drive(connection, self.name.clone(), notify));
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(MakeRustls(Arc::clone(tls))).await?;
                tokio::spawn(drive(connection, self.name.clone(), notify));
                client
            }
        };
        if !self.config.get_options().is_some_and(|options| options.contains("lock_timeout")) {
            client.batch_execute(&format!("SET lock_timeout = {}", LOCK_TIMEOUT.as_millis())).await?;
        }
        Ok(client)
    }
}

/// What a listening connection hands on: each notification, then the
/// error that ended the connection, if one did.
pub type Notifications = tokio::sync::mpsc::Receiver<Result<Notification, tokio_postgres::Error>>;
type NotificationSender = tokio::sync::mpsc::Sender<Result<Notification, tokio_postgres::Error>>;

/// Notifications held for a slow reader; beyond it the connection is read
/// no further until the reader catches up (the server keeps the rest).
const NOTIFICATIONS_BUFFERED: usize = 64;

async fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>, name: String, notify: Option<NotificationSender>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Some(notify) = notify else {
        if let Err(e) = connection.await {
            tracing::debug!(store = %name, error = %e, "store connection ended");
        }
        return;
    };
    while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
        let handed = match message {
            Ok(AsyncMessage::Notification(notification)) => notify.send(Ok(notification)).await,
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(store = %name, error = %e, "store connection ended");
                let _ = notify.send(Err(e)).await;
                return;
            }
        };
        if handed.is_err() {
            // Nobody listens any more; the client going too ends this.
            return;
        }
    }
}

/// The URL with `sslmode` and `sslrootcert` taken out of its query, and
/// their values (percent-decoded). The other parameters are kept as
/// written, so tokio-postgres decodes them as it would have.
fn take_tls_keys(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None, None);
    };
    let (mut sslmode, mut rootcert, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
        match key {
            "sslmode" => sslmode = Some(decoded()),
            "sslrootcert" => rootcert = Some(decoded()),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (rest, sslmode, rootcert)
}

/// `postgres://user@host:port/db`: the URL without its password and query.
pub fn display_name(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "postgres://<unparsable URL>".into(),
    }
}

fn tls_config(verify: Verify, rootcert: Option<&str>, base_dir: &Path) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match verify {
        Verify::Disable | Verify::Prefer | Verify::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Verify::Ca | Verify::Full => {
            let roots = roots(rootcert, base_dir)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("TLS roots: {e}"))?;
            match verify {
                Verify::Full => builder.with_webpki_verifier(webpki).with_no_client_auth(),
                _ => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                    .with_no_client_auth(),
            }
        }
    };
    Ok(config)
}

/// `sslrootcert`'s certificates alone when given (`system`: the defaults),
/// else the system's or the bundled roots.
fn roots(rootcert: Option<&str>, base_dir: &Path) -> Result<RootCertStore, String> {
    let Some(file) = rootcert.filter(|f| *f != "system") else {
        return Ok(crate::trust::default_roots().0);
    };
    let path = base_dir.join(file);
    let mut roots = RootCertStore::empty();
    for cert in crate::trust::read_certificates(&path).map_err(|e| format!("sslrootcert {}: {e}", path.display()))? {
        roots.add(cert).map_err(|e| format!("sslrootcert {}: not a usable CA certificate ({e})", path.display()))?;
    }
    Ok(roots)
}

/// `prefer` and `require`: encryption without authentication, as libpq
/// does without a root certificate. The handshake's signatures are still
/// checked, so the session is with whoever holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the whole WebPKI check except that the certificate names
/// the host.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS hook over tokio-rustls.
#[derive(Clone)]
struct MakeRustls(Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect { config: Arc::clone(&self.0), name: ServerName::try_from(domain.to_owned())? })
    }
}

struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            Ok(RustlsStream(connector.connect(self.name, stream).await?))
        })
    }
}

/// No channel binding: SCRAM then authenticates without `-PLUS`, as libpq
/// does when the client offers none.
struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_keys_are_taken_out_and_the_rest_kept_as_written() {
        let (rest, mode, root) =
            take_tls_keys("postgres://u@h/db?sslmode=verify-full&options=-csearch_path%3Dt_1&sslrootcert=ca%20x.pem");
        assert_eq!(rest, "postgres://u@h/db?options=-csearch_path%3Dt_1");
        assert_eq!((mode.as_deref(), root.as_deref()), (Some("verify-full"), Some("ca x.pem")));
        assert_eq!(take_tls_keys("postgres://h/db").0, "postgres://h/db");
        assert_eq!(take_tls_keys("postgres://h/db?sslmode=disable").0, "postgres://h/db");
    }

    #[test]
    fn every_libpq_mode_but_allow_is_read_and_the_password_never_named() {
        let dir = Path::new("/");
        for (mode, verify) in [
            ("disable", Verify::Disable),
            ("prefer", Verify::Prefer),
            ("require", Verify::Require),
            ("verify-ca", Verify::Ca),
            ("verify-full", Verify::Full),
        ] {
            let connector = Connector::new(&format!("postgres://u:secret@h/db?sslmode={mode}"), dir).unwrap();
            assert_eq!(connector.verify(), verify);
            assert_eq!(connector.name, "postgres://u@h/db");
        }
        assert_eq!(Connector::new("postgresql://h/db", dir).unwrap().verify(), Verify::Prefer);
        for bad in ["postgres://h/db?sslmode=allow", "postgres://h/db?sslmode=yes", "postgres://h/db?nonsense=1"] {
            let e = Connector::new(bad, dir).unwrap_err().to_string();
            assert!(e.contains("postgres://h/db"), "{e}");
        }
        let e = Connector::new("postgres://h/db?sslmode=verify-ca&sslrootcert=missing.pem", dir).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
