//! Dialing a mailbox: TCP, then TLS at once (`security = "tls"`), after
//! STARTTLS (`"starttls"`) or never (`"plain"`, which the config allows only
//! to a loopback host), then LOGIN. Every failure is worded for `/ready`
//! (which host, which step, what the server said); the password never
//! appears in one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::{Client, Session};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::Security;
use crate::sources::feed::SourceError;

/// How long one step (connect, handshake, a command) may take before the
/// connection is given up and dialed again: a server that stopped answering
/// must show as down, not hang the source.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The byte stream IMAP runs over.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Everything needed to open a session, checked at start.
pub struct Dial {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The TLS client and the name the certificate must carry (not for
    /// `plain`).
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    pub username: String,
    pub password: String,
}

impl Dial {
    pub fn tls_connector(config: rustls::ClientConfig) -> TlsConnector {
        TlsConnector::from(Arc::new(config))
    }

    /// A logged-in session.
    pub async fn open(&self) -> Result<Session<Transport>, SourceError> {
        let at = format!("{}:{}", self.host, self.port);
        let tcp = step(&format!("connecting to {at}"), TcpStream::connect((self.host.as_str(), self.port))).await?;
        let client = match self.security {
            Security::Plain => greeted(Client::new(Transport::Plain(tcp)), &at).await?,
            Security::Tls => greeted(Client::new(self.handshake(tcp, &at).await?), &at).await?,
            Security::Starttls => {
                let mut plain = greeted(Client::new(Transport::Plain(tcp)), &at).await?;
                step(&format!("STARTTLS with {at}"), plain.run_command_and_check_ok("STARTTLS", None)).await?;
                let Transport::Plain(tcp) = plain.into_inner() else { unreachable!("a plain client") };
                // After STARTTLS the server sends no second greeting.
                Client::new(self.handshake(tcp, &at).await?)
            }
        };
        let login = client.login(&self.username, &self.password);
        let refused = |e: async_imap::error::Error| format!("refused the login as {}: {e}", self.username);
        step(&format!("logging in to {at}"), async { login.await.map_err(|(e, _)| refused(e)) }).await
    }

    async fn handshake(&self, tcp: TcpStream, at: &str) -> Result<Transport, SourceError> {
        let (connector, name) = self.tls.as_ref().expect("TLS settings for a TLS mailbox");
        let tls = step(&format!("TLS handshake with {at}"), connector.connect(name.clone(), tcp)).await?;
        Ok(Transport::Tls(Box::new(tls)))
    }
}

/// Reads the server's greeting; a server that closes at once (or says BYE)
/// is an error.
async fn greeted(mut client: Client<Transport>, at: &str) -> Result<Client<Transport>, SourceError> {
    let greeting = step(&format!("reading the greeting of {at}"), client.read_response()).await?;
    match greeting {
        Some(_) => Ok(client),
        None => Err(SourceError::new(format!("{at} closed the connection before greeting"))),
    }
}

/// Runs one step within [`STEP_TIMEOUT`], its error worded with `what`.
pub async fn step<T, E: std::fmt::Display>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(SourceError::new(format!("{what}: {e}"))),
        Err(_) => Err(SourceError::new(format!("{what}: no answer within {}s", STEP_TIMEOUT.as_secs()))),
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
