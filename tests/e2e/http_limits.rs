//! Slow clients against a real node with the default HTTP limits: a client that stops
//! half-way through its headers or trickles its body is cut off while others are served,
//! and an announced oversized body is refused before it is read.

use std::time::Duration;

use biglearn_suite::{Node, TestBackend, API_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (or `limit` passes: then `None`).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(limit, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    outcome
        .ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_mid_headers_is_disconnected_while_others_are_served() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path(), TestBackend::Embedded).await;

    let mut slow_clients = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(node.addr).await.expect("connecting");
        stream
            .write_all(b"POST /record_responses HTTP/1.1\r\nHost: biglearn\r\nContent-Ty")
            .await
            .expect("half the headers");
        slow_clients.push(stream);
    }
    // Other clients are served while the slow ones hang.
    for _ in 0..10 {
        let reply = node
            .client()
            .get(format!("{}/ping", node.base()))
            .send()
            .await
            .expect("a /ping while slow clients hang");
        assert_eq!(reply.status(), 200);
    }
    for stream in &mut slow_clients {
        let closed = read_until_closed(stream, Duration::from_secs(30)).await;
        let answer = closed.expect("a client that stopped mid-headers is disconnected within 30 s");
        // Either closed silently or told 408; never a request handled.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    node.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_oversized_body_is_refused_without_waiting_for_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path(), TestBackend::Embedded).await;

    let mut stream = TcpStream::connect(node.addr).await.expect("connecting");
    let head = format!(
        "POST /record_responses HTTP/1.1\r\nHost: biglearn\r\nContent-Type: application/json\r\n\
         Biglearn-Api-Token: {API_TOKEN}\r\nContent-Length: 100000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("the head");
    // No body follows: the answer must not wait for one.
    let answer = read_until_closed(&mut stream, Duration::from_secs(30))
        .await
        .expect("an answer and a closed connection");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request body exceeds"), "{answer}");
    node.stop().await.expect("a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_at_one_byte_per_second_is_cut_off() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let node = Node::start(dir.path(), TestBackend::Embedded).await;

    let mut stream = TcpStream::connect(node.addr).await.expect("connecting");
    let head = format!(
        "POST /record_responses HTTP/1.1\r\nHost: biglearn\r\nContent-Type: application/json\r\n\
         Biglearn-Api-Token: {API_TOKEN}\r\nContent-Length: 200\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("the head");
    let (mut reader, mut writer) = stream.into_split();
    // Bounded: 60 bytes at most, far less than announced.
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(45), async {
        let mut buffer = [0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    read.expect("the slow upload is answered and closed before the client finishes");
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("minimum upload rate"), "{answer}");
    let reply = node
        .client()
        .get(format!("{}/ping", node.base()))
        .send()
        .await
        .expect("a /ping after the slow upload");
    assert_eq!(reply.status(), 200);
    node.stop().await.expect("a clean stop");
}
