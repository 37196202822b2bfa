//! The gateway's accept loop and its connections (HTTP/1.1 on hyper).
//!
//! Connections are a resource an outsider can hold without sending a
//! request, so each one is watched and the whole set is bounded:
//!
//! - A request head (request line and headers) must be complete within
//!   `header_read_timeout` of the connection being accepted, or of the first
//!   byte of a later request on it.
//! - A kept-alive connection may wait `idle_timeout` for its next request.
//! - At most `max_connections` are open. A connection accepted beyond that
//!   closes the one idle the longest (no request in flight) to make room, so
//!   an operator's `/health` or `/admin` request still gets in while
//!   someone holds every other connection open; when every connection is
//!   busy, the new one is closed instead.
//! - An accept error that is not about one connection (out of descriptors,
//!   of memory) frees an idle connection and backs off instead of spinning.
//!
//! A connection with a request in flight is never closed by these rules:
//! the request's own time is bounded by `request_timeout_secs`. On
//! shutdown the listener closes, idle connections close, and requests in
//! flight finish.
//!
//! hyper's own header-read timeout starts whenever a connection waits for
//! a head, which would cut kept-alive connections at the header timeout;
//! the two limits are kept apart here with one watchdog per connection that
//! reads three figures the connection's reads and requests keep current.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;

/// Descriptors kept back from connections for the store, the sources, the
/// outbound clients and the process itself.
pub const DESCRIPTOR_RESERVE: u64 = 128;
/// The derived default never exceeds this.
pub const MAX_DEFAULT_CONNECTIONS: usize = 4096;
const MIN_DEFAULT_CONNECTIONS: usize = 16;
/// First and longest pause after an accept error that is not one
/// connection's.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// At most one warning per kind in this long; the next one counts the rest.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The limits every connection is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// From `[gateway]`; `max_connections` unset is derived from
    /// `descriptor_limit` (the process's soft `RLIMIT_NOFILE`).
    pub fn new(config: &GatewayConfig, descriptor_limit: Option<u64>) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_connections: config.max_connections.unwrap_or_else(|| default_max_connections(descriptor_limit)),
        }
    }

    /// How often a busy connection's watchdog looks again.
    fn recheck(&self) -> Duration {
        self.header_read_timeout.min(self.idle_timeout)
    }
}

/// Half of what the reserve leaves: each request may hold one descriptor
/// more while it is served (a store reader, the call to the agent).
pub fn default_max_connections(descriptor_limit: Option<u64>) -> usize {
    match descriptor_limit {
        None => 1024,
        Some(limit) => {
            let half = limit.saturating_sub(DESCRIPTOR_RESERVE) / 2;
            usize::try_from(half).unwrap_or(usize::MAX).clamp(MIN_DEFAULT_CONNECTIONS, MAX_DEFAULT_CONNECTIONS)
        }
    }
}

/// The soft and hard `RLIMIT_NOFILE`.
#[cfg(unix)]
fn nofile() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

#[cfg(unix)]
#[allow(clippy::useless_conversion)] // rlim_t is not u64 on every platform
fn soft(limit: libc::rlimit) -> u64 {
    if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        u64::from(limit.rlim_cur)
    }
}

/// The descriptors this process may open (the soft `RLIMIT_NOFILE`).
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    return nofile().map(soft);
    #[cfg(not(unix))]
    None
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one (a daemon should not
/// run out of descriptors at a default meant for shells); returns the soft
/// limit now in force.
pub fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = nofile()?;
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            // SAFETY: setrlimit only reads the struct it is given.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        Some(soft(limit))
    }
    #[cfg(not(unix))]
    None
}

/// What a connection waits for; times are [`Conn::now`] milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// A request is in flight: no limit of ours applies.
    Busy,
    /// A request head has begun (or the connection is new): due by then.
    Head(u64),
    /// Between requests: the next one is due by then.
    Idle(u64),
}

/// Pure: which limit applies to a connection in this state.
fn wait(in_flight: u32, head_started: u64, idle_since: u64, limits: &ConnectionLimits) -> Wait {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if in_flight > 0 {
        Wait::Busy
    } else if head_started != 0 {
        Wait::Head(head_started.saturating_add(ms(limits.header_read_timeout)))
    } else {
        Wait::Idle(idle_since.saturating_add(ms(limits.idle_timeout)))
    }
}

/// One open connection, as its reads, its requests and the accept loop see
/// it. Times are milliseconds since `epoch`, plus one (0 = unset).
struct Conn {
    id: u64,
    epoch: Instant,
    in_flight: AtomicU32,
    /// When the current request head began: at accept, then at the first
    /// byte read while no request is in flight. 0 once a request is taken.
    head_started: AtomicU64,
    /// When the connection last had no request in flight.
    idle_since: AtomicU64,
    /// Set by the accept loop to make room.
    evict: Notify,
    /// A head began between requests: the watchdog's deadline moved closer.
    head_begun: Notify,
}

impl Conn {
    fn new(id: u64, epoch: Instant) -> Conn {
        let conn = Conn {
            id,
            epoch,
            in_flight: AtomicU32::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            evict: Notify::new(),
            head_begun: Notify::new(),
        };
        let now = conn.now();
        conn.head_started.store(now, SeqCst);
        conn.idle_since.store(now, SeqCst);
        conn
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }

    fn wait(&self, limits: &ConnectionLimits) -> Wait {
        wait(self.in_flight.load(SeqCst), self.head_started.load(SeqCst), self.idle_since.load(SeqCst), limits)
    }

    /// Bytes came in: between requests, that starts the next head's clock.
    fn bytes_arrived(&self) {
        if self.in_flight.load(SeqCst) == 0
            && self.head_started.load(SeqCst) == 0
            && self.head_started.compare_exchange(0, self.now(), SeqCst, SeqCst).is_ok()
        {
            self.head_begun.notify_one();
        }
    }

    /// A request head was read; the request is in flight until the guard
    /// (carried by its response body) is dropped.
    fn request_started(self: &Arc<Conn>) -> InFlight {
        self.in_flight.fetch_add(1, SeqCst);
        self.head_started.store(0, SeqCst);
        InFlight(self.clone())
    }
}

struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.0;
        conn.idle_since.store(conn.now(), SeqCst);
        conn.in_flight.fetch_sub(1, SeqCst);
    }
}

/// A response body that ends its request when hyper is done with it (sent,
/// or dropped with the connection).
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, reporting to its [`Conn`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The open connections.
struct Registry {
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

enum Admission {
    Room,
    /// The connection idle the longest was closed to make room.
    Evicted,
    /// Every connection has a request in flight.
    Full,
}

impl Registry {
    fn open(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn::new(self.next_id.fetch_add(1, SeqCst), self.epoch));
        let mut open = self.open.lock().expect("connections lock");
        open.insert(conn.id, conn.clone());
        metrics::gauge!("fanin_http_connections_open").set(open.len() as f64);
        conn
    }

    fn close(&self, id: u64) {
        let mut open = self.open.lock().expect("connections lock");
        open.remove(&id);
        metrics::gauge!("fanin_http_connections_open").set(open.len() as f64);
    }

    /// Makes room for one more connection under `max`.
    fn admit(&self, max: usize) -> Admission {
        let open = self.open.lock().expect("connections lock");
        if open.len() < max {
            return Admission::Room;
        }
        drop(open);
        if self.evict_idlest() {
            Admission::Evicted
        } else {
            Admission::Full
        }
    }

    /// Closes the connection idle the longest; false when none is idle.
    fn evict_idlest(&self) -> bool {
        let mut open = self.open.lock().expect("connections lock");
        let idle = open.values().filter(|c| c.in_flight.load(SeqCst) == 0);
        // Times are in milliseconds; among connections idle since the same
        // one, the earlier accepted goes first.
        let Some(id) = idle.min_by_key(|c| (c.idle_since.load(SeqCst), c.id)).map(|c| c.id) else {
            return false;
        };
        let conn = open.remove(&id).expect("present");
        metrics::gauge!("fanin_http_connections_open").set(open.len() as f64);
        metrics::counter!("fanin_http_connections_closed_total", "reason" => "evicted").increment(1);
        conn.evict.notify_one();
        true
    }
}

/// One warning per [`WARN_EVERY`]; how many were held back since.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    fn ready(&mut self) -> Option<u64> {
        if self.last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.held_back))
    }
}

/// Errors of one connection that `accept` reports: the next one may be
/// fine, so accept again at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Accepts connections on `listener` until `shutdown` resolves, serving
/// each request with `handler` (given the peer, IPv4-mapped addresses in
/// their IPv4 form); then finishes the requests in flight.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: ConnectionLimits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let registry = Arc::new(Registry { epoch: Instant::now(), open: Mutex::default(), next_id: AtomicU64::new(0) });
    let stopping = CancellationToken::new();
    // Every connection task holds a sender: when all are gone, all ended.
    let (running, mut all_ended) = mpsc::channel::<Infallible>(1);
    let mut http = http1::Builder::new();
    http.keep_alive(true).header_read_timeout(None);
    let mut shutdown = pin!(shutdown);
    let (mut full, mut failing) = (Throttle::default(), Throttle::default());
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                let freed = registry.evict_idlest();
                if let Some(held_back) = failing.ready() {
                    tracing::warn!(error = %e, retry_in = ?backoff, closed_an_idle_connection = freed,
                        not_logged_since = held_back, "gateway cannot accept connections");
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF.0;
        match registry.admit(limits.max_connections) {
            Admission::Room => {}
            Admission::Evicted => {
                if let Some(held_back) = full.ready() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        not_logged_since = held_back,
                        "gateway connection limit reached: closed the connection idle the longest"
                    );
                }
            }
            Admission::Full => {
                metrics::counter!("fanin_http_connections_closed_total", "reason" => "refused").increment(1);
                if let Some(held_back) = full.ready() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        not_logged_since = held_back,
                        "gateway connection limit reached with every connection busy: refused a new one"
                    );
                }
                continue;
            }
        }
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let _ = stream.set_nodelay(true);
        let conn = registry.open();
        let connection = serve_connection(stream, peer, conn, http.clone(), handler.clone(), limits, stopping.clone());
        let (registry, running) = (registry.clone(), running.clone());
        tokio::spawn(async move {
            let id = connection.await;
            registry.close(id);
            drop(running);
        });
    }
    drop(listener);
    stopping.cancel();
    drop(running);
    let _ = all_ended.recv().await;
    Ok(())
}

/// Serves one connection until it ends or a limit closes it; returns its id.
async fn serve_connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    http: http1::Builder,
    handler: H,
    limits: ConnectionLimits,
    stopping: CancellationToken,
) -> u64
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let requests = conn.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_flight = requests.request_started();
        let response = handler(peer, request);
        async move { Ok::<_, Infallible>(response.await.map(|body| Tracked { body, _in_flight: in_flight })) }
    });
    let io = TokioIo::new(Watched { stream, conn: conn.clone() });
    let mut connection = pin!(http.serve_connection(io, service));
    let mut sleep = pin!(tokio::time::sleep(Duration::ZERO));
    let mut draining = false;
    loop {
        let (due, reason) = match conn.wait(&limits) {
            Wait::Busy => (None, ""),
            Wait::Head(due) => (Some(due), "header_timeout"),
            Wait::Idle(due) => (Some(due), "idle_timeout"),
        };
        let wake = match due {
            None => Instant::now() + limits.recheck(),
            Some(due) if due <= conn.now() => {
                metrics::counter!("fanin_http_connections_closed_total", "reason" => reason).increment(1);
                tracing::debug!(%peer, reason, "closing a connection");
                break;
            }
            Some(due) => conn.at(due),
        };
        sleep.as_mut().reset(wake);
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = stopping.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = conn.evict.notified() => {
                if conn.in_flight.load(SeqCst) == 0 {
                    break;
                }
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = conn.head_begun.notified() => {}
            () = &mut sleep => {}
        }
    }
    conn.id
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(header_ms: u64, idle_ms: u64, max: usize) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            max_connections: max,
        }
    }

    #[test]
    fn the_limit_that_applies_follows_the_connection_state() {
        let l = limits(10_000, 60_000, 1);
        assert_eq!(wait(1, 0, 5, &l), Wait::Busy);
        assert_eq!(wait(1, 7, 5, &l), Wait::Busy, "a request in flight is never cut");
        assert_eq!(wait(0, 7, 5, &l), Wait::Head(10_007), "a head has begun");
        assert_eq!(wait(0, 0, 5, &l), Wait::Idle(60_005), "between requests");
    }

    #[test]
    fn the_default_connection_limit_leaves_room_for_the_rest_of_the_daemon() {
        assert_eq!(default_max_connections(Some(256)), 64);
        assert_eq!(default_max_connections(Some(1024)), 448);
        assert_eq!(default_max_connections(Some(100)), MIN_DEFAULT_CONNECTIONS);
        assert_eq!(default_max_connections(Some(1 << 20)), MAX_DEFAULT_CONNECTIONS);
        assert_eq!(default_max_connections(Some(u64::MAX)), MAX_DEFAULT_CONNECTIONS);
        assert_eq!(default_max_connections(None), 1024);
        let mut config = GatewayConfig::default();
        assert_eq!(ConnectionLimits::new(&config, Some(256)).max_connections, 64);
        config.max_connections = Some(3);
        let l = ConnectionLimits::new(&config, Some(256));
        assert_eq!(l, limits(10_000, 60_000, 3));
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        let raised = raise_descriptor_limit();
        assert_eq!(raised, descriptor_limit());
        #[cfg(unix)]
        assert_eq!(nofile().map(|l| l.rlim_cur), nofile().map(|l| l.rlim_max));
    }

    async fn start(limits: ConnectionLimits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let handler = |peer: SocketAddr, _request: Request<Incoming>| async move {
            Response::new(Body::from(peer.ip().to_string()))
        };
        let cancelled = stop.clone();
        let task = tokio::spawn(async move {
            serve(listener, limits, handler, async move { cancelled.cancelled().await }).await.unwrap()
        });
        (addr, stop, task)
    }

    /// Sends one request and reads its whole reply (the server closes).
    async fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        reply
    }

    /// Reads until the server closes (an end of stream, or a reset when
    /// it closed with our bytes unread); what it sent before.
    async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await.expect("closed");
        if let Err(e) = read {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        }
        all
    }

    #[tokio::test]
    async fn at_the_limit_a_new_connection_closes_the_one_idle_the_longest() {
        let (addr, stop, task) = start(limits(60_000, 60_000, 2)).await;
        let mut oldest = TcpStream::connect(addr).await.unwrap();
        let mut newer = TcpStream::connect(addr).await.unwrap();
        // A request on `newer` makes it the more recently active one.
        newer.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut first = [0u8; 12];
        newer.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        let reply = get(addr).await;
        assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("127.0.0.1"), "{reply}");
        assert!(until_closed(&mut oldest).await.is_empty(), "the oldest idle connection was closed");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn silent_slow_and_idle_connections_are_closed() {
        // The idle timeout is far from the header timeout, so which one
        // closed a connection shows however slow the machine is.
        let (addr, stop, task) = start(limits(300, 60_000, 100)).await;
        // Connected, nothing sent: closed at the header timeout.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // A head sent byte by byte, each well within the timeout: closed all the same.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let trickle = tokio::spawn(async move {
            for b in b"GET / HTTP/1.1\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaa" {
                if slow.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            until_closed(&mut slow).await
        });
        assert!(until_closed(&mut silent).await.is_empty());
        assert!(trickle.await.unwrap().is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the header timeout, not the idle one: {:?}",
            started.elapsed()
        );
        stop.cancel();
        task.await.unwrap();

        // After a request, a kept-alive connection waits the idle timeout.
        let (addr, stop, task) = start(limits(300, 600, 100)).await;
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let answered = Instant::now();
        let reply = until_closed(&mut kept).await;
        assert!(reply.starts_with(b"HTTP/1.1 200"));
        assert!(answered.elapsed() >= Duration::from_millis(550), "idle timeout, not header: {:?}", answered.elapsed());
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_head_begun_between_requests_has_the_header_timeout() {
        let (addr, stop, task) = start(limits(300, 60_000, 100)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut reply = Vec::new();
        while !reply.ends_with(b"127.0.0.1") {
            let mut chunk = [0u8; 256];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the reply");
            reply.extend_from_slice(&chunk[..n]);
        }
        // Idle past the watchdog's look after the request, then a head
        // that never ends.
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let begun = Instant::now();
        assert!(until_closed(&mut s).await.is_empty());
        assert!(
            begun.elapsed() < Duration::from_secs(30),
            "the header timeout, not the idle one: {:?}",
            begun.elapsed()
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let gates = Arc::new(Mutex::new(Some((entered_tx, release_rx))));
        let handler = move |_peer: SocketAddr, _request: Request<Incoming>| {
            let gates = gates.lock().unwrap().take();
            async move {
                if let Some((entered, release)) = gates {
                    let _ = entered.send(());
                    let _ = release.await;
                }
                Response::new(Body::from("done"))
            }
        };
        let stop = CancellationToken::new();
        let cancelled = stop.clone();
        let task = tokio::spawn(async move {
            serve(listener, limits(60_000, 60_000, 10), handler, async move { cancelled.cancelled().await })
                .await
                .unwrap()
        });
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        entered_rx.await.unwrap();
        stop.cancel();
        assert!(until_closed(&mut idle).await.is_empty(), "idle connections close at once");
        release_tx.send(()).unwrap();
        let reply = String::from_utf8(until_closed(&mut busy).await).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("done"), "{reply}");
        task.await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }
}
