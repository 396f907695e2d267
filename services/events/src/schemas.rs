//! The embedded `.avsc` files of `schemas/`: every released version of every family, parsed once, with fingerprints.

use std::sync::OnceLock;

use apache_avro::rabin::Rabin;
use apache_avro::Schema;

/// One schema folder of `schemas/`: a record type with its released versions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SchemaFamily {
    /// `org.openstax.biglearn.v1.CourseEvent`, `<prefix>.course-events` (and `sparfa-responses`).
    CourseEvent,
    /// `org.openstax.biglearn.v1.EcosystemEvent`, `<prefix>.ecosystem-events`.
    EcosystemEvent,
    /// `org.openstax.biglearn.v1.DeadLetter`, `<prefix>.dlq`.
    DeadLetter,
    /// `org.openstax.biglearn.v1.SettingsEvent`, `<prefix>.settings`.
    SettingsEvent,
    /// `org.openstax.biglearn.v1.ModelComputed`, `<prefix>.models`.
    ModelComputed,
    /// `org.openstax.biglearn.v1.ResultRecord`, `<prefix>.results`.
    ResultRecord,
}

/// The JSON text of every released version, oldest first, per family.
///
/// Released versions are never edited; a change adds `v<n+1>.avsc` and a line here.
const SOURCES: [(SchemaFamily, &[&str]); 6] = [
    (
        SchemaFamily::CourseEvent,
        &[
            include_str!("../../../schemas/course_event/v1.avsc"),
            include_str!("../../../schemas/course_event/v2.avsc"),
        ],
    ),
    (
        SchemaFamily::EcosystemEvent,
        &[
            include_str!("../../../schemas/ecosystem_event/v1.avsc"),
            include_str!("../../../schemas/ecosystem_event/v2.avsc"),
        ],
    ),
    (
        SchemaFamily::DeadLetter,
        &[include_str!("../../../schemas/dead_letter/v1.avsc")],
    ),
    (
        SchemaFamily::SettingsEvent,
        &[include_str!("../../../schemas/settings_event/v1.avsc")],
    ),
    (
        SchemaFamily::ModelComputed,
        &[include_str!("../../../schemas/model_computed/v1.avsc")],
    ),
    (
        SchemaFamily::ResultRecord,
        &[include_str!("../../../schemas/result_record/v1.avsc")],
    ),
];

/// One released version of one family.
#[derive(Debug)]
pub struct EmbeddedSchema {
    /// The family (schema folder).
    pub family: SchemaFamily,
    /// 1 for `v1.avsc`, and so on.
    pub version: u32,
    /// The `.avsc` text as released.
    pub json: &'static str,
    /// The parsed schema.
    pub schema: Schema,
    /// CRC-64-AVRO (Rabin) fingerprint of the parsing canonical form.
    pub fingerprint: u64,
}

impl SchemaFamily {
    /// Every family, in the order of the `schemas/` listing above.
    pub const ALL: [SchemaFamily; 6] = [
        SchemaFamily::CourseEvent,
        SchemaFamily::EcosystemEvent,
        SchemaFamily::DeadLetter,
        SchemaFamily::SettingsEvent,
        SchemaFamily::ModelComputed,
        SchemaFamily::ResultRecord,
    ];

    /// The folder under `schemas/`.
    pub fn folder(self) -> &'static str {
        match self {
            SchemaFamily::CourseEvent => "course_event",
            SchemaFamily::EcosystemEvent => "ecosystem_event",
            SchemaFamily::DeadLetter => "dead_letter",
            SchemaFamily::SettingsEvent => "settings_event",
            SchemaFamily::ModelComputed => "model_computed",
            SchemaFamily::ResultRecord => "result_record",
        }
    }

    /// The record's full Avro name.
    pub fn full_name(self) -> &'static str {
        match self {
            SchemaFamily::CourseEvent => "org.openstax.biglearn.v1.CourseEvent",
            SchemaFamily::EcosystemEvent => "org.openstax.biglearn.v1.EcosystemEvent",
            SchemaFamily::DeadLetter => "org.openstax.biglearn.v1.DeadLetter",
            SchemaFamily::SettingsEvent => "org.openstax.biglearn.v1.SettingsEvent",
            SchemaFamily::ModelComputed => "org.openstax.biglearn.v1.ModelComputed",
            SchemaFamily::ResultRecord => "org.openstax.biglearn.v1.ResultRecord",
        }
    }

    /// Every released version, oldest first.
    pub fn versions(self) -> &'static [EmbeddedSchema] {
        let idx = SchemaFamily::ALL
            .iter()
            .position(|family| *family == self)
            .unwrap_or_default();
        &embedded()[idx]
    }

    /// The latest version: what this build writes and reads into.
    pub fn current(self) -> &'static EmbeddedSchema {
        let versions = self.versions();
        &versions[versions.len() - 1]
    }

    /// The released version with this fingerprint, if any.
    pub fn version_by_fingerprint(self, fingerprint: u64) -> Option<&'static EmbeddedSchema> {
        self.versions()
            .iter()
            .find(|embedded| embedded.fingerprint == fingerprint)
    }
}

/// CRC-64-AVRO fingerprint of a schema's parsing canonical form, as a number
/// (single-object encoding writes its little-endian bytes).
pub fn fingerprint(schema: &Schema) -> u64 {
    let digest = schema.fingerprint::<Rabin>();
    let mut le = [0u8; 8];
    le.copy_from_slice(&digest.bytes[..8]);
    u64::from_le_bytes(le)
}

/// Parses every embedded version once.
///
/// # Panics
///
/// If an embedded `.avsc` does not parse, which the unit tests rule out for every build.
fn embedded() -> &'static Vec<Vec<EmbeddedSchema>> {
    static EMBEDDED: OnceLock<Vec<Vec<EmbeddedSchema>>> = OnceLock::new();
    EMBEDDED.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(family, texts)| {
                texts
                    .iter()
                    .enumerate()
                    .map(|(idx, json)| {
                        let schema = Schema::parse_str(json).unwrap_or_else(|error| {
                            panic!(
                                "embedded schema {} v{} is invalid: {error}",
                                family.folder(),
                                idx + 1
                            )
                        });
                        EmbeddedSchema {
                            family: *family,
                            version: idx as u32 + 1,
                            json,
                            fingerprint: fingerprint(&schema),
                            schema,
                        }
                    })
                    .collect()
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_parses_with_its_family_name() {
        for family in SchemaFamily::ALL {
            assert!(!family.versions().is_empty());
            for embedded in family.versions() {
                assert_eq!(embedded.family, family);
                let name = embedded.schema.name().map(|name| name.fullname(None));
                assert_eq!(name.as_deref(), Some(family.full_name()));
            }
        }
    }

    #[test]
    fn embedded_files_match_the_schema_folders() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
        for family in SchemaFamily::ALL {
            let folder = std::path::Path::new(root).join(family.folder());
            let mut n_files = 0;
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                assert_eq!(path.extension().and_then(|ext| ext.to_str()), Some("avsc"));
                n_files += 1;
            }
            assert_eq!(n_files, family.versions().len(), "{}", folder.display());
            for embedded in family.versions() {
                let on_disk =
                    std::fs::read_to_string(folder.join(format!("v{}.avsc", embedded.version)))
                        .unwrap();
                assert_eq!(on_disk, embedded.json);
            }
        }
    }

    #[test]
    fn fingerprints_are_distinct_and_follow_the_avro_specification() {
        // Known CRC-64-AVRO value of the canonical form `"int"` (Avro specification test vector).
        assert_eq!(fingerprint(&Schema::Int), 0x7275_d51a_3f39_5c8f);
        let mut seen = std::collections::HashSet::new();
        for family in SchemaFamily::ALL {
            for embedded in family.versions() {
                assert!(seen.insert(embedded.fingerprint), "{family:?}");
                assert_eq!(
                    family
                        .version_by_fingerprint(embedded.fingerprint)
                        .map(|e| e.version),
                    Some(embedded.version)
                );
            }
        }
    }
}
