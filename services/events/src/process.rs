//! The process's schema-registry view: the framing its writers use and the ids its decoders know (installed once at start).
//!
//! Without a registry (the default) records are single-object framed and Confluent-framed
//! values are undecodable. `biglearn … --schema-registry` registers the schemas at start and
//! installs the ids it was given here: the record builders ([`crate::course_event_record`],
//! [`crate::ecosystem_event_record`]) then write Confluent framing, and every decoder that
//! takes no explicit lookup reads both framings. Single-object values never consult it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::schemas::SchemaFamily;
use crate::wire::{SchemaLookup, WireFormat, WriterSchema};

/// What a registry said at start: the current schema's id per family, and every id known.
pub struct RegistryView {
    /// The id of each family's current schema (what writers frame with).
    pub current_ids: HashMap<SchemaFamily, u32>,
    /// Id → writer schema, for decoding.
    pub lookup: Arc<dyn SchemaLookup>,
}

static VIEW: RwLock<Option<Arc<RegistryView>>> = RwLock::new(None);

/// Installs (or, with `None`, removes) the process's registry view.
pub fn install_registry_view(view: Option<RegistryView>) {
    let mut slot = VIEW
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *slot = view.map(Arc::new);
}

fn current_view() -> Option<Arc<RegistryView>> {
    VIEW.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// The framing writers of `family` use: Confluent with the registered id, else single-object.
pub fn process_format(family: SchemaFamily) -> WireFormat {
    current_view()
        .and_then(|view| view.current_ids.get(&family).copied())
        .map_or(WireFormat::SingleObject, |schema_id| {
            WireFormat::Confluent { schema_id }
        })
}

/// The lookup of the installed view (every id unknown without one).
#[derive(Clone, Copy, Default, Debug)]
pub struct ProcessLookup;

impl SchemaLookup for ProcessLookup {
    fn writer_schema(&self, schema_id: u32) -> Option<Arc<WriterSchema>> {
        current_view().and_then(|view| view.lookup.writer_schema(schema_id))
    }
}
