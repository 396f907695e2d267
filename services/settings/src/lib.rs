//! Feature toggles (docs/design/operations.md §6): typed settings with global defaults, course
//! overrides, pins and kill switches, recorded as events and resolved as of a version.
//!
//! Invariants:
//! - Pure: no I/O, no clock, no spawning. "Now" comes in through [`ChangeContext`].
//! - A setting resolves from the events with `settings_version` ≤ the version asked
//!   for, in the order kill switch → course override → pinned value → global default,
//!   so a replay at the versions stamped in course events resolves as live processing did.
//! - A refused command produces no event; an accepted one produces events numbered right
//!   after the history's last version, the pins of a `new_courses` change before the change.
//! - Nothing is implied: every change of a global default states `overrides` and `applies_to`.
//!
//! Does not: read or write topics, know the HTTP shapes, or know which courses exist (the
//! writer passes them in, with the exact metadata cutoff).
//!
//! Modules, in reading order:
//! - [`value`]: value types, scopes, intents, typed values and their JSON text.
//! - [`event`]: [`SettingsEvent`] and its bodies.
//! - [`history`]: [`SettingsHistory`]: apply, resolve (with the `because` chain), list, audit.
//! - [`command`]: admin commands to events, with validation.
//! - [`catalog`]: the initial settings of §6.5, typed [`keys`], bootstrap events.
//! - [`avro`]: conversion to and from the Avro `SettingsEvent` records.
//! - [`flags`]: per-environment feature flags, static configuration beside the toggles.
//! - `error`: [`SettingsError`].

pub mod avro;
pub mod catalog;
pub mod command;
mod error;
pub mod event;
pub mod flags;
pub mod history;
pub mod value;

pub use catalog::{bootstrap_events, keys, Key, SettingType, INITIAL_SETTINGS};
pub use command::{ChangeContext, ChangeDefault, CoursesAtChange, DefineSetting, ExistingCourse};
pub use error::SettingsError;
pub use event::{Definition, SettingsBody, SettingsEvent};
pub use flags::{FeatureFlags, FlagError};
pub use history::{Applied, AuditFilter, ListedSetting, Resolution, SettingsHistory, Source};
pub use value::{AppliesTo, OverridesIntent, Scope, SettingValue, ValueType};
