//! A Confluent Schema Registry client: register a subject's schema, set its compatibility, read schemas by id.
//!
//! Only the REST calls Biglearn needs (Confluent's API reference, `application/vnd.schemaregistry.v1+json`):
//! - `PUT /config/{subject}` `{"compatibility": …}` → `{"compatibility": …}`;
//! - `POST /subjects/{subject}/versions` `{"schema": "<Avro JSON>"}` → `{"id": N}`
//!   (idempotent: the same schema again answers the same id; 409 if incompatible);
//! - `GET /subjects/{subject}/versions` → `[1, 2, …]`;
//! - `GET /subjects/{subject}/versions/{version}` → `{"subject", "version", "id", "schema"}`;
//! - `GET /schemas/ids/{id}` → `{"schema": "<Avro JSON>"}`.
//!
//! Errors answer `{"error_code": 40901, "message": "…"}` with the HTTP status.
//! Subjects follow the TopicNameStrategy: the value schema of topic `t` is `t-value`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The subject of a topic's value schema under the TopicNameStrategy.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Where the registry is and how to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Base URL, e.g. `https://registry.example:8081` (a path prefix is kept).
    pub url: String,
    /// HTTP basic auth (`basic.auth.user.info` in Confluent's clients).
    pub basic_auth: Option<(String, String)>,
    /// Bound on each request.
    pub timeout: Duration,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(user, _)| (user, "***")),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RegistryConfig {
    /// A registry at `url` without authentication, 10 s per request.
    pub fn new(url: impl Into<String>) -> RegistryConfig {
        RegistryConfig {
            url: url.into().trim_end_matches('/').to_owned(),
            basic_auth: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Authenticates with HTTP basic auth.
    pub fn with_basic_auth(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> RegistryConfig {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }
}

/// What went wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No answer (connection refused, TLS, timeout, …).
    #[error("schema registry at {url} unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    /// 401 or 403.
    #[error("schema registry refused the credentials ({status}): {message}; check --schema-registry-user and the password file")]
    Unauthorized { status: u16, message: String },
    /// 409: the schema breaks the subject's compatibility rule.
    #[error("schema for {subject} is incompatible with the registered versions: {message}")]
    Incompatible { subject: String, message: String },
    /// 422: the registry refused the schema or the compatibility level.
    #[error("schema registry refused the request for {subject} (error {error_code}): {message}")]
    Invalid {
        subject: String,
        error_code: i64,
        message: String,
    },
    /// 404: no such subject, version or schema id.
    #[error("not found in the schema registry (error {error_code}): {message}")]
    NotFound { error_code: i64, message: String },
    /// Any other status.
    #[error("schema registry answered {status} (error {error_code}): {message}")]
    Status {
        status: u16,
        error_code: i64,
        message: String,
    },
    /// 2xx with a body that is not the documented JSON.
    #[error("schema registry answered an unexpected body to {call}: {detail}")]
    Malformed { call: String, detail: String },
}

/// A registered version of a subject.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: u32,
    pub schema: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
}

#[derive(Deserialize)]
struct CompatibilityBody {
    compatibility: String,
}

/// The client (cheap to clone).
#[derive(Clone, Debug)]
pub struct SchemaRegistryClient {
    config: RegistryConfig,
    http: reqwest::Client,
}

impl SchemaRegistryClient {
    /// A client for `config` (no request is made).
    pub fn new(config: RegistryConfig) -> Result<SchemaRegistryClient, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|error| RegistryError::Unreachable {
                url: config.url.clone(),
                detail: error.to_string(),
            })?;
        Ok(SchemaRegistryClient { config, http })
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Sets `subject`'s compatibility level (e.g. `BACKWARD_TRANSITIVE`).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let call = format!("PUT /config/{subject}");
        let request = self
            .http
            .put(self.url(&format!("/config/{}", encode(subject))))
            .json(&json!({ "compatibility": level }));
        let body: CompatibilityBody = self.send(request, subject, &call).await?;
        if body.compatibility != level {
            return Err(RegistryError::Malformed {
                call,
                detail: format!("compatibility {:?}, asked {level:?}", body.compatibility),
            });
        }
        Ok(())
    }

    /// Registers `schema` (Avro JSON) under `subject` and returns its id; registering the
    /// same schema again returns the same id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let call = format!("POST /subjects/{subject}/versions");
        let request = self
            .http
            .post(self.url(&format!("/subjects/{}/versions", encode(subject))))
            .json(&json!({ "schema": schema }));
        let body: IdBody = self.send(request, subject, &call).await?;
        Ok(body.id)
    }

    /// Every version registered under `subject`.
    pub async fn versions(&self, subject: &str) -> Result<Vec<SubjectVersion>, RegistryError> {
        let call = format!("GET /subjects/{subject}/versions");
        let request = self
            .http
            .get(self.url(&format!("/subjects/{}/versions", encode(subject))));
        let numbers: Vec<i32> = self.send(request, subject, &call).await?;
        let mut versions = Vec::with_capacity(numbers.len());
        for number in numbers {
            let call = format!("GET /subjects/{subject}/versions/{number}");
            let request = self
                .http
                .get(self.url(&format!("/subjects/{}/versions/{number}", encode(subject))));
            versions.push(self.send(request, subject, &call).await?);
        }
        Ok(versions)
    }

    /// The schema (Avro JSON) with `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let call = format!("GET /schemas/ids/{id}");
        let request = self.http.get(self.url(&format!("/schemas/ids/{id}")));
        let body: SchemaBody = self.send(request, "", &call).await?;
        Ok(body.schema)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.url)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        subject: &str,
        call: &str,
    ) -> Result<T, RegistryError> {
        let mut request = request
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE);
        if let Some((user, password)) = &self.config.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|error| RegistryError::Unreachable {
                url: self.config.url.clone(),
                detail: error_chain(&error),
            })?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| RegistryError::Unreachable {
                url: self.config.url.clone(),
                detail: error_chain(&error),
            })?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|error| RegistryError::Malformed {
                call: call.to_owned(),
                detail: error.to_string(),
            });
        }
        let ErrorBody {
            error_code,
            message,
        } = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
            error_code: 0,
            message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        });
        Err(match status {
            401 | 403 => RegistryError::Unauthorized { status, message },
            404 => RegistryError::NotFound {
                error_code,
                message,
            },
            409 => RegistryError::Incompatible {
                subject: subject.to_owned(),
                message,
            },
            422 => RegistryError::Invalid {
                subject: subject.to_owned(),
                error_code,
                message,
            },
            _ => RegistryError::Status {
                status,
                error_code,
                message,
            },
        })
    }
}

/// Percent-encodes a subject for a path segment.
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
