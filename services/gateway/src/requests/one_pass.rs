//! One pass from a body's bytes to its typed request, checked against the same schema the
//! error-collecting walker (`validate.rs`) reads (docs/design/api.md §1.3).
//!
//! [`Checked`] wraps serde_json's streaming deserializer and stands between it and the
//! typed request's `Deserialize`: every value the typed side asks for is first checked
//! against its schema node (type, range, length, format, unknown and repeated members,
//! required members, array sizes), so no `serde_json::Value` is built for the body and no
//! pointer string is spelled. It stops at the first problem: a body it refuses goes to
//! the walker, which lists every error with its pointer. So the rule this module must keep
//! is one-sided: it accepts only what the walker accepts, and builds the same typed
//! request from it (tests/requests_proptest.rs checks both on mutated recordings).
//!
//! Schema nodes whose rules read a whole `Value` (a `Checked` rule, an object rule,
//! `spy_info`, setting scalars) are read into a `Value` (refusing repeated keys), checked by
//! the walker, and deserialized from it: small, and rare on the hot endpoints.

use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

use super::validate::{self, ObjectSchema, Schema};

/// The message of every refusal: the walker, run next, says what is wrong and where.
const REFUSED: &str = "refused by the schema";

fn refused<E: de::Error>() -> E {
    E::custom(REFUSED)
}

/// Whether a schema node is checked while streaming (`true`) or read into a `Value` first.
fn is_streamed(schema: &Schema) -> bool {
    match schema {
        Schema::Object(object) => object.check.is_none() && object.fields.len() <= 64,
        Schema::Checked { .. } | Schema::SpyInfo | Schema::Scalar => false,
        Schema::Array { .. }
        | Schema::Bool
        | Schema::Integer { .. }
        | Schema::UnitNumber
        | Schema::Str { .. }
        | Schema::Uuid
        | Schema::Datetime
        | Schema::CnxIdentity
        | Schema::Enum(_) => true,
    }
}

/// A deserializer that checks what it hands out against `schema`.
pub(super) struct Checked<'s, D> {
    schema: &'s Schema,
    inner: D,
}

impl<'s, D> Checked<'s, D> {
    /// `inner`, checked against `schema`.
    pub(super) fn new(schema: &'s Schema, inner: D) -> Checked<'s, D> {
        Checked { schema, inner }
    }
}

impl<'s, 'de, D: Deserializer<'de>> Checked<'s, D> {
    /// The value of a node that is not streamed, checked by the walker.
    fn buffered(self) -> Result<Value, D::Error> {
        let value = super::json_body::deserialize_strict_value(self.inner)?;
        match validate::validate(self.schema, &value) {
            Ok(()) => Ok(value),
            Err(_) => Err(refused()),
        }
    }

    fn checking<V>(&self, visitor: V) -> Checking<'s, V> {
        Checking {
            schema: self.schema,
            visitor,
        }
    }
}

// Every request of the typed side is answered the same way: a streamed node lets the
// inner deserializer say what the value is (`deserialize_any`) and checks it on the way
// through; a buffered node answers from its checked `Value`.
macro_rules! forward_checked {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            if is_streamed(self.schema) {
                let checking = self.checking(visitor);
                self.inner.deserialize_any(checking)
            } else {
                self.buffered()?.$method(visitor).map_err(de::Error::custom)
            }
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Checked<'_, D> {
    type Error = D::Error;

    forward_checked! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_unit deserialize_seq
        deserialize_map deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        // No schema accepts null: a member that may be left out is absent, never null, so
        // a present value is always `Some` and is checked as such.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        // The API's enums are strings (unit variants); an enum is whatever string passed
        // its schema.
        if is_streamed(self.schema) {
            let text: String = self.inner.deserialize_any(Checking {
                schema: self.schema,
                visitor: StringVisitor,
            })?;
            visitor.visit_enum(IntoDeserializer::<D::Error>::into_deserializer(text))
        } else {
            self.buffered()?
                .deserialize_enum(name, variants, visitor)
                .map_err(de::Error::custom)
        }
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Reads a string as owned text.
struct StringVisitor;

impl Visitor<'_> for StringVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        Ok(text.to_owned())
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<String, E> {
        Ok(text)
    }
}

/// The visitor handed to the inner deserializer: checks the value it is shown against
/// `schema`, then shows it to the typed side's `visitor`.
struct Checking<'s, V> {
    schema: &'s Schema,
    visitor: V,
}

impl<V> Checking<'_, V> {
    fn number_fits(&self, number: Number) -> bool {
        match (self.schema, number) {
            (Schema::Integer { min, max }, Number::Int(value)) => (*min..=*max).contains(&value),
            (Schema::Integer { min, max }, Number::Uint(value)) => {
                i64::try_from(value).is_ok_and(|value| (*min..=*max).contains(&value))
            }
            // serde_json keeps a number written with '.' or an exponent as f64.
            (Schema::Integer { .. }, Number::Float(_)) => false,
            (Schema::UnitNumber, Number::Int(value)) => (0..=1).contains(&value),
            (Schema::UnitNumber, Number::Uint(value)) => value <= 1,
            (Schema::UnitNumber, Number::Float(value)) => (0.0..=1.0).contains(&value),
            _ => false,
        }
    }

    fn text_fits(&self, text: &str) -> bool {
        match self.schema {
            Schema::Str {
                min_chars,
                max_chars,
            } => {
                let n_chars = text.chars().take(max_chars + 1).count();
                (*min_chars..=*max_chars).contains(&n_chars)
            }
            Schema::Uuid => biglearn_domain::ids::parse_hyphenated_uuid(text).is_some(),
            Schema::Datetime => biglearn_domain::time::parse_datetime(text).is_ok(),
            Schema::CnxIdentity => validate::is_cnx_identity(text),
            Schema::Enum(names) => names.contains(&text),
            _ => false,
        }
    }
}

#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    Uint(u64),
    Float(f64),
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Checking<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<V::Value, E> {
        match self.schema {
            Schema::Bool => self.visitor.visit_bool(value),
            _ => Err(refused()),
        }
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<V::Value, E> {
        if self.number_fits(Number::Int(value)) {
            self.visitor.visit_i64(value)
        } else {
            Err(refused())
        }
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<V::Value, E> {
        if self.number_fits(Number::Uint(value)) {
            self.visitor.visit_u64(value)
        } else {
            Err(refused())
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<V::Value, E> {
        if self.number_fits(Number::Float(value)) {
            self.visitor.visit_f64(value)
        } else {
            Err(refused())
        }
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<V::Value, E> {
        if self.text_fits(text) {
            self.visitor.visit_str(text)
        } else {
            Err(refused())
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<V::Value, E> {
        if self.text_fits(text) {
            self.visitor.visit_borrowed_str(text)
        } else {
            Err(refused())
        }
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<V::Value, E> {
        if self.text_fits(&text) {
            self.visitor.visit_string(text)
        } else {
            Err(refused())
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        Err(refused())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let Schema::Array {
            items,
            min_items,
            max_items,
        } = self.schema
        else {
            return Err(refused());
        };
        self.visitor.visit_seq(CheckedSeq {
            inner: seq,
            items,
            min_items: *min_items,
            max_items: *max_items,
            n_items: 0,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let Schema::Object(object) = self.schema else {
            return Err(refused());
        };
        self.visitor.visit_map(CheckedMap {
            inner: map,
            object,
            seen: 0,
            current: None,
        })
    }
}

/// An array's elements, each checked against `items`, and their number.
struct CheckedSeq<'s, A> {
    inner: A,
    items: &'s Schema,
    min_items: usize,
    max_items: usize,
    n_items: usize,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for CheckedSeq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let element = self.inner.next_element_seed(CheckedSeed {
            schema: self.items,
            seed,
        })?;
        match element {
            Some(_) if self.n_items == self.max_items => Err(refused()),
            Some(element) => {
                self.n_items += 1;
                Ok(Some(element))
            }
            None if self.n_items < self.min_items => Err(refused()),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// An object's members: each key must be a member of the schema and appear once; each
/// value is checked against its member's schema; at the end every required member must
/// have been seen.
struct CheckedMap<'s, A> {
    inner: A,
    object: &'s ObjectSchema,
    /// Bit `i`: member `i` of the schema was seen (at most 64 members: `is_streamed`).
    seen: u64,
    /// The member whose value comes next.
    current: Option<usize>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for CheckedMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(member) = self.inner.next_key_seed(MemberOf(self.object))? else {
            let missing = self
                .object
                .fields
                .iter()
                .enumerate()
                .any(|(index, field)| field.required && self.seen & (1 << index) == 0);
            return if missing { Err(refused()) } else { Ok(None) };
        };
        if self.seen & (1 << member) != 0 {
            return Err(refused());
        }
        self.seen |= 1 << member;
        self.current = Some(member);
        let name: &'static str = self.object.fields[member].name;
        seed.deserialize(BorrowedStrDeserializer::new(name))
            .map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let member = self.current.take().ok_or_else(refused::<A::Error>)?;
        self.inner.next_value_seed(CheckedSeed {
            schema: self.object.fields[member].schema,
            seed,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// Reads an object key as the index of the schema member it names; an unknown key is
/// refused.
struct MemberOf<'s>(&'s ObjectSchema);

impl<'de> DeserializeSeed<'de> for MemberOf<'_> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for MemberOf<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member of the schema")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        self.0
            .fields
            .iter()
            .position(|field| field.name == key)
            .ok_or_else(refused)
    }
}

/// A seed of the typed side, fed through [`Checked`].
struct CheckedSeed<'s, T> {
    schema: &'s Schema,
    seed: T,
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for CheckedSeed<'_, T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T::Value, D::Error> {
        self.seed.deserialize(Checked {
            schema: self.schema,
            inner: deserializer,
        })
    }
}
