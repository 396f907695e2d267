//! The Tutor-facing HTTP API (to be written).
