//! The HTTP listener: accepts connections under a cap and serves each with deadlines, so
//! that slow or idle clients cannot hold the server (docs/design/api.md §3.5,
//! docs/design/operations.md).
//!
//! What a client can no longer do:
//! - send its request headers slowly or not at all: the connection is closed once
//!   [`HttpLimits::header_read_timeout`] passes without complete headers;
//! - keep an idle keep-alive connection open forever: closed after
//!   [`HttpLimits::keep_alive_idle_timeout`] without a request;
//! - send a body slowly: a body of `n` bytes must arrive within
//!   [`HttpLimits::body_grace`] plus `n` / [`HttpLimits::body_min_bytes_per_second`]
//!   (answered 408, see [`read_body`]);
//! - announce a body larger than the endpoint's limit: 413 without keeping it (up to 64 MiB
//!   of it is read and discarded first, for at most 5 s, so that a client still sending
//!   receives the answer instead of a reset; a larger announcement is answered at once);
//! - exhaust the process's file descriptors: past [`HttpLimits::max_connections`] a new
//!   connection is answered 503 with `Retry-After` and closed at once, and an `accept`
//!   error (such as "too many open files") pauses accepting briefly instead of spinning.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// The limits of the HTTP listener. Defaults are documented in docs/operations.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// From the moment a connection is ready for a request to its complete headers.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub keep_alive_idle_timeout: Duration,
    /// The time any body gets before the minimum rate applies.
    pub body_grace: Duration,
    /// The slowest body upload accepted, after the grace period.
    pub body_min_bytes_per_second: u64,
    /// Open connections served at once; more are refused with 503.
    pub max_connections: usize,
    /// A write not durable by then is answered 503 (docs/design/api.md §3.5): before Tutor's
    /// client gives up at 60 s. The write itself goes on, its locks held until its records
    /// have a final outcome, so Tutor's retry of the same body answers 200 if they landed.
    pub write_deadline: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(20),
            keep_alive_idle_timeout: Duration::from_secs(15),
            body_grace: Duration::from_secs(10),
            body_min_bytes_per_second: 16 * 1024,
            max_connections: 1024,
            write_deadline: Duration::from_secs(55),
        }
    }
}

impl HttpLimits {
    /// The deadline for a body of `n_bytes` (or of `max_bytes` when its length is unknown).
    pub fn body_deadline(&self, n_bytes: u64) -> Duration {
        let per_byte = n_bytes as f64 / self.body_min_bytes_per_second.max(1) as f64;
        self.body_grace + Duration::from_secs_f64(per_byte)
    }
}

/// How reading a request body ended, when it did not end with the body.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// More bytes than the endpoint accepts (announced or sent).
    TooLarge { limit: usize },
    /// The body did not arrive at the minimum rate.
    TooSlow { deadline: Duration },
    /// The connection failed mid-body.
    Broken(String),
}

/// The most of an oversized body that is read and discarded before answering 413, and
/// for how long: a client that is still sending when the connection closes may lose the
/// answer (the unread bytes make the close a reset), so a body of reasonable size is
/// drained first; a larger one, or a slower one, is answered at once.
const MAX_DRAINED_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_BUDGET: Duration = Duration::from_secs(5);

/// Reads a whole request body under the endpoint's size limit and the listener's rate
/// limit. `content_length` is the announced length, if any.
pub async fn read_body(
    body: Body,
    content_length: Option<u64>,
    limit: usize,
    limits: &HttpLimits,
) -> Result<Bytes, BodyError> {
    let mut body = body;
    if content_length.is_some_and(|length| length > limit as u64) {
        if content_length.is_some_and(|length| length <= MAX_DRAINED_BYTES) {
            drain(&mut body).await;
        }
        return Err(BodyError::TooLarge { limit });
    }
    let deadline = limits.body_deadline(content_length.unwrap_or(limit as u64));
    let started = tokio::time::Instant::now();
    let mut bytes = Vec::with_capacity(content_length.unwrap_or(0) as usize);
    loop {
        let frame = tokio::time::timeout_at(started + deadline, body.frame())
            .await
            .map_err(|_| BodyError::TooSlow { deadline })?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|error| BodyError::Broken(error.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                drain(&mut body).await;
                return Err(BodyError::TooLarge { limit });
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(bytes))
}

/// Reads and discards what is left of a body, within [`MAX_DRAINED_BYTES`] and
/// [`DRAIN_BUDGET`].
async fn drain(body: &mut Body) {
    let _ = tokio::time::timeout(DRAIN_BUDGET, async {
        let mut n_drained = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                n_drained += data.len() as u64;
                if n_drained > MAX_DRAINED_BYTES {
                    break;
                }
            }
        }
    })
    .await;
}

/// The answer to a connection over the cap, written before closing it.
fn over_capacity_answer() -> Vec<u8> {
    let body = r#"{"errors":[{"path":"","message":"too many open connections; retry shortly"}]}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then stops
/// accepting and waits for the connections in flight to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let (drained_tx, mut drained_rx) = watch::channel(());
    tokio::pin!(shutdown);
    let mut last_accept_warning: Option<Instant> = None;
    let over_capacity: Arc<[u8]> = over_capacity_answer().into();
    loop {
        let (stream, _peer) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors (or a transient network error): back off
                    // instead of spinning; connections that close free descriptors.
                    if last_accept_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(%error, "Cannot accept a connection; pausing accepts briefly.");
                        last_accept_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tokio::spawn(refuse(stream, Arc::clone(&over_capacity)));
            continue;
        };
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::SeqCst);
        let connection = Connection {
            app: app.clone(),
            limits,
            stop: stop_rx.clone(),
            open: Arc::clone(&open),
            drained: drained_tx.clone(),
        };
        tokio::spawn(async move {
            connection.serve(stream).await;
            drop(permit);
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(drained_tx);
    while open.load(Ordering::SeqCst) > 0 {
        if drained_rx.changed().await.is_err() {
            break;
        }
    }
    Ok(())
}

async fn refuse(mut stream: tokio::net::TcpStream, answer: Arc<[u8]>) {
    // Bounded: a client that does not read its refusal does not keep the descriptor.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One accepted connection and what it needs to serve itself.
struct Connection {
    app: Router,
    limits: HttpLimits,
    stop: watch::Receiver<bool>,
    open: Arc<AtomicUsize>,
    drained: watch::Sender<()>,
}

impl Connection {
    async fn serve(mut self, stream: tokio::net::TcpStream) {
        let activity = Arc::new(Activity::default());
        let service = {
            let app = self.app.clone();
            let activity = Arc::clone(&activity);
            let limits = self.limits;
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                let app = app.clone();
                let activity = Arc::clone(&activity);
                activity.begin();
                request.extensions_mut().insert(limits);
                async move {
                    let response = app.oneshot(request.map(Body::new)).await;
                    activity.end();
                    response
                }
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .keep_alive(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let idle = self.limits.keep_alive_idle_timeout;
        let mut shutting_down = false;
        loop {
            let idle_check = tokio::time::sleep(idle.min(Duration::from_secs(1)));
            tokio::select! {
                outcome = connection.as_mut() => {
                    if let Err(error) = outcome {
                        tracing::debug!(%error, "An HTTP connection ended with an error.");
                    }
                    break;
                }
                _ = self.stop.changed(), if !shutting_down => {
                    connection.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
                _ = idle_check, if !shutting_down => {
                    if activity.idle_for() >= idle {
                        connection.as_mut().graceful_shutdown();
                        shutting_down = true;
                    }
                }
            }
        }
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.drained.send_replace(());
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    since: Instant,
    last_end_micros: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            since: Instant::now(),
            last_end_micros: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        self.last_end_micros
            .store(self.since.elapsed().as_micros() as u64, Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// How long the connection has had no request in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let last_end = Duration::from_micros(self.last_end_micros.load(Ordering::SeqCst));
        self.since.elapsed().saturating_sub(last_end)
    }
}

/// The limits a request was accepted under (inserted by [`serve`]; the defaults when the
/// router is driven without it, as in unit tests).
pub fn limits_of(request_extensions: &axum::http::Extensions) -> HttpLimits {
    request_extensions
        .get::<HttpLimits>()
        .copied()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body fed by the test, one chunk at a time.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(1);
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((Ok::<_, std::io::Error>(chunk), receiver))
        });
        (sender, Body::from_stream(stream))
    }

    fn limits() -> HttpLimits {
        HttpLimits {
            body_grace: Duration::from_millis(200),
            body_min_bytes_per_second: 1000,
            ..HttpLimits::default()
        }
    }

    #[test]
    fn the_body_deadline_grows_with_the_announced_length() {
        let limits = limits();
        assert_eq!(limits.body_deadline(0), Duration::from_millis(200));
        assert_eq!(limits.body_deadline(1000), Duration::from_millis(1200));
    }

    #[tokio::test]
    async fn an_announced_oversized_body_is_refused_before_reading() {
        // A body that never ends: refusing must not wait for it.
        let (_sender, body) = channel_body();
        let outcome = read_body(body, Some(100_000_000), 8_388_608, &limits()).await;
        assert_eq!(outcome, Err(BodyError::TooLarge { limit: 8_388_608 }));
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_body_that_never_comes_is_refused_after_the_drain_budget() {
        let (_sender, body) = channel_body();
        let outcome = read_body(body, Some(9_000_000), 8_388_608, &limits()).await;
        assert_eq!(outcome, Err(BodyError::TooLarge { limit: 8_388_608 }));
    }

    #[tokio::test]
    async fn an_oversized_body_is_drained_before_the_refusal() {
        let (sender, body) = channel_body();
        let feeder = tokio::spawn(async move {
            for _ in 0..20 {
                sender
                    .send(Bytes::from(vec![b'x'; 1000]))
                    .await
                    .expect("read");
            }
        });
        let outcome = read_body(body, Some(20_000), 10_000, &limits()).await;
        assert_eq!(outcome, Err(BodyError::TooLarge { limit: 10_000 }));
        // Every chunk was taken: the sender never blocked on an unread body.
        feeder.await.expect("the whole body was read");
    }

    #[tokio::test]
    async fn a_body_larger_than_announced_is_refused() {
        let body = Body::from(vec![b'x'; 20]);
        let outcome = read_body(body, None, 10, &limits()).await;
        assert_eq!(outcome, Err(BodyError::TooLarge { limit: 10 }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_the_minimum_rate_times_out() {
        let (sender, body) = channel_body();
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if sender.send(Bytes::from_static(b"x")).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let outcome = read_body(body, Some(100), 8_388_608, &limits()).await;
        assert_eq!(
            outcome,
            Err(BodyError::TooSlow {
                deadline: Duration::from_millis(300)
            })
        );
        trickle.abort();
    }

    #[tokio::test]
    async fn a_body_within_the_limits_is_read_whole() {
        let body = Body::from(&b"{\"a\":1}"[..]);
        let bytes = read_body(body, Some(7), 100, &limits())
            .await
            .expect("read");
        assert_eq!(&bytes[..], b"{\"a\":1}");
    }
}
