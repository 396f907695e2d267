//! End-to-end tests: whole Biglearn nodes in-process, driven over HTTP as Tutor and
//! operators drive them. One module per area.

mod atomicity;
mod broker_outage;
mod disk_full;
mod errors;
mod event_stream;
mod examples;
mod gaps;
mod http_limits;
mod inbox;
mod kafka;
mod metrics;
mod observer;
mod projections;
mod races;
mod readiness;
mod restart;
mod results;
mod scheduler;
mod settings;
mod settings_act;
mod simulator;
mod staging;
mod writer_catch_up;
