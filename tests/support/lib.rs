//! Support for the end-to-end tests: a whole Biglearn node started in-process on
//! 127.0.0.1:0, and a small HTTP client speaking Tutor's and the operator's protocol.
//!
//! Invariants:
//! - Nodes listen on 127.0.0.1 only and stop when asked (or when the test ends).
//! - A node on Kafka gets its own topic prefix, so tests sharing a broker never meet.
//!
//! Does not: assert anything; tests do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use biglearn::run::{Backend, Role, RunConfig};
use serde_json::Value;
use tokio::sync::oneshot;

/// The token every test node accepts from Tutor.
pub const API_TOKEN: &str = "test-api-token";
/// The token every test node accepts on admin endpoints.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// One running Biglearn process (all roles), in this test process.
pub struct Node {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
    client: reqwest::Client,
}

/// How a node stores its log.
#[derive(Clone, Debug)]
pub enum TestBackend {
    Embedded,
    Kafka { bootstrap: String, prefix: String },
}

impl Node {
    /// Starts a node with every role on `data_dir`.
    pub async fn start(data_dir: &Path, backend: TestBackend) -> Node {
        let (topic_prefix, backend) = match backend {
            TestBackend::Embedded => ("test".to_owned(), Backend::Embedded),
            TestBackend::Kafka { bootstrap, prefix } => (
                prefix,
                Backend::Kafka {
                    bootstrap_servers: bootstrap,
                    single_broker: true,
                },
            ),
        };
        let config = RunConfig {
            data_dir: data_dir.to_owned(),
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            backend,
            topic_prefix,
            roles: vec![Role::Writer, Role::Reader],
            api_token: API_TOKEN.into(),
            admin_token: ADMIN_TOKEN.into(),
            writer_id: "test-writer".into(),
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = oneshot::channel::<SocketAddr>();
        let join = tokio::spawn(biglearn::run::run_with(
            config,
            async move {
                let _ = stop_rx.await;
            },
            move |addr| {
                let _ = addr_tx.send(addr);
            },
        ));
        let addr = match tokio::time::timeout(Duration::from_secs(60), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let outcome = join.await;
                panic!("the node did not start listening: {outcome:?}");
            }
        };
        let node = Node {
            addr,
            data_dir: data_dir.to_owned(),
            stop: Some(stop_tx),
            join,
            client: reqwest::Client::new(),
        };
        node.wait_ready(Duration::from_secs(60)).await;
        node
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ready = self
                .client
                .get(format!("{}/readyz", self.base()))
                .send()
                .await
                .map(|response| response.status().as_u16() == 200)
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the node did not become ready within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs a Tutor request with the API token; returns status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(path, body, &[("Biglearn-Api-Token", API_TOKEN)])
            .await
    }

    /// POSTs an admin request with the admin token and an actor.
    pub async fn admin(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(
            path,
            body,
            &[("Biglearn-Admin-Token", ADMIN_TOKEN), ("Biglearn-Actor", "e2e-test")],
        )
        .await
    }

    /// POSTs JSON with the given headers.
    pub async fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base()))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the node answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// A raw request, for tests of the HTTP edge itself.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Stops the node gracefully and returns how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(60), &mut self.join).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => Err(anyhow::anyhow!("the node task failed: {error}")),
            Err(_) => Err(anyhow::anyhow!("the node did not stop within 60 s")),
        }
    }
}

/// The recorded Tutor exchanges of `../shared/examples/biglearn-api`, in replay order.
pub fn recorded_examples() -> Vec<(String, Value)> {
    let dir = examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read the recorded examples in {}: {error}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a readable example");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).expect("a JSON example"))
        })
        .collect()
}

/// `../shared/examples/biglearn-api` relative to the workspace (or `BIGLEARN_EXAMPLES`).
pub fn examples_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BIGLEARN_EXAMPLES") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/examples/biglearn-api")
}
