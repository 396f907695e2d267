//! Test support shared by integration tests: a throwaway Kafka-compatible broker, unique
//! topic prefixes, and the address of a `biglearn` child process.
//!
//! Invariants:
//! - A test that needs a broker gets one or fails loudly with the way to install one
//!   (`scripts/install-test-broker.sh`); it never skips.
//! - Every broker process this crate starts is killed when its [`TestBroker`] drops.
//! - Brokers listen on 127.0.0.1 only.
//!
//! Does not: create topics or clients for the test (use `biglearn-stream`).
//!
//! Modules, in reading order:
//! - [`broker`]: the [`TestBroker`], an external broker or a tansu child process.
//! - [`prefix`]: the topic prefix helper [`unique_topic_prefix`].
//! - [`child`]: a `biglearn` child process's address, [`listening_address`].

pub mod broker;
pub mod child;
pub mod prefix;

pub use broker::{TestBroker, TestBrokerError};
pub use child::listening_address;
pub use prefix::unique_topic_prefix;
