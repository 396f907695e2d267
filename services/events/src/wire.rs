//! The two value framings (single-object, Confluent), writer-schema lookup, and resolution of older writers to the current schema.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::Schema;

use crate::error::{DecodeError, EncodeError};
use crate::schemas::{fingerprint, SchemaFamily};

/// First two bytes of an Avro single-object encoded value.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// First byte of a Confluent-framed value.
pub const CONFLUENT_MAGIC: u8 = 0x00;

/// How a value is framed on the wire (docs/design/events.md §4.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WireFormat {
    /// `0xC3 0x01`, the writer schema's 8-byte little-endian fingerprint, the body.
    SingleObject,
    /// `0x00`, the registry's schema id (big-endian u32), the body.
    Confluent {
        /// The id the registry gave the current schema under `<topic>-value`.
        schema_id: u32,
    },
}

impl WireFormat {
    /// The `bl-encoding` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            WireFormat::SingleObject => crate::record::ENCODING_SINGLE_OBJECT,
            WireFormat::Confluent { .. } => crate::record::ENCODING_CONFLUENT,
        }
    }

    /// A buffer holding only the frame's prefix, with room for a body of `body_hint` bytes.
    pub(crate) fn start(self, family: SchemaFamily, body_hint: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(10 + body_hint);
        match self {
            WireFormat::SingleObject => {
                buf.extend_from_slice(&SINGLE_OBJECT_MAGIC);
                buf.extend_from_slice(&family.current().fingerprint.to_le_bytes());
            }
            WireFormat::Confluent { schema_id } => {
                buf.push(CONFLUENT_MAGIC);
                buf.extend_from_slice(&schema_id.to_be_bytes());
            }
        }
        buf
    }
}

/// A writer schema found through a registry, with its fingerprint computed once.
#[derive(Debug)]
pub struct WriterSchema {
    schema: Schema,
    fingerprint: u64,
}

impl WriterSchema {
    /// Wraps a parsed schema.
    pub fn new(schema: Schema) -> WriterSchema {
        WriterSchema {
            fingerprint: fingerprint(&schema),
            schema,
        }
    }

    /// Parses Avro JSON text, as a registry returns it.
    pub fn parse(json: &str) -> Result<WriterSchema, apache_avro::Error> {
        Schema::parse_str(json).map(WriterSchema::new)
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Its CRC-64-AVRO fingerprint.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// Schema id → writer schema, for Confluent-framed values. A registry client implements
/// this (and caches: it is called once per record).
pub trait SchemaLookup: Send + Sync {
    /// The schema registered under `schema_id`, or `None` if it is unknown.
    fn writer_schema(&self, schema_id: u32) -> Option<Arc<WriterSchema>>;
}

/// The lookup without a registry: every schema id is unknown.
#[derive(Clone, Copy, Default, Debug)]
pub struct NoSchemaRegistry;

impl SchemaLookup for NoSchemaRegistry {
    fn writer_schema(&self, _schema_id: u32) -> Option<Arc<WriterSchema>> {
        None
    }
}

/// A fixed id → schema table: a stub registry for tests and small deployments.
#[derive(Default, Debug)]
pub struct InMemorySchemaLookup {
    by_id: HashMap<u32, Arc<WriterSchema>>,
}

impl InMemorySchemaLookup {
    /// An empty table.
    pub fn new() -> InMemorySchemaLookup {
        InMemorySchemaLookup::default()
    }

    /// Registers `schema` under `schema_id`, replacing any earlier entry.
    pub fn insert(&mut self, schema_id: u32, schema: Schema) {
        self.by_id
            .insert(schema_id, Arc::new(WriterSchema::new(schema)));
    }
}

impl SchemaLookup for InMemorySchemaLookup {
    fn writer_schema(&self, schema_id: u32) -> Option<Arc<WriterSchema>> {
        self.by_id.get(&schema_id).cloned()
    }
}

/// How to read a body that was not written with the current schema.
pub(crate) enum OlderWriter<'s> {
    Embedded(&'s Schema),
    Registered(Arc<WriterSchema>),
}

impl OlderWriter<'_> {
    fn schema(&self) -> &Schema {
        match self {
            OlderWriter::Embedded(schema) => schema,
            OlderWriter::Registered(writer) => writer.schema(),
        }
    }
}

/// A value with its framing removed.
pub(crate) enum Unframed<'a> {
    /// Written with the current schema: the body is ready for the fast codec.
    Current(&'a [u8]),
    /// Written with another schema: resolve before decoding.
    Older {
        writer: OlderWriter<'static>,
        body: &'a [u8],
    },
}

/// Strips the framing and finds the writer schema.
pub(crate) fn unframe<'a>(
    family: SchemaFamily,
    bytes: &'a [u8],
    lookup: &dyn SchemaLookup,
) -> Result<Unframed<'a>, DecodeError> {
    let current = family.current();
    match bytes {
        [0xC3, 0x01, rest @ ..] => {
            let (Some(fingerprint_bytes), Some(body)) = (rest.get(..8), rest.get(8..)) else {
                return Err(DecodeError::undecodable(
                    "single-object value shorter than its 10-byte header",
                ));
            };
            let mut le = [0u8; 8];
            le.copy_from_slice(fingerprint_bytes);
            let writer_fingerprint = u64::from_le_bytes(le);
            if writer_fingerprint == current.fingerprint {
                return Ok(Unframed::Current(body));
            }
            match family.version_by_fingerprint(writer_fingerprint) {
                Some(embedded) => Ok(Unframed::Older {
                    writer: OlderWriter::Embedded(&embedded.schema),
                    body,
                }),
                None => Err(DecodeError::undecodable(format!(
                    "writer schema fingerprint {writer_fingerprint:016x} is not a released {} version",
                    family.full_name()
                ))),
            }
        }
        [CONFLUENT_MAGIC, rest @ ..] => {
            let (Some(id_bytes), Some(body)) = (rest.get(..4), rest.get(4..)) else {
                return Err(DecodeError::undecodable(
                    "confluent value shorter than its 5-byte header",
                ));
            };
            let schema_id = u32::from_be_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]]);
            let Some(writer) = lookup.writer_schema(schema_id) else {
                return Err(DecodeError::undecodable(format!(
                    "schema id {schema_id} is unknown to the schema lookup"
                )));
            };
            if writer.fingerprint() == current.fingerprint {
                Ok(Unframed::Current(body))
            } else {
                Ok(Unframed::Older {
                    writer: OlderWriter::Registered(writer),
                    body,
                })
            }
        }
        [] => Err(DecodeError::undecodable("empty value")),
        [first, ..] => Err(DecodeError::undecodable(format!(
            "unknown framing: first byte {first:#04x} is neither 0xc3 (single-object) nor 0x00 (confluent)"
        ))),
    }
}

/// Reads a body written with an older schema into a [`Value`] of that writer schema.
fn read_older_value(writer: &OlderWriter<'_>, body: &[u8]) -> Result<Value, DecodeError> {
    let mut remaining = body;
    let value = apache_avro::from_avro_datum(writer.schema(), &mut remaining, None)
        .map_err(|error| DecodeError::undecodable(format!("writer schema body: {error}")))?;
    if !remaining.is_empty() {
        return Err(DecodeError::undecodable(format!(
            "{} trailing bytes after the body",
            remaining.len()
        )));
    }
    Ok(value)
}

/// The body in the current schema's binary form: borrowed when it already is, otherwise
/// resolved by apache-avro (the reference implementation) and re-encoded.
///
/// `check_value` sees the writer's value before resolution, so that an envelope with an
/// unknown `event_type` is reported as such even if its payload branch cannot resolve.
pub(crate) fn current_body<'a>(
    family: SchemaFamily,
    unframed: Unframed<'a>,
    check_value: impl FnOnce(&Value) -> Result<(), DecodeError>,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    match unframed {
        Unframed::Current(body) => Ok(Cow::Borrowed(body)),
        Unframed::Older { writer, body } => {
            let value = read_older_value(&writer, body)?;
            check_value(&value)?;
            let current = &family.current().schema;
            let resolved = value.resolve(current).map_err(|error| {
                DecodeError::undecodable(format!(
                    "cannot resolve the writer schema to the current {}: {error}",
                    family.full_name()
                ))
            })?;
            apache_avro::to_avro_datum(current, resolved)
                .map(Cow::Owned)
                .map_err(|error| DecodeError::undecodable(format!("re-encoding: {error}")))
        }
    }
}

/// The string field `name` of a record value, if present.
pub(crate) fn record_string_field<'v>(value: &'v Value, name: &str) -> Option<&'v str> {
    let Value::Record(fields) = value else {
        return None;
    };
    fields
        .iter()
        .find(|(field, _)| field == name)
        .and_then(|(_, value)| match value {
            Value::String(text) => Some(text.as_str()),
            _ => None,
        })
}

/// Encodes a generic value of `family` (validated against the current schema).
pub fn encode_value(
    family: SchemaFamily,
    value: Value,
    format: WireFormat,
) -> Result<Vec<u8>, EncodeError> {
    let current = &family.current().schema;
    let body = apache_avro::to_avro_datum(current, value).map_err(|source| EncodeError {
        schema: family.full_name(),
        source,
    })?;
    let mut buf = format.start(family, body.len());
    buf.extend_from_slice(&body);
    Ok(buf)
}

/// Decodes a value of `family` in either framing into a generic value of the current schema.
pub fn decode_value(
    family: SchemaFamily,
    bytes: &[u8],
    lookup: &dyn SchemaLookup,
) -> Result<Value, DecodeError> {
    let body = current_body(family, unframe(family, bytes, lookup)?, |_| Ok(()))?;
    let current = &family.current().schema;
    let mut remaining: &[u8] = &body;
    let value = apache_avro::from_avro_datum(current, &mut remaining, None)
        .map_err(|error| DecodeError::undecodable(format!("body: {error}")))?;
    if remaining.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::undecodable(format!(
            "{} trailing bytes after the body",
            remaining.len()
        )))
    }
}
