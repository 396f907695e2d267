//! [`SettingsHistory`]: every settings event in memory, in version order, and resolution
//! of a key for a course as of a settings version (docs/design/operations.md §6.4).

use std::collections::{BTreeMap, HashMap};

use biglearn_domain::ids::CourseUuid;
use uuid::Uuid;

use crate::catalog::{Key, SettingType};
use crate::error::SettingsError;
use crate::event::{Definition, SettingsBody, SettingsEvent};
use crate::value::{AppliesTo, OverridesIntent, SettingValue, ValueType};

/// Where a resolved value comes from, in the order resolution tries them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Source {
    KillSwitch,
    Override,
    Pinned,
    Default,
}

impl Source {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::KillSwitch => "kill_switch",
            Source::Override => "override",
            Source::Pinned => "pinned",
            Source::Default => "default",
        }
    }
}

/// A resolved value with its explanation.
#[derive(Clone, PartialEq, Debug)]
pub struct Resolution {
    pub value: SettingValue,
    pub source: Source,
    /// The version resolved at: the requested one, or the last one if that is earlier.
    pub settings_version: i64,
    /// The events that determine the value, oldest first: the definition, then whatever
    /// put the value in place or kept another one from applying.
    pub because: Vec<SettingsEvent>,
}

/// What [`SettingsHistory::apply`] did with an event.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Applied {
    /// Added: its version is above every earlier one.
    Added,
    /// Ignored: its version is not above the last applied one (a re-delivery).
    Stale { last_version: i64 },
}

/// One row of [`SettingsHistory::list`].
#[derive(Clone, PartialEq, Debug)]
pub struct ListedSetting {
    pub key: String,
    pub definition: Definition,
    /// The current global default (the defined default until a change).
    pub default: SettingValue,
    pub value: SettingValue,
    pub source: Source,
}

/// Filters of the audit log; they combine with AND, `None` matches everything.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuditFilter {
    pub key: Option<String>,
    /// Events about this course (pins and overrides).
    pub course: Option<CourseUuid>,
    pub actor: Option<String>,
    /// `occurred_at` ≥ this, microseconds since the epoch.
    pub from_micros: Option<i64>,
    /// `occurred_at` ≤ this.
    pub to_micros: Option<i64>,
    /// Versions strictly above this (paging).
    pub after_version: Option<i64>,
    /// At most this many events, oldest first.
    pub limit: usize,
}

/// Positions in `events` of one key's events, by kind, each in version order.
#[derive(Clone, Default, Debug)]
struct KeyIndex {
    definition: Option<usize>,
    changes: Vec<usize>,
    kill_switches: Vec<usize>,
    overrides: HashMap<CourseUuid, Vec<usize>>,
    pins: HashMap<CourseUuid, Vec<usize>>,
}

/// The value resolution found, as positions in `events`.
struct Found<'h> {
    value: &'h SettingValue,
    source: Source,
    because: Vec<usize>,
}

/// Every settings event, in version order, indexed for resolution by key and course.
#[derive(Clone, Default, Debug)]
pub struct SettingsHistory {
    events: Vec<SettingsEvent>,
    keys: BTreeMap<String, KeyIndex>,
    /// A `new_courses` change's id → position of its `GlobalDefaultChanged`. A pin counts
    /// only once its change is recorded, so pins of a change that never completed
    /// (some records delivered, the change itself not) have no effect.
    completed_changes: HashMap<Uuid, usize>,
}

impl SettingsHistory {
    /// An empty history (settings version 0).
    pub fn new() -> SettingsHistory {
        SettingsHistory::default()
    }

    /// A history of these events, applied in order.
    pub fn from_events(events: impl IntoIterator<Item = SettingsEvent>) -> SettingsHistory {
        let mut history = SettingsHistory::new();
        for event in events {
            history.apply(event);
        }
        history
    }

    /// The version of the last applied event, 0 when there is none.
    pub fn last_version(&self) -> i64 {
        self.events.last().map_or(0, |event| event.settings_version)
    }

    /// Every event, oldest first.
    pub fn events(&self) -> &[SettingsEvent] {
        &self.events
    }

    /// Whether `key` has a definition (at any version).
    pub fn is_defined(&self, key: &str) -> bool {
        self.keys
            .get(key)
            .is_some_and(|index| index.definition.is_some())
    }

    /// The definition of `key` and its version, if defined.
    pub fn definition(&self, key: &str) -> Option<(i64, &Definition)> {
        let event = &self.events[self.keys.get(key)?.definition?];
        match &event.body {
            SettingsBody::SettingDefined(definition) => Some((event.settings_version, definition)),
            _ => None,
        }
    }

    /// Adds an event whose version is above every earlier one; anything else is a
    /// re-delivery and changes nothing.
    pub fn apply(&mut self, event: SettingsEvent) -> Applied {
        let last_version = self.last_version();
        if event.settings_version <= last_version {
            return Applied::Stale { last_version };
        }
        let position = self.events.len();
        let index = self.keys.entry(event.key.clone()).or_default();
        match &event.body {
            // A second definition is refused by the writer; if one is recorded anyway,
            // the first stands.
            SettingsBody::SettingDefined(_) => {
                index.definition.get_or_insert(position);
            }
            SettingsBody::GlobalDefaultChanged { .. } => {
                index.changes.push(position);
                self.completed_changes.insert(event.change_id, position);
            }
            SettingsBody::ValuePinned { course_uuid, .. } => {
                index.pins.entry(*course_uuid).or_default().push(position);
            }
            SettingsBody::CourseOverrideSet { course_uuid, .. }
            | SettingsBody::CourseOverrideCleared { course_uuid } => {
                index
                    .overrides
                    .entry(*course_uuid)
                    .or_default()
                    .push(position);
            }
            SettingsBody::KillSwitchSet { .. } => index.kill_switches.push(position),
        }
        self.events.push(event);
        Applied::Added
    }

    fn version_of(&self, position: usize) -> i64 {
        self.events[position].settings_version
    }

    /// The positions among `positions` with version ≤ `version`.
    fn up_to<'p>(&self, positions: &'p [usize], version: i64) -> &'p [usize] {
        let end = positions.partition_point(|position| self.version_of(*position) <= version);
        &positions[..end]
    }

    /// The last change of `index` at or before `version` matching `intent`.
    fn last_change(
        &self,
        index: &KeyIndex,
        version: i64,
        matches: impl Fn(OverridesIntent, AppliesTo) -> bool,
    ) -> Option<usize> {
        self.up_to(&index.changes, version)
            .iter()
            .rev()
            .copied()
            .find(|position| match &self.events[*position].body {
                SettingsBody::GlobalDefaultChanged {
                    overrides,
                    applies_to,
                    ..
                } => matches(*overrides, *applies_to),
                _ => false,
            })
    }

    fn defined_at(
        &self,
        key: &str,
        version: i64,
    ) -> Result<(&KeyIndex, usize, &Definition), SettingsError> {
        let index = self
            .keys
            .get(key)
            .ok_or_else(|| SettingsError::UnknownKey {
                key: key.to_owned(),
            })?;
        let not_defined = || SettingsError::NotDefinedAt {
            key: key.to_owned(),
            version,
        };
        let position = index
            .definition
            .filter(|position| self.version_of(*position) <= version)
            .ok_or_else(not_defined)?;
        match &self.events[position].body {
            SettingsBody::SettingDefined(definition) => Ok((index, position, definition)),
            _ => Err(not_defined()),
        }
    }

    /// The value a course has without kill switch and overrides: its pin while no later
    /// `applies_to: all` change supersedes it, else the global default.
    fn resolve_base<'h>(
        &'h self,
        index: &KeyIndex,
        definition: &'h Definition,
        course: Option<CourseUuid>,
        version: i64,
    ) -> Found<'h> {
        let mut because = Vec::new();
        let last_all =
            self.last_change(index, version, |_, applies_to| applies_to == AppliesTo::All);
        let last_all_version = last_all.map_or(0, |position| self.version_of(position));
        let pins = course
            .and_then(|course| index.pins.get(&course))
            .map_or(&[][..], |pins| self.up_to(pins, version));
        // The latest pin whose change is recorded at or before `version`.
        let pin = pins.iter().rev().find_map(|position| {
            let change = *self
                .completed_changes
                .get(&self.events[*position].change_id)?;
            (self.version_of(change) <= version).then_some((*position, change))
        });
        if let Some((pin, change)) = pin {
            if self.version_of(pin) > last_all_version {
                if let SettingsBody::ValuePinned { value, .. } = &self.events[pin].body {
                    because.push(pin);
                    // The change that pinned it, and the later new_courses changes that
                    // left it in place.
                    because.extend(
                        self.up_to(&index.changes, version)
                            .iter()
                            .filter(|position| {
                                self.version_of(**position) >= self.version_of(change)
                            }),
                    );
                    return Found {
                        value,
                        source: Source::Pinned,
                        because,
                    };
                }
            }
            // Superseded: the pin, and the applies_to all change that superseded it.
            because.push(pin);
            because.extend(last_all);
        }
        let latest_change = self.up_to(&index.changes, version).last().copied();
        let value = match latest_change.map(|position| &self.events[position].body) {
            Some(SettingsBody::GlobalDefaultChanged { value, .. }) => value,
            _ => &definition.default,
        };
        because.extend(latest_change);
        Found {
            value,
            source: Source::Default,
            because,
        }
    }

    fn resolve_found(
        &self,
        key: &str,
        course: Option<CourseUuid>,
        version: i64,
    ) -> Result<(Found<'_>, &Definition), SettingsError> {
        let (index, defined_at, definition) = self.defined_at(key, version)?;
        let mut because = vec![defined_at];
        if let Some(kill) = self.up_to(&index.kill_switches, version).last().copied() {
            match (&self.events[kill].body, &definition.kill_value) {
                (SettingsBody::KillSwitchSet { engaged: true }, Some(kill_value)) => {
                    because.push(kill);
                    let found = Found {
                        value: kill_value,
                        source: Source::KillSwitch,
                        because,
                    };
                    return Ok((found, definition));
                }
                // A released switch explains why the kill value no longer applies.
                _ => because.push(kill),
            }
        }
        let overrides = course
            .and_then(|course| index.overrides.get(&course))
            .map_or(&[][..], |overrides| self.up_to(overrides, version));
        if let Some(latest) = overrides.last().copied() {
            let last_reset = self.last_change(index, version, |overrides, _| {
                overrides == OverridesIntent::Reset
            });
            let last_reset_version = last_reset.map_or(0, |position| self.version_of(position));
            match &self.events[latest].body {
                SettingsBody::CourseOverrideSet { value, .. }
                    if self.version_of(latest) > last_reset_version =>
                {
                    because.push(latest);
                    // The keep changes since, which left the override in place.
                    because.extend(
                        self.up_to(&index.changes, version)
                            .iter()
                            .filter(|position| **position > latest),
                    );
                    let found = Found {
                        value,
                        source: Source::Override,
                        because,
                    };
                    return Ok((found, definition));
                }
                SettingsBody::CourseOverrideSet { .. } => {
                    because.push(latest);
                    because.extend(last_reset);
                }
                _ => because.push(latest),
            }
        }
        let mut found = self.resolve_base(index, definition, course, version);
        because.append(&mut found.because);
        found.because = because;
        Ok((found, definition))
    }

    /// Resolves `key` for `course` (or with no course: kill switch, then global default)
    /// using only the events with version ≤ `as_of_version` (docs/design/operations.md §6.4).
    pub fn resolve(
        &self,
        key: &str,
        course: Option<CourseUuid>,
        as_of_version: i64,
    ) -> Result<Resolution, SettingsError> {
        let version = as_of_version.min(self.last_version());
        let (found, definition) = self.resolve_found(key, course, version)?;
        let mut because = found.because;
        because.sort_unstable();
        because.dedup();
        Ok(Resolution {
            value: typed(found.value, definition.value_type),
            source: found.source,
            settings_version: version,
            because: because
                .into_iter()
                .map(|position| self.events[position].clone())
                .collect(),
        })
    }

    /// The value of `key` for `course` as of `version`, without its explanation.
    pub fn value(
        &self,
        key: &str,
        course: Option<CourseUuid>,
        version: i64,
    ) -> Result<SettingValue, SettingsError> {
        let (found, definition) = self.resolve_found(key, course, version)?;
        Ok(typed(found.value, definition.value_type))
    }

    /// What a course resolves to just before a change, ignoring kill switch and
    /// overrides: the value a `new_courses` change pins.
    pub(crate) fn base_value(
        &self,
        key: &str,
        course: CourseUuid,
        version: i64,
    ) -> Result<SettingValue, SettingsError> {
        let (index, _, definition) = self.defined_at(key, version)?;
        let found = self.resolve_base(index, definition, Some(course), version);
        Ok(typed(found.value, definition.value_type))
    }

    /// An initial setting, typed, as of `version`; before its definition (version 0) or if
    /// it was redefined with another type, the §6.5 default.
    pub fn get<T: SettingType + Copy>(
        &self,
        key: Key<T>,
        course: Option<CourseUuid>,
        version: i64,
    ) -> T {
        self.value(key.name, course, version)
            .ok()
            .and_then(|value| T::from_value(&value))
            .unwrap_or(key.fallback)
    }

    /// Any setting, read as `T`.
    pub fn value_as<T: SettingType>(
        &self,
        key: &str,
        course: Option<CourseUuid>,
        version: i64,
    ) -> Result<T, SettingsError> {
        let value = self.value(key, course, version)?;
        T::from_value(&value).ok_or_else(|| SettingsError::WrongValueType {
            key: key.to_owned(),
            field: "value",
            expected: T::VALUE_TYPE.as_str(),
            got: value.to_text(),
        })
    }

    /// An `int` setting.
    pub fn int(
        &self,
        key: &str,
        course: Option<CourseUuid>,
        version: i64,
    ) -> Result<i64, SettingsError> {
        self.value_as(key, course, version)
    }

    /// A `bool` setting.
    pub fn bool(
        &self,
        key: &str,
        course: Option<CourseUuid>,
        version: i64,
    ) -> Result<bool, SettingsError> {
        self.value_as(key, course, version)
    }

    /// A `float` setting.
    pub fn float(
        &self,
        key: &str,
        course: Option<CourseUuid>,
        version: i64,
    ) -> Result<f64, SettingsError> {
        self.value_as(key, course, version)
    }

    /// A `string` setting.
    pub fn string(
        &self,
        key: &str,
        course: Option<CourseUuid>,
        version: i64,
    ) -> Result<String, SettingsError> {
        self.value_as(key, course, version)
    }

    /// Every defined key with its effective value for `course` (or its global value), as
    /// of the last version, in key order.
    pub fn list(&self, course: Option<CourseUuid>) -> Vec<ListedSetting> {
        let version = self.last_version();
        self.keys
            .keys()
            .filter_map(|key| {
                let (found, definition) = self.resolve_found(key, course, version).ok()?;
                let index = self.keys.get(key)?;
                let current_default = match self
                    .up_to(&index.changes, version)
                    .last()
                    .map(|position| &self.events[*position].body)
                {
                    Some(SettingsBody::GlobalDefaultChanged { value, .. }) => value,
                    _ => &definition.default,
                };
                Some(ListedSetting {
                    key: key.clone(),
                    definition: definition.clone(),
                    default: typed(current_default, definition.value_type),
                    value: typed(found.value, definition.value_type),
                    source: found.source,
                })
            })
            .collect()
    }

    /// The audit log: events matching every filter, oldest first, at most `limit`.
    pub fn audit(&self, filter: &AuditFilter) -> Vec<&SettingsEvent> {
        let start = filter.after_version.map_or(0, |after| {
            self.events
                .partition_point(|event| event.settings_version <= after)
        });
        self.events[start..]
            .iter()
            .filter(|event| filter.key.as_ref().is_none_or(|key| &event.key == key))
            .filter(|event| {
                filter
                    .course
                    .is_none_or(|course| event.body.course_uuid() == Some(course))
            })
            .filter(|event| {
                filter
                    .actor
                    .as_ref()
                    .is_none_or(|actor| &event.actor == actor)
            })
            .filter(|event| {
                filter
                    .from_micros
                    .is_none_or(|from| event.occurred_at_micros >= from)
            })
            .filter(|event| {
                filter
                    .to_micros
                    .is_none_or(|to| event.occurred_at_micros <= to)
            })
            .take(filter.limit)
            .collect()
    }
}

/// A recorded value as the key's type (an integer recorded for a float reads as a float).
fn typed(value: &SettingValue, value_type: ValueType) -> SettingValue {
    value.as_type(value_type).unwrap_or_else(|| value.clone())
}

#[cfg(test)]
mod tests;
