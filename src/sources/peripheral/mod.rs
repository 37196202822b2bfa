//! Peripheral boards on serial lines (docs/operations.md#serial-peripherals): one reader task per
//! `[peripherals.<board>]` with `transport = "serial"` turns each line the
//! board prints into an event with topic `<board>/<signal>`. Boards with
//! `transport = "http"` post to the gateway instead and get no task here.
//!
//! The reader owns the port's whole life: it opens the device, reopens it
//! with capped, jittered backoff when it disappears (EOF, EIO, unplugged,
//! removed), and reports `peripheral:<board>` to the health registry — Up
//! while open, Down with the error while not.
//!
//! A serial line has no acknowledgement: a line whose dispatch fails (the
//! store is unavailable) is retried a few times with backoff while the
//! kernel buffers what the board keeps sending, then logged and lost.
//!
//! Ports are opened exclusively (TIOCEXCL and a lock), so two readers can
//! never split a board's lines between them, raw, at the configured baud.
//! On Linux a pseudo-terminal takes any baud and ignores it; where a pty
//! refuses one (macOS), it is opened without a baud and a warning instead of
//! never opening (see `open_port`).

mod framing;
mod line;
mod pacing;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use self::framing::{Frame, LineFramer};
pub use self::line::{parse_line, BadLine, Signal};
use self::pacing::{BadLineLog, BadLineNote};
use super::health::Status;
use super::{SourceContext, SourceTask};
use crate::backoff::Backoff;
use crate::event::{Event, Source};

const REOPEN_INITIAL: Duration = Duration::from_millis(250);
const REOPEN_CAP: Duration = Duration::from_secs(10);
/// Attempts per line before it is given up (a serial line cannot be
/// redelivered), and the waits between them.
const DISPATCH_ATTEMPTS: u32 = 5;
const DISPATCH_RETRY_INITIAL: Duration = Duration::from_millis(200);
const DISPATCH_RETRY_CAP: Duration = Duration::from_secs(3);
const BAD_LINE_SUMMARY_EVERY: Duration = Duration::from_secs(600);
/// How much of a bad line the log shows.
const LOG_PREVIEW_CHARS: usize = 120;

/// Starts one reader per `[peripherals.<board>]` with `transport = "serial"`.
pub fn start(ctx: &SourceContext) -> Result<Vec<SourceTask>, String> {
    let mut tasks = Vec::new();
    for (board, peripheral) in &ctx.config.peripherals {
        if peripheral.transport != "serial" {
            continue;
        }
        let resolved = ctx.config.resolve(&peripheral.path);
        let path = resolved
            .to_str()
            .ok_or_else(|| format!("peripherals.{board}.path: {} is not valid UTF-8", resolved.display()))?
            .to_string();
        let port = SerialBoard {
            board: board.clone(),
            path,
            baud: peripheral.baud,
            max_line_bytes: ctx.config.sop.untrusted_payload_max_bytes,
            max_payload_depth: ctx.config.gateway.max_payload_depth,
        };
        let duty = port.health_name();
        ctx.health.set_status(&duty, Status::Connecting, None);
        let port = std::sync::Arc::new(port);
        tasks.push(tokio::spawn(super::singleton(ctx.clone(), duty, move |held: SourceContext| {
            let port = port.clone();
            async move { run_board(held, &port).await }
        })));
    }
    Ok(tasks)
}

/// One configured serial board.
struct SerialBoard {
    board: String,
    path: String,
    baud: u32,
    max_line_bytes: usize,
    max_payload_depth: usize,
}

impl SerialBoard {
    fn health_name(&self) -> String {
        format!("peripheral:{}", self.board)
    }
}

/// Why a port session ended.
enum SessionEnd {
    Shutdown,
    /// The device went away; the text says how.
    Lost {
        error: String,
        delivered_data: bool,
    },
}

/// Opens, reads and reopens one board's port until shutdown.
async fn run_board(ctx: SourceContext, port: &SerialBoard) {
    let health_name = port.health_name();
    let mut backoff = Backoff::new(REOPEN_INITIAL, REOPEN_CAP);
    let mut bad_lines = BadLineLog::new(BAD_LINE_SUMMARY_EVERY);
    let mut opened_before = false;
    // Set while the port is down and that was logged, so retries stay quiet.
    let mut down_logged = false;
    while !ctx.shutdown.is_cancelled() {
        match open_port(port) {
            Ok(stream) => {
                if opened_before {
                    ctx.health.update(&health_name, |s| s.reconnects += 1);
                    tracing::info!(board = %port.board, path = %port.path, "peripheral port reopened");
                } else {
                    tracing::info!(board = %port.board, path = %port.path, baud = port.baud, "peripheral port open");
                }
                opened_before = true;
                ctx.health.set_status(&health_name, Status::Up, None);
                match read_port(&ctx, port, stream, &mut bad_lines).await {
                    SessionEnd::Shutdown => break,
                    SessionEnd::Lost { error, delivered_data } => {
                        tracing::warn!(board = %port.board, path = %port.path, %error,
                            "peripheral port lost; reopening with backoff");
                        down_logged = true;
                        ctx.health.set_status(&health_name, Status::Down, Some(error));
                        if delivered_data {
                            backoff.reset();
                        }
                    }
                }
            }
            Err(error) => {
                if down_logged {
                    tracing::debug!(board = %port.board, %error, "peripheral port still unavailable");
                } else {
                    tracing::warn!(board = %port.board, %error, "cannot open peripheral port; retrying with backoff");
                    down_logged = true;
                }
                ctx.health.set_status(&health_name, Status::Down, Some(error));
            }
        }
        let wait = backoff.next_delay(rand::random::<f64>());
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Opens the port exclusively, raw, at the configured baud. A
/// pseudo-terminal that refuses a baud (macOS does) is opened without
/// setting one, serialport's documented way (baud 0) for ptys; a real device
/// never gets that fallback, since baud 0 means "hang up" on a serial line.
fn open_port(port: &SerialBoard) -> Result<SerialStream, String> {
    let error = match tokio_serial::new(&port.path, port.baud).open_native_async() {
        Ok(stream) => return Ok(stream),
        Err(e) => format!("{}: {e}", port.path),
    };
    if !is_pseudo_terminal(Path::new(&port.path)) {
        return Err(error);
    }
    let stream = tokio_serial::new(&port.path, 0).open_native_async().map_err(|_| error.clone())?;
    tracing::warn!(board = %port.board, path = %port.path, %error, "the pseudo-terminal refused the baud rate; reading without one");
    Ok(stream)
}

/// A pty slave, after following symlinks: `/dev/pts/N` (Linux) or
/// `/dev/ttysNNN` (macOS).
fn is_pseudo_terminal(path: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let real = real.to_string_lossy();
    let numbered = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    real.strip_prefix("/dev/pts/").is_some_and(numbered) || real.strip_prefix("/dev/ttys").is_some_and(numbered)
}

/// Reads lines until the device goes away or the daemon stops.
async fn read_port(
    ctx: &SourceContext,
    port: &SerialBoard,
    mut stream: SerialStream,
    bad_lines: &mut BadLineLog,
) -> SessionEnd {
    let mut framer = LineFramer::new(port.max_line_bytes);
    let mut delivered_data = false;
    loop {
        // Cancelling `next_frame` loses nothing: bytes already read stay in
        // the framer's buffer.
        let frame = tokio::select! {
            _ = ctx.shutdown.cancelled() => return SessionEnd::Shutdown,
            frame = framer.next_frame(&mut stream) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return SessionEnd::Lost { error: "end of file (device closed)".into(), delivered_data },
            Err(e) => return SessionEnd::Lost { error: e.to_string(), delivered_data },
        };
        delivered_data = true;
        let outcome = match frame {
            Frame::Line(text) => match parse_line(&text, port.max_payload_depth) {
                Ok(None) => continue,
                Ok(Some(signal)) => Ok(signal),
                Err(BadLine(reason)) => Err((reason, Some(text))),
            },
            Frame::TooLong => Err((format!("longer than {} bytes", port.max_line_bytes), None)),
            Frame::NotUtf8 => Err(("not UTF-8 (is the baud rate right?)".to_string(), None)),
        };
        match outcome {
            Ok(signal) => {
                if deliver(ctx, port, signal).await.is_err() {
                    return SessionEnd::Shutdown;
                }
            }
            Err((reason, text)) => note_bad_line(port, bad_lines, &reason, text.as_deref()),
        }
    }
}

/// Logs a skipped line the first time, then only counts it (with a rare
/// summary), so a noisy board cannot flood the log.
fn note_bad_line(port: &SerialBoard, bad_lines: &mut BadLineLog, reason: &str, text: Option<&str>) {
    metrics::counter!("fanin_peripheral_bad_lines_total", "board" => port.board.clone()).increment(1);
    match bad_lines.note(Instant::now()) {
        BadLineNote::LogFirst => {
            let preview: String = text.unwrap_or("").chars().take(LOG_PREVIEW_CHARS).collect();
            tracing::warn!(board = %port.board, reason, line = %preview,
                "skipped a bad serial line; \
                 further ones are counted in fanin_peripheral_bad_lines_total");
        }
        BadLineNote::LogSummary { skipped } => {
            tracing::warn!(board = %port.board, skipped, last_reason = reason, "skipped more bad serial lines");
        }
        BadLineNote::Quiet => {}
    }
}

/// Dispatches one signal, retrying while the store is unavailable. `Err`
/// only on shutdown; a line given up is logged and counted, not returned.
async fn deliver(ctx: &SourceContext, port: &SerialBoard, signal: Signal) -> Result<(), ()> {
    let received_at = Utc::now();
    ctx.health.event_seen(&port.health_name(), received_at);
    let topic = format!("{}/{}", port.board, signal.name);
    let mut event = Event::new(crate::ids::fresh(), Source::Peripheral, topic.clone(), signal.payload, received_at);
    event.client = Some(format!("serial:{}", port.board));
    let mut retry = Backoff::new(DISPATCH_RETRY_INITIAL, DISPATCH_RETRY_CAP);
    for attempt in 1..=DISPATCH_ATTEMPTS {
        let error = match ctx.dispatcher.dispatch(event.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if attempt == DISPATCH_ATTEMPTS {
            metrics::counter!("fanin_peripheral_lost_lines_total", "board" => port.board.clone()).increment(1);
            tracing::error!(board = %port.board, %topic, %error, attempts = attempt,
                "dispatch failed; the serial line is lost (a serial device cannot resend)");
            return Ok(());
        }
        tracing::warn!(board = %port.board, %topic, %error, attempt, "dispatch failed; retrying");
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Err(()),
            _ = tokio::time::sleep(retry.next_delay(rand::random::<f64>())) => {}
        }
    }
    Ok(())
}
