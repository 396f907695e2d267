//! Setting values and the closed vocabularies of settings events: value types, scopes, intents.

use serde_json::Value;

/// The type of a setting's values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ValueType {
    Bool,
    Int,
    Float,
    String,
}

impl ValueType {
    /// Every type, in the order of the Avro enum's symbols.
    pub const ALL: [ValueType; 4] = [
        ValueType::Bool,
        ValueType::Int,
        ValueType::Float,
        ValueType::String,
    ];

    /// The wire and Avro symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Bool => "bool",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::String => "string",
        }
    }

    /// Parses a symbol.
    pub fn parse(name: &str) -> Option<ValueType> {
        ValueType::ALL
            .into_iter()
            .find(|value_type| value_type.as_str() == name)
    }
}

/// Whether a setting may differ per course.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Scope {
    /// One value for the whole deployment: no overrides, no pins.
    Global,
    /// A global default that courses may override.
    Course,
}

impl Scope {
    /// Every scope, in the order of the Avro enum's symbols.
    pub const ALL: [Scope; 2] = [Scope::Global, Scope::Course];

    /// The wire and Avro symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Course => "course",
        }
    }
}

/// What a global default change does to the course overrides set before it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum OverridesIntent {
    /// Existing overrides keep winning.
    Keep,
    /// Every override set before the change stops applying.
    Reset,
}

impl OverridesIntent {
    /// Every intent, in the order of the Avro enum's symbols.
    pub const ALL: [OverridesIntent; 2] = [OverridesIntent::Keep, OverridesIntent::Reset];

    /// The wire and Avro symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            OverridesIntent::Keep => "keep",
            OverridesIntent::Reset => "reset",
        }
    }
}

/// Which courses a global default change reaches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AppliesTo {
    /// Every course without an effective override.
    All,
    /// Only courses created after the change: existing ones are pinned at their value.
    NewCourses,
}

impl AppliesTo {
    /// Every choice, in the order of the Avro enum's symbols.
    pub const ALL: [AppliesTo; 2] = [AppliesTo::All, AppliesTo::NewCourses];

    /// The wire and Avro symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            AppliesTo::All => "all",
            AppliesTo::NewCourses => "new_courses",
        }
    }
}

/// One setting value, typed.
#[derive(Clone, PartialEq, Debug)]
pub enum SettingValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl SettingValue {
    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            SettingValue::Bool(_) => ValueType::Bool,
            SettingValue::Int(_) => ValueType::Int,
            SettingValue::Float(_) => ValueType::Float,
            SettingValue::String(_) => ValueType::String,
        }
    }

    /// A JSON value read as `value_type`: `int` takes integers written without fraction
    /// or exponent, `float` takes any number; anything else is `None`.
    pub fn from_json(value_type: ValueType, json: &Value) -> Option<SettingValue> {
        match (value_type, json) {
            (ValueType::Bool, Value::Bool(flag)) => Some(SettingValue::Bool(*flag)),
            (ValueType::Int, Value::Number(number)) => number.as_i64().map(SettingValue::Int),
            (ValueType::Float, Value::Number(number)) => number.as_f64().map(SettingValue::Float),
            (ValueType::String, Value::String(text)) => Some(SettingValue::String(text.clone())),
            _ => None,
        }
    }

    /// The JSON text of a recorded value (the Avro fields hold JSON text), typed by its
    /// JSON form: a number with a fraction or exponent is a float.
    pub fn from_text(text: &str) -> Option<SettingValue> {
        match serde_json::from_str::<Value>(text).ok()? {
            Value::Bool(flag) => Some(SettingValue::Bool(flag)),
            Value::Number(number) => match number.as_i64() {
                Some(int) => Some(SettingValue::Int(int)),
                None => number.as_f64().map(SettingValue::Float),
            },
            Value::String(text) => Some(SettingValue::String(text)),
            _ => None,
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            SettingValue::Bool(flag) => Value::Bool(*flag),
            SettingValue::Int(int) => Value::from(*int),
            SettingValue::Float(float) => Value::from(*float),
            SettingValue::String(text) => Value::String(text.clone()),
        }
    }

    /// The JSON text recorded in events. A float always carries a fraction or an
    /// exponent (`3.0`), so that reading it back gives a float again.
    pub fn to_text(&self) -> String {
        self.to_json().to_string()
    }

    /// This value seen as `value_type`: an integer recorded for a float setting reads as
    /// a float; any other mismatch is `None`.
    pub fn as_type(&self, value_type: ValueType) -> Option<SettingValue> {
        match (self, value_type) {
            (SettingValue::Int(int), ValueType::Float) => Some(SettingValue::Float(*int as f64)),
            (value, value_type) if value.value_type() == value_type => Some(value.clone()),
            _ => None,
        }
    }
}

impl std::fmt::Display for SettingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value_type: ValueType, json: Value, expected: Option<SettingValue>) {
        let got = SettingValue::from_json(value_type, &json);
        assert_eq!(got, expected, "{} from {json}", value_type.as_str());
        if let Some(value) = got {
            assert_eq!(
                SettingValue::from_text(&value.to_text()),
                Some(value.clone()),
                "text round trip of {value}"
            );
        }
    }

    #[test]
    fn json_values_are_read_as_their_declared_type() {
        check(ValueType::Bool, json!(true), Some(SettingValue::Bool(true)));
        check(ValueType::Bool, json!(1), None);
        check(ValueType::Int, json!(3), Some(SettingValue::Int(3)));
        check(
            ValueType::Int,
            json!(-20_000_000),
            Some(SettingValue::Int(-20_000_000)),
        );
        check(ValueType::Int, json!(3.5), None);
        check(ValueType::Int, json!("3"), None);
        check(ValueType::Float, json!(0.1), Some(SettingValue::Float(0.1)));
        check(ValueType::Float, json!(3), Some(SettingValue::Float(3.0)));
        check(ValueType::Float, json!(true), None);
        check(
            ValueType::String,
            json!("local_query"),
            Some(SettingValue::String("local_query".into())),
        );
        check(ValueType::String, json!(null), None);
        check(ValueType::String, json!(["a"]), None);
    }

    #[test]
    fn floats_keep_their_type_through_text_and_ints_widen_to_floats() {
        assert_eq!(SettingValue::Float(3.0).to_text(), "3.0");
        assert_eq!(SettingValue::from_text("3"), Some(SettingValue::Int(3)));
        assert_eq!(
            SettingValue::Int(3).as_type(ValueType::Float),
            Some(SettingValue::Float(3.0))
        );
        assert_eq!(SettingValue::Float(3.0).as_type(ValueType::Int), None);
        assert_eq!(SettingValue::from_text("{}"), None);
        assert_eq!(SettingValue::from_text("not json"), None);
    }
}
