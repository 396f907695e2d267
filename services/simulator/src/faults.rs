//! Fault injection: which requests the driver drops, re-sends, reorders or sends slowly, chosen by a seeded stream.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::workload::{mix_seed, TutorRequest};

/// What a fault does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Never send a course write (its sequence numbers become a gap).
    Drop,
    /// Send a write twice; both must answer 2xx.
    Resend,
    /// Send a course write after the course's next write instead of before it.
    Reorder,
    /// Upload the body slowly, in chunks separated by pauses.
    Slow,
}

/// One fault mode and the share of eligible requests it hits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Probability in [0, 1] per eligible request.
    pub probability: f64,
}

/// Probability used when `--fault drop` names no share.
pub const DEFAULT_FAULT_PROBABILITY: f64 = 0.01;

/// A `--fault` value that is not `KIND[:PROBABILITY]`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid fault {value:?}: expected drop|resend|reorder|slow, optionally followed by :PROBABILITY in [0, 1]")]
pub struct ParseFaultError {
    pub value: String,
}

impl FromStr for Fault {
    type Err = ParseFaultError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = || ParseFaultError {
            value: value.to_string(),
        };
        let (kind, probability) = match value.split_once(':') {
            Some((kind, probability)) => (kind, probability.parse::<f64>().map_err(|_| error())?),
            None => (value, DEFAULT_FAULT_PROBABILITY),
        };
        let kind = match kind {
            "drop" => FaultKind::Drop,
            "resend" => FaultKind::Resend,
            "reorder" => FaultKind::Reorder,
            "slow" => FaultKind::Slow,
            _ => return Err(error()),
        };
        if !(0.0..=1.0).contains(&probability) {
            return Err(error());
        }
        Ok(Fault { kind, probability })
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Drop => "drop",
            FaultKind::Resend => "resend",
            FaultKind::Reorder => "reorder",
            FaultKind::Slow => "slow",
        })
    }
}

/// Decides, in generation order, which fault (if any) hits each request.
pub(crate) struct FaultPlan {
    faults: Vec<Fault>,
    rng: ChaCha8Rng,
}

impl FaultPlan {
    pub(crate) fn new(faults: &[Fault], seed: u64) -> FaultPlan {
        FaultPlan {
            faults: faults.to_vec(),
            rng: ChaCha8Rng::seed_from_u64(mix_seed(seed, u64::MAX - 1)),
        }
    }

    /// One draw per configured fault per request, eligible or not, so the choice for a
    /// request depends only on its position in the sequence.
    pub(crate) fn choose(&mut self, request: &TutorRequest) -> Option<FaultKind> {
        let mut chosen = None;
        for fault in &self.faults {
            let hit = self.rng.random::<f64>() < fault.probability;
            if hit && chosen.is_none() && eligible(fault.kind, request) {
                chosen = Some(fault.kind);
            }
        }
        chosen
    }
}

fn eligible(kind: FaultKind, request: &TutorRequest) -> bool {
    let course_write = request.is_write() && request.course.is_some();
    match kind {
        // create_course (sequence 0) is never dropped: a gap needs a known course.
        FaultKind::Drop => {
            course_write
                && request
                    .sequence_numbers
                    .first()
                    .is_some_and(|&seq| seq >= 1)
        }
        FaultKind::Resend => request.is_write(),
        FaultKind::Reorder => {
            course_write
                && request
                    .sequence_numbers
                    .first()
                    .is_some_and(|&seq| seq >= 1)
        }
        FaultKind::Slow => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Result<Fault, ParseFaultError>) {
        assert_eq!(value.parse::<Fault>(), expected);
    }

    #[test]
    fn parses_fault_values() {
        check(
            "drop",
            Ok(Fault {
                kind: FaultKind::Drop,
                probability: DEFAULT_FAULT_PROBABILITY,
            }),
        );
        check(
            "resend:0.5",
            Ok(Fault {
                kind: FaultKind::Resend,
                probability: 0.5,
            }),
        );
        check(
            "reorder:1",
            Ok(Fault {
                kind: FaultKind::Reorder,
                probability: 1.0,
            }),
        );
        check(
            "slow:0",
            Ok(Fault {
                kind: FaultKind::Slow,
                probability: 0.0,
            }),
        );
        check(
            "slow:2",
            Err(ParseFaultError {
                value: "slow:2".into(),
            }),
        );
        check(
            "explode",
            Err(ParseFaultError {
                value: "explode".into(),
            }),
        );
        check(
            "drop:x",
            Err(ParseFaultError {
                value: "drop:x".into(),
            }),
        );
    }
}
