//! Schema registration at start against a registry on 127.0.0.1 answering the documented REST responses.

use std::sync::Arc;

use biglearn::kafka_options::{register_schemas, RegistryTopic};
use biglearn::run::{registry_topics, Backend};
use biglearn_events::SchemaFamily;
use biglearn_stream::kafka::registry::RegistryConfig;
use biglearn_stream::topics::Topics;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// A schema another producer registered under a subject (as `GET
/// /subjects/{subject}/versions/1` documents it).
const OTHER_VERSION: &str = r#"{"subject":"S","version":1,"id":3,"schema":"{\"type\":\"record\",\"name\":\"Other\",\"fields\":[{\"name\":\"a\",\"type\":\"string\"}]}"}"#;

#[derive(Default)]
struct Registry {
    /// (method, path, body) of every request.
    seen: Vec<(String, String, String)>,
    /// Distinct schema texts registered; the id is 100 + the index (ids are global).
    schemas: Vec<String>,
}

/// A registry answering like Confluent's: `PUT /config/…` echoes the level, `POST
/// …/versions` gives one id per distinct schema, `GET …/versions` lists one version from
/// another producer for owned subjects and 404 (40401) for `missing` ones; `status`
/// overrides every answer when set (e.g. 401).
async fn serve(status: Option<u16>) -> (String, Arc<Mutex<Registry>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(Registry::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        for _ in 0..256 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = shared.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_owned();
                    let path = parts.next().unwrap_or_default().to_owned();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).await.unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.unwrap();
                    let body = String::from_utf8(body).unwrap();
                    let (code, answer) = {
                        let mut state = state.lock().await;
                        state
                            .seen
                            .push((method.clone(), path.clone(), body.clone()));
                        answer(&mut state, status, &method, &path, &body)
                    };
                    let response = format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if reader
                        .get_mut()
                        .write_all(response.as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (base, state)
}

fn answer(
    state: &mut Registry,
    status: Option<u16>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    if status == Some(401) {
        return (
            401,
            r#"{"error_code":401,"message":"Unauthorized"}"#.to_owned(),
        );
    }
    let owned = !path.contains("prod.");
    match method {
        "PUT" => (200, body.to_owned()),
        "POST" => {
            let schema = serde_json::from_str::<serde_json::Value>(body).unwrap()["schema"]
                .as_str()
                .unwrap()
                .to_owned();
            let index = match state.schemas.iter().position(|known| *known == schema) {
                Some(index) => index,
                None => {
                    state.schemas.push(schema);
                    state.schemas.len() - 1
                }
            };
            (200, format!(r#"{{"id":{}}}"#, 100 + index))
        }
        _ if !owned => (
            404,
            r#"{"error_code":40401,"message":"Subject not found."}"#.to_owned(),
        ),
        _ if path.ends_with("/versions") => (200, "[1]".to_owned()),
        _ => (200, OTHER_VERSION.to_owned()),
    }
}

#[tokio::test]
async fn every_owned_subject_gets_backward_transitive_and_every_released_version() {
    let (base, state) = serve(None).await;
    let topics = Topics::new("biglearn");
    let subjects = registry_topics(&topics, &Backend::Embedded);
    assert_eq!(subjects.len(), 7);
    let view = register_schemas(&RegistryConfig::new(base), &subjects)
        .await
        .unwrap();

    let state = state.lock().await;
    // Per subject: compatibility first, then the versions oldest first.
    let course: Vec<&(String, String, String)> = state
        .seen
        .iter()
        .filter(|(_, path, _)| path.contains("/biglearn.course-events-value"))
        .collect();
    assert_eq!(course[0].0, "PUT");
    assert_eq!(course[0].1, "/config/biglearn.course-events-value");
    assert!(course[0].2.contains("BACKWARD_TRANSITIVE"));
    let versions = SchemaFamily::CourseEvent.versions();
    let posted: Vec<&str> = course
        .iter()
        .filter(|(method, _, _)| method == "POST")
        .map(|(_, _, body)| body.as_str())
        .collect();
    assert_eq!(posted.len(), versions.len());
    for (body, version) in posted.iter().zip(versions) {
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["schema"].as_str(), Some(version.json));
    }

    // Writers frame with the id of the current schema; every id decodes.
    let current = &SchemaFamily::CourseEvent.current().json;
    let current_id = 100 + state.schemas.iter().position(|s| s == current).unwrap() as u32;
    assert_eq!(view.current_ids[&SchemaFamily::CourseEvent], current_id);
    let writer = view
        .lookup
        .writer_schema(current_id)
        .expect("current id known");
    assert_eq!(
        writer.fingerprint(),
        SchemaFamily::CourseEvent.current().fingerprint
    );
    assert!(
        view.lookup.writer_schema(3).is_some(),
        "another producer's version is known"
    );
    assert!(view.lookup.writer_schema(999).is_none());
}

#[tokio::test]
async fn staging_only_reads_the_source_subjects() {
    let (base, state) = serve(None).await;
    let topics = Topics::with_source("staging", "prod");
    let subjects = registry_topics(&topics, &Backend::Staging(Box::new(staging_backend())));
    let source: Vec<&RegistryTopic> = subjects.iter().filter(|t| !t.register).collect();
    assert_eq!(
        source.iter().map(|t| t.topic.as_str()).collect::<Vec<_>>(),
        [
            "prod.course-events",
            "prod.ecosystem-events",
            "prod.settings"
        ]
    );
    register_schemas(&RegistryConfig::new(base), &subjects)
        .await
        .expect("a source subject not registered yet is only a warning");
    let state = state.lock().await;
    for (method, path, _) in &state.seen {
        if path.contains("prod.") {
            assert_eq!(
                method, "GET",
                "staging wrote to production's subject {path}"
            );
        }
    }
}

#[tokio::test]
async fn refused_credentials_stop_the_start_with_the_registry_message() {
    let (base, _) = serve(Some(401)).await;
    let subjects = registry_topics(&Topics::new("biglearn"), &Backend::Embedded);
    let Err(error) = register_schemas(
        &RegistryConfig::new(base).with_basic_auth("biglearn", "wrong"),
        &subjects,
    )
    .await
    else {
        panic!("a 401 must stop the registration");
    };
    let text = format!("{error:#}");
    assert!(
        text.contains("setting the compatibility of biglearn.course-events-value")
            && text.contains("refused the credentials (401): Unauthorized"),
        "{text}"
    );
}

fn staging_backend() -> biglearn::staging::StagingBackend {
    biglearn::staging::StagingBackend {
        source: biglearn_staging::SourceConfig::new("127.0.0.1:9", "staging"),
        source_prefix: "prod".to_owned(),
        target: Backend::Embedded,
        pseudonymizer: None,
        own_sparfa: false,
    }
}
