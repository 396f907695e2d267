//! End-to-end tests: whole Biglearn nodes in-process, driven over HTTP as Tutor and
//! operators drive them. One module per area.

mod examples;
