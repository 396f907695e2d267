//! Tutor simulator: generates a realistic, seeded Tutor workload whose students follow a ground-truth SPARFA model, and drives it through the biglearn-api HTTP surface while checking what it reads back.
//!
//! Invariants:
//! - The generator is pure: the same [`WorkloadConfig`] and the same answers yield the
//!   same requests, byte for byte. It has no clock; "now" is `cutoff_micros`.
//! - Per course, sequence numbers are 0 (`create_course`), 1, 2, … in generation order,
//!   without holes; `create_ecosystem` is 0 of its ecosystem.
//! - A course's requests are sent in order, each after the previous one's answer.
//! - Unready answers are counted, never errors; checks only use facts the server had
//!   applied before the request they judge.
//! - Memory grows with courses × students, not with the number of responses.
//!
//! Does not:
//! - parse command lines (the `biglearn` binary maps its flags onto [`SimulateConfig`]);
//! - write to a store (offline mode hands requests to a sink);
//! - read the wall clock in the generator (only the driver measures time).
//!
//! Modules, in reading order: `clock` (simulated time), `ids`, `content` (books, pools,
//! truth parameters), `truth` (ground truth and CLUE error), `workload` (config, request
//! type, the generator), `course` (one course's script and the read checks), `faults`,
//! `summary` (figures and their rendering), `driver` (HTTP).

mod clock;
mod content;
mod course;
mod driver;
mod faults;
mod ids;
mod summary;
mod truth;
mod workload;

pub use clock::{format_micros, parse_date_or_datetime, DAY, HOUR, MINUTE, SECOND, WEEK};
pub use driver::{run_simulation, SimulateConfig, SimulateError};
pub use faults::{Fault, FaultKind, ParseFaultError, DEFAULT_FAULT_PROBABILITY};
pub use summary::{DroppedRequest, FaultReport, LatencySummary, SimulationSummary};
pub use truth::{BookTruth, ClueReport, GroundTruth, QuestionTruth, StudentTruth};
pub use workload::{
    generate_offline, CheckFailure, Next, OfflineSummary, ResponseReport, TutorRequest, Workload,
    WorkloadConfig,
};
