//! The Prometheus/OpenMetrics scrape endpoint: `GET /metrics` answers the state's
//! [`Stats::to_prometheus`](super::Stats::to_prometheus) text over HTTP/1.1.
//!
//! Off by default; started on a loopback address only (the stats are not meant for the
//! network, and nothing here authenticates). A hand-written responder rather than an HTTP crate:
//! one GET on one path, one connection at a time, on one thread. Requests are bounded
//! ([`MAX_REQUEST`] bytes, [`IO_TIMEOUT`] per read or write), so a slow or hostile client costs
//! at most that, and every response closes its connection.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::types::error::{Error, MonitorError, Result};

/// The longest request (line and headers) read; a longer one is answered 431.
pub const MAX_REQUEST: usize = 8192;
/// The longest a read or write of one connection may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the rest of a refused request is waited for.
const LINGER: Duration = Duration::from_millis(200);
/// How often the idle server checks whether it was stopped.
const STOP_POLL: Duration = Duration::from_millis(20);

/// What the endpoint serves: the runtime's state implements it (`runtime/stats.rs`), so this
/// layer needs nothing above it.
pub trait StatsSource: Send + Sync {
    /// The Prometheus text of the current stats, or `None` once the source is closed (503).
    fn prometheus_text(&self) -> Option<String>;
}

/// A running endpoint. Dropping it (or [`MetricsServer::stop`]) stops the thread and releases
/// the port.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `state`'s metrics on `ip:port` (`port` 0 picks a free one: see
    /// [`MetricsServer::local_addr`]). `ip` must be a loopback address. The server holds the
    /// state weakly: once the state is closed or dropped it answers 503.
    pub fn start<S: StatsSource + 'static>(state: &Arc<S>, ip: IpAddr, port: u16) -> Result<MetricsServer> {
        if !ip.is_loopback() {
            return Err(Error::InvalidArgument(format!(
                "metrics are served on a loopback address only (127.0.0.1 or ::1), not {ip}"
            )));
        }
        let want = SocketAddr::new(ip, port);
        let serve_err = |source| Error::from(MonitorError::Serve { addr: want.to_string(), source });
        let listener = TcpListener::bind(want).map_err(serve_err)?;
        // Non-blocking accept: the thread checks `stop` between connections.
        listener.set_nonblocking(true).map_err(serve_err)?;
        let addr = listener.local_addr().map_err(serve_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let weak: Weak<S> = Arc::downgrade(state);
        let weak: Weak<dyn StatsSource> = weak;
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mmsb-metrics".into())
            .spawn(move || serve(listener, weak, flag))
            .map_err(serve_err)?;
        Ok(MetricsServer { addr, stop, thread: Some(thread) })
    }

    /// The address it listens on (with the port the system picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the thread (at most one request in progress), which
    /// closes the listening socket: the port is free when this returns. Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            // A panic of the server thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(listener: TcpListener, state: Weak<dyn StatsSource>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            // One client's failure (reset, timeout) is that client's: keep serving.
            Ok((conn, _)) => drop(answer(conn, &state)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(STOP_POLL),
            // Transient accept errors (out of descriptors, aborted connection): back off.
            Err(_) => std::thread::sleep(STOP_POLL),
        }
    }
}

fn answer(mut conn: TcpStream, state: &Weak<dyn StatsSource>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        if req.len() >= MAX_REQUEST {
            respond(&mut conn, "431 Request Header Fields Too Large", "request too large\n")?;
            // Closing with unread input would reset the connection, and the client could lose
            // the answer: read (a bounded amount of) the rest first.
            conn.shutdown(std::net::Shutdown::Write)?;
            conn.set_read_timeout(Some(LINGER))?;
            let mut left = 16 * MAX_REQUEST;
            while left > 0 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
            return Ok(());
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break; // the client finished sending (or gave up): answer what came
        }
        req.extend_from_slice(&buf[..n.min(MAX_REQUEST + 4 - req.len())]);
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    match (method, path, version) {
        (Some("GET"), Some(p), Some(v)) if v.starts_with("HTTP/1.") => {
            if p != "/metrics" && !p.starts_with("/metrics?") {
                return respond(&mut conn, "404 Not Found", "only /metrics is served here\n");
            }
            match state.upgrade().and_then(|s| s.prometheus_text()) {
                Some(text) => respond_typed(&mut conn, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &text),
                None => respond(&mut conn, "503 Service Unavailable", "the state is closed\n"),
            }
        }
        (Some(_), Some(_), Some(v)) if v.starts_with("HTTP/1.") => {
            respond(&mut conn, "405 Method Not Allowed", "only GET is served here\n")
        }
        _ => respond(&mut conn, "400 Bad Request", "not an HTTP/1.x request\n"),
    }
}

fn respond(conn: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    respond_typed(conn, status, "text/plain; charset=utf-8", body)
}

fn respond_typed(conn: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let allow = if status.starts_with("405") { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}
