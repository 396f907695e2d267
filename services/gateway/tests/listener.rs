//! The HTTP listener over real sockets with short limits: the connection cap refuses
//! politely, idle and slow clients are closed, and shutdown drains what is in flight.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use biglearn_gateway::server::{limits_of, read_body, serve, HttpLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

fn short_limits(max_connections: usize) -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_secs(2),
        keep_alive_idle_timeout: Duration::from_secs(1),
        body_grace: Duration::from_secs(1),
        body_min_bytes_per_second: 1000,
        max_connections,
        ..HttpLimits::default()
    }
}

/// A router with `/ping` and an `/echo` that reads its body as the gateway does.
fn app() -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route(
            "/echo",
            post(|request: Request| async move {
                let limits = limits_of(request.extensions());
                let (_, body): (_, Body) = request.into_parts();
                match read_body(body, None, 1_000_000, &limits).await {
                    Ok(bytes) => (StatusCode::OK, bytes.to_vec()),
                    Err(error) => (
                        StatusCode::REQUEST_TIMEOUT,
                        format!("{error:?}").into_bytes(),
                    ),
                }
            }),
        )
}

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    join: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: HttpLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let addr = listener.local_addr().expect("an address");
    let (stop, stopped) = oneshot::channel::<()>();
    let join = tokio::spawn(serve(listener, app(), limits, async move {
        let _ = stopped.await;
    }));
    Server { addr, stop, join }
}

/// Reads until the server closes the connection; `None` if `limit` passes first.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut received = Vec::new();
    tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| String::from_utf8_lossy(&received).into_owned())
}

async fn get_ping(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("a request");
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("an answer in time")
        .expect("reading");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_with_503_and_retry_after() {
    let server = start(HttpLimits {
        keep_alive_idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(30),
        ..short_limits(2)
    })
    .await;
    let mut first = TcpStream::connect(server.addr).await.expect("connecting");
    let mut second = TcpStream::connect(server.addr).await.expect("connecting");
    assert!(get_ping(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(get_ping(&mut second).await.starts_with("HTTP/1.1 200"));

    let mut third = TcpStream::connect(server.addr).await.expect("connecting");
    let refusal = read_until_closed(&mut third, Duration::from_secs(10))
        .await
        .expect("refused and closed at once");
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(refusal.contains("retry-after: 1"), "{refusal}");
    assert!(refusal.contains("too many open connections"), "{refusal}");

    // A closed connection frees its place (bounded retries while the server notices).
    drop(first);
    let mut served = false;
    for _ in 0..50 {
        let mut next = TcpStream::connect(server.addr).await.expect("connecting");
        if get_ping(&mut next).await.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a place freed by a closed connection is reused");
    server.stop.send(()).expect("stopping");
    drop(second);
    server.join.await.expect("joined").expect("served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(short_limits(16)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connecting");
    assert!(get_ping(&mut stream).await.starts_with("HTTP/1.1 200"));
    let rest = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    assert_eq!(rest.as_deref(), Some(""), "closed after the idle timeout");
    server.stop.send(()).expect("stopping");
    server.join.await.expect("joined").expect("served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_closed() {
    let server = start(HttpLimits {
        keep_alive_idle_timeout: Duration::from_secs(60),
        ..short_limits(16)
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connecting");
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: te")
        .await
        .expect("half a head");
    let answer = read_until_closed(&mut stream, Duration::from_secs(20))
        .await
        .expect("closed by the header timeout, not the idle timeout");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // Others are still served.
    let mut other = TcpStream::connect(server.addr).await.expect("connecting");
    assert!(get_ping(&mut other).await.starts_with("HTTP/1.1 200"));
    server.stop.send(()).expect("stopping");
    drop(other);
    server.join.await.expect("joined").expect("served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish() {
    let server = start(short_limits(16)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connecting");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nab")
        .await
        .expect("a partial body");
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop.send(()).expect("stopping");
    stream
        .write_all(b"cde")
        .await
        .expect("the rest of the body");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("answered, then closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("abcde"), "{answer}");
    server.join.await.expect("joined").expect("served");
}
