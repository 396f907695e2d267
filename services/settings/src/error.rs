//! [`SettingsError`]: why a settings command was refused or a record could not be read.

/// Why a command produced no events, a lookup had no answer, or a record was unreadable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("unknown setting key {key:?}: define it first (biglearn settings list shows the defined keys)")]
    UnknownKey { key: String },
    #[error("setting key {key:?} is not defined as of settings version {version}")]
    NotDefinedAt { key: String, version: i64 },
    #[error("setting key {key:?} is already defined (settings version {defined_at}); a definition never changes, change its default instead")]
    AlreadyDefined { key: String, defined_at: i64 },
    #[error("{field} of {key:?} must be a {expected} value, got {got}")]
    WrongValueType {
        key: String,
        /// The request field holding the value (`value`, `default`, `kill_value`).
        field: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("setting key {key:?} has scope global: it has one value for every course, so it takes no course override")]
    GlobalScopeOverride { key: String },
    #[error("setting key {key:?} has scope global: applies_to new_courses would pin per-course values; use applies_to all")]
    GlobalScopePin { key: String },
    #[error("setting key {key:?} has no kill_value, so it has no kill switch")]
    NoKillValue { key: String },
    #[error("invalid setting key {key:?}: expected words of a-z, 0-9 and _ separated by single dots, 1 to 200 characters")]
    InvalidKey { key: String },
    #[error("settings record is undecodable: {detail}")]
    Undecodable { detail: String },
    #[error("settings event cannot be encoded: {detail}")]
    Unencodable { detail: String },
}

impl SettingsError {
    /// The request field an admin should fix, as a JSON pointer (`/key`, `/value`, …).
    pub fn field_pointer(&self) -> String {
        match self {
            SettingsError::WrongValueType { field, .. } => format!("/{field}"),
            SettingsError::GlobalScopeOverride { .. } => "/course_uuid".into(),
            SettingsError::GlobalScopePin { .. } => "/applies_to".into(),
            SettingsError::NoKillValue { .. } => "/engaged".into(),
            SettingsError::NotDefinedAt { .. } => "/as_of_version".into(),
            SettingsError::Undecodable { .. } | SettingsError::Unencodable { .. } => String::new(),
            SettingsError::UnknownKey { .. }
            | SettingsError::AlreadyDefined { .. }
            | SettingsError::InvalidKey { .. } => "/key".into(),
        }
    }
}
