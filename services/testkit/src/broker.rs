//! A Kafka-compatible broker for one test: `BIGLEARN_TEST_KAFKA` if set, else a tansu child process.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// An external broker address, e.g. `127.0.0.1:9092`.
pub const EXTERNAL_BROKER_ENV: &str = "BIGLEARN_TEST_KAFKA";
/// Path of the tansu binary, overriding `<workspace>/.test-broker/bin/tansu`.
pub const TANSU_ENV: &str = "BIGLEARN_TANSU";
/// How long a broker may take to answer its first metadata request.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str = "run scripts/install-test-broker.sh (installs tansu into .test-broker/bin/tansu), or set BIGLEARN_TEST_KAFKA=host:port to use a running broker";

/// Why no broker could be provided.
#[derive(Debug, thiserror::Error)]
pub enum TestBrokerError {
    #[error("no test broker: {path} does not exist; {INSTALL_HINT}")]
    NotInstalled { path: String },
    #[error("could not start {path}: {source}; {INSTALL_HINT}")]
    Spawn {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not pick a free port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),
    #[error("broker at {bootstrap} exited before answering ({status}); its log is {log}")]
    Exited {
        bootstrap: String,
        status: String,
        log: String,
    },
    #[error(
        "broker at {bootstrap} did not answer metadata within {waited:?}: {last_error}; log: {log}"
    )]
    NotReady {
        bootstrap: String,
        waited: Duration,
        last_error: String,
        log: String,
    },
}

/// A running broker. Drop kills the child process, if this started one.
#[derive(Debug)]
pub struct TestBroker {
    bootstrap: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl TestBroker {
    /// Starts (or finds) a broker, panicking with install instructions if there is none.
    /// Tests must fail, not skip, when the broker is missing.
    pub fn start() -> TestBroker {
        match TestBroker::try_start() {
            Ok(broker) => broker,
            Err(error) => panic!("{error}"),
        }
    }

    /// Uses `BIGLEARN_TEST_KAFKA` if set, else starts tansu on a free port with the
    /// memory storage engine and waits until it answers metadata.
    pub fn try_start() -> Result<TestBroker, TestBrokerError> {
        if let Ok(bootstrap) = std::env::var(EXTERNAL_BROKER_ENV) {
            if !bootstrap.trim().is_empty() {
                let mut broker = TestBroker {
                    bootstrap: bootstrap.trim().to_owned(),
                    child: None,
                    log: None,
                };
                broker.wait_ready()?;
                return Ok(broker);
            }
        }
        start_tansu(&tansu_path())
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Whether this broker is a child process started here (false for `BIGLEARN_TEST_KAFKA`).
    pub fn is_owned(&self) -> bool {
        self.child.is_some()
    }

    fn log_path(&self) -> String {
        self.log.as_deref().map_or_else(
            || "(external broker)".to_owned(),
            |path| path.display().to_string(),
        )
    }

    fn wait_ready(&mut self) -> Result<(), TestBrokerError> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "biglearn-testkit-probe")
            .set("log_level", "0")
            .create()
            .map_err(|error| TestBrokerError::NotReady {
                bootstrap: self.bootstrap.clone(),
                waited: Duration::ZERO,
                last_error: error.to_string(),
                log: self.log_path(),
            })?;
        let started = Instant::now();
        let mut last_error = String::from("no attempt");
        while started.elapsed() < READY_DEADLINE {
            if let Some(status) = self.exited() {
                return Err(TestBrokerError::Exited {
                    bootstrap: self.bootstrap.clone(),
                    status,
                    log: self.log_path(),
                });
            }
            match client.fetch_metadata(None, Duration::from_millis(500)) {
                Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
                Ok(_) => last_error = "metadata lists no brokers".to_owned(),
                Err(error) => last_error = error.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(TestBrokerError::NotReady {
            bootstrap: self.bootstrap.clone(),
            waited: READY_DEADLINE,
            last_error,
            log: self.log_path(),
        })
    }

    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(format!("unknown state: {error}")),
        }
    }
}

/// Starts the tansu at `binary` on a free 127.0.0.1 port and waits until it answers.
fn start_tansu(binary: &Path) -> Result<TestBroker, TestBrokerError> {
    if !binary.is_file() {
        return Err(TestBrokerError::NotInstalled {
            path: binary.display().to_string(),
        });
    }
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let log =
        std::env::temp_dir().join(format!("biglearn-tansu-{}-{port}.log", std::process::id()));
    let spawn_error = |source| TestBrokerError::Spawn {
        path: binary.display().to_string(),
        source,
    };
    let log_file = File::create(&log).map_err(spawn_error)?;
    let log_err = log_file.try_clone().map_err(spawn_error)?;
    let child = Command::new(binary)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(spawn_error)?;
    let mut broker = TestBroker {
        bootstrap: format!("127.0.0.1:{port}"),
        child: Some(child),
        log: Some(log),
    };
    broker.wait_ready()?;
    Ok(broker)
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}

/// `BIGLEARN_TANSU`, else `<workspace root>/.test-broker/bin/tansu`.
pub fn tansu_path() -> PathBuf {
    match std::env::var_os(TANSU_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => workspace_root().join(".test-broker/bin/tansu"),
    }
}

/// The workspace root: the nearest ancestor of the running test's package (cargo sets
/// `CARGO_MANIFEST_DIR` at run time) whose `Cargo.toml` declares `[workspace]`; else the
/// root this crate was compiled in (`<root>/services/testkit`). The run-time lookup comes
/// first because a shared build cache may hold this crate compiled from another checkout.
pub fn workspace_root() -> PathBuf {
    let running = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let found = running.as_deref().and_then(|dir| {
        dir.ancestors()
            .find(|candidate| {
                std::fs::read_to_string(candidate.join("Cargo.toml"))
                    .is_ok_and(|manifest| manifest.contains("[workspace]"))
            })
            .map(Path::to_path_buf)
    });
    found.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    })
}

fn free_port() -> Result<u16, TestBrokerError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(TestBrokerError::Port)?;
    let port = listener.local_addr().map_err(TestBrokerError::Port)?.port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_tansu_path_is_under_the_workspace_root() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file(), "{}", root.display());
        assert!(root.join("services").is_dir());
    }

    #[test]
    fn a_missing_tansu_fails_with_the_install_instruction() {
        let error = start_tansu(Path::new("/nonexistent/tansu")).expect_err("no broker");
        let message = error.to_string();
        assert!(
            message.contains("run scripts/install-test-broker.sh"),
            "{message}"
        );
    }

    #[test]
    fn a_started_broker_answers_metadata_and_dies_on_drop() {
        let broker = TestBroker::start();
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .create()
            .expect("client");
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(5))
            .expect("metadata");
        assert!(!metadata.brokers().is_empty());
        let pid = broker.child.as_ref().map(Child::id);
        drop(broker);
        if let Some(pid) = pid {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "tansu {pid} still running"
            );
        }
    }
}
