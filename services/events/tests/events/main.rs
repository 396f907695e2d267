//! Tests of the envelope codecs, framings, headers, dead letters and schema evolution.

mod compatibility;
mod errors;
mod fixtures;
mod reference;
mod round_trip;
