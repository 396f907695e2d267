//! The schema-registry client against the registry's documented responses, served from 127.0.0.1.

use std::path::PathBuf;
use std::sync::Arc;

use biglearn_stream::kafka::registry::{
    value_subject, RegistryConfig, RegistryError, SchemaRegistryClient,
};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: String,
}

/// A route: method, path, status and the fixture file answered.
type Route = (&'static str, &'static str, u16, &'static str);

fn fixture(name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/schema-registry",
        name,
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Serves `routes` on a free 127.0.0.1 port (any other request: 404 with a registry
/// error body) and returns the base URL and the requests seen.
async fn serve(routes: Vec<Route>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        // Bounded: a test makes a handful of requests.
        for _ in 0..64 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = request_line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_owned();
                    let path = parts.next().unwrap_or_default().to_owned();
                    let mut length = 0;
                    let mut authorization = None;
                    let mut content_type = None;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).await.unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let (name, value) = line.split_once(':').unwrap();
                        let value = value.trim().to_owned();
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.parse().unwrap(),
                            "authorization" => authorization = Some(value),
                            "content-type" => content_type = Some(value),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.unwrap();
                    log.lock().push(Seen {
                        method: method.clone(),
                        path: path.clone(),
                        authorization,
                        content_type,
                        body: String::from_utf8(body).unwrap(),
                    });
                    let (status, text) = routes
                        .iter()
                        .find(|(m, p, _, _)| *m == method && *p == path)
                        .map(|&(_, _, status, file)| (status, fixture(file)))
                        .unwrap_or((
                            404,
                            r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#.to_owned(),
                        ));
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
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
    (base, seen)
}

const SUBJECT: &str = "biglearn.course-events-value";

#[tokio::test]
async fn registers_a_schema_and_sets_backward_transitive_with_basic_auth() {
    let (base, seen) = serve(vec![
        (
            "PUT",
            "/config/biglearn.course-events-value",
            200,
            "put-config-200.json",
        ),
        (
            "POST",
            "/subjects/biglearn.course-events-value/versions",
            200,
            "post-versions-200.json",
        ),
    ])
    .await;
    let client = SchemaRegistryClient::new(
        RegistryConfig::new(format!("{base}/")).with_basic_auth("biglearn", "s3cret"),
    )
    .unwrap();
    assert_eq!(value_subject("biglearn.course-events"), SUBJECT);
    client
        .set_compatibility(SUBJECT, "BACKWARD_TRANSITIVE")
        .await
        .unwrap();
    let schema = r#"{"type":"string"}"#;
    assert_eq!(client.register(SUBJECT, schema).await.unwrap(), 7);

    let seen = seen.lock();
    assert_eq!(seen.len(), 2);
    // "biglearn:s3cret" in base64.
    for request in seen.iter() {
        assert_eq!(
            request.authorization.as_deref(),
            Some("Basic YmlnbGVhcm46czNjcmV0")
        );
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/vnd.schemaregistry.v1+json")
        );
    }
    let config: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(config["compatibility"], "BACKWARD_TRANSITIVE");
    let register: serde_json::Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(register["schema"], schema);
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[0].path, "/config/biglearn.course-events-value");
    assert_eq!(
        seen[1].path,
        "/subjects/biglearn.course-events-value/versions"
    );
}

#[tokio::test]
async fn an_incompatible_schema_is_a_409_error_naming_the_subject() {
    let (base, _) = serve(vec![(
        "POST",
        "/subjects/biglearn.course-events-value/versions",
        409,
        "post-versions-409.json",
    )])
    .await;
    let client = SchemaRegistryClient::new(RegistryConfig::new(base)).unwrap();
    let error = client
        .register(SUBJECT, r#"{"type":"string"}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RegistryError::Incompatible { subject, message }
            if subject == SUBJECT && message.contains("READER_FIELD_MISSING_DEFAULT_VALUE")),
        "{error}"
    );
    assert!(error.to_string().starts_with(
        "schema for biglearn.course-events-value is incompatible with the registered versions"
    ));
}

#[tokio::test]
async fn bad_credentials_are_a_401_error_that_says_what_to_check() {
    let (base, _) = serve(vec![(
        "PUT",
        "/config/biglearn.course-events-value",
        401,
        "any-401.json",
    )])
    .await;
    let client =
        SchemaRegistryClient::new(RegistryConfig::new(base).with_basic_auth("biglearn", "wrong"))
            .unwrap();
    let error = client
        .set_compatibility(SUBJECT, "BACKWARD_TRANSITIVE")
        .await
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::Unauthorized { status: 401, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("check --schema-registry-user"));
}

#[tokio::test]
async fn an_invalid_schema_and_a_server_error_are_reported_with_their_codes() {
    let (base, _) = serve(vec![
        (
            "POST",
            "/subjects/biglearn.course-events-value/versions",
            422,
            "post-versions-422.json",
        ),
        ("GET", "/schemas/ids/5", 500, "any-500.json"),
    ])
    .await;
    let client = SchemaRegistryClient::new(RegistryConfig::new(base)).unwrap();
    let error = client.register(SUBJECT, "not avro").await.unwrap_err();
    assert!(
        matches!(
            error,
            RegistryError::Invalid {
                error_code: 42201,
                ..
            }
        ),
        "{error}"
    );
    let error = client.schema_by_id(5).await.unwrap_err();
    assert!(
        matches!(
            error,
            RegistryError::Status {
                status: 500,
                error_code: 50001,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn schemas_are_read_by_id_and_by_subject_version() {
    let (base, _) = serve(vec![
        ("GET", "/schemas/ids/1", 200, "get-schema-id-200.json"),
        ("GET", "/schemas/ids/99", 404, "get-schema-id-404.json"),
        (
            "GET",
            "/subjects/biglearn.course-events-value/versions",
            200,
            "get-versions-200.json",
        ),
        (
            "GET",
            "/subjects/biglearn.course-events-value/versions/1",
            200,
            "get-version-1-200.json",
        ),
        (
            "GET",
            "/subjects/biglearn.course-events-value/versions/2",
            200,
            "get-version-2-200.json",
        ),
    ])
    .await;
    let client = SchemaRegistryClient::new(RegistryConfig::new(base)).unwrap();
    assert_eq!(
        client.schema_by_id(1).await.unwrap(),
        r#"{"type":"string"}"#
    );
    let error = client.schema_by_id(99).await.unwrap_err();
    assert!(
        matches!(
            error,
            RegistryError::NotFound {
                error_code: 40403,
                ..
            }
        ),
        "{error}"
    );
    let versions = client.versions(SUBJECT).await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|version| (version.version, version.id))
            .collect::<Vec<_>>(),
        vec![(1, 3), (2, 7)]
    );
    assert!(versions[1].schema.contains("\"default\":0"));
}

#[tokio::test]
async fn an_unreachable_registry_is_a_clear_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client =
        SchemaRegistryClient::new(RegistryConfig::new(format!("http://127.0.0.1:{port}"))).unwrap();
    let error = client.schema_by_id(1).await.unwrap_err();
    assert!(
        matches!(error, RegistryError::Unreachable { .. }),
        "{error}"
    );
    assert!(error
        .to_string()
        .starts_with("schema registry at http://127.0.0.1:"));
}
