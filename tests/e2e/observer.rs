//! The observer token (docs/design/api.md §7, D14): it opens the read-only admin endpoints and
//! nothing else, so dashboards and staging hold no credential that can write.

use biglearn::admin::GapCommand;
use biglearn_gateway::requests::Endpoint;
use biglearn_suite::{
    create_course, new_uuid, record_responses, response_item, Node, TestBackend, API_TOKEN,
    OBSERVER_TOKEN,
};
use clap::Parser;
use serde_json::{json, Value};

const ACTOR: (&str, &str) = ("Biglearn-Actor", "dashboard");

/// A valid body for every read-only admin endpoint.
fn read_only_bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/admin/list_sequence_gaps",
            json!({"stream": "course", "limit": 10}),
        ),
        ("/admin/dlq/list", json!({"limit": 10})),
        ("/admin/state_digest", json!({"list_sequences": true})),
        ("/admin/results/list", json!({"limit": 10})),
        ("/admin/rebuild_status", json!({})),
        (
            "/admin/settings/get",
            json!({"key": "scheduler.default_num_pes_per_book_container"}),
        ),
        ("/admin/settings/list", json!({})),
        ("/admin/settings/audit", json!({"limit": 10})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_token_opens_the_read_only_admin_endpoints_and_is_refused_everywhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = new_uuid();
    let (status, _) = node
        .post("/create_course", &create_course(&course, &new_uuid()))
        .await;
    assert_eq!(status, 200);
    // A gap at 1, for a fill the observer must not be able to make.
    let (status, _) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(&course, 2, &new_uuid())]),
        )
        .await;
    assert_eq!(status, 200);

    let observer = [("Biglearn-Observer-Token", OBSERVER_TOKEN), ACTOR];
    let mut n_refused = 0;
    for endpoint in Endpoint::ALL {
        // The observer token alone, with an actor and a JSON body: every endpoint that is
        // not read-only admin answers 401 before looking at the body.
        let (status, answer) = node.post_with(endpoint.path(), &json!({}), &observer).await;
        if endpoint.is_observable() {
            assert_ne!(status, 401, "{}: {answer}", endpoint.path());
        } else {
            assert_eq!(status, 401, "{}: {answer}", endpoint.path());
            n_refused += 1;
        }
        // Sent in the admin or API token's header it is just a wrong token.
        for header in ["Biglearn-Admin-Token", "Biglearn-Api-Token"] {
            let (status, answer) = node
                .post_with(
                    endpoint.path(),
                    &json!({}),
                    &[(header, OBSERVER_TOKEN), ACTOR],
                )
                .await;
            assert_eq!(status, 401, "{} with {header}: {answer}", endpoint.path());
        }
    }
    // Every Tutor endpoint and every writing admin endpoint.
    assert_eq!(n_refused, Endpoint::ALL.len() - 8);

    // With valid bodies, every read-only endpoint answers the observer.
    let bodies = read_only_bodies();
    let observable: Vec<&str> = Endpoint::ALL
        .iter()
        .filter(|endpoint| endpoint.is_observable())
        .map(|endpoint| endpoint.path())
        .collect();
    let mut listed: Vec<&str> = bodies.iter().map(|(path, _)| *path).collect();
    listed.sort();
    let mut expected = observable.clone();
    expected.sort();
    assert_eq!(listed, expected, "a body for every read-only endpoint");
    for (path, body) in &bodies {
        let (status, answer) = node.post_with(path, body, &observer).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let (_, gaps) = node
        .post_with(
            "/admin/list_sequence_gaps",
            &json!({"stream": "course", "limit": 10}),
            &observer,
        )
        .await;
    assert_eq!(gaps["gaps"][0]["aggregate_uuid"], course.as_str());
    // Without an actor it is refused like an admin request without one.
    let (status, _) = node
        .post_with(
            "/admin/state_digest",
            &json!({}),
            &[("Biglearn-Observer-Token", OBSERVER_TOKEN)],
        )
        .await;
    assert_eq!(status, 400);
    // A wrong observer token is refused.
    let (status, _) = node
        .post_with(
            "/admin/state_digest",
            &json!({}),
            &[("Biglearn-Observer-Token", "not-the-observer-token"), ACTOR],
        )
        .await;
    assert_eq!(status, 401);

    // The refused fill wrote nothing: the gap is still open.
    let (status, answer) = node
        .post_with(
            "/admin/fill_sequence_gap",
            &json!({"stream": "course", "aggregate_uuid": course, "sequence_number": 1, "reason": "x"}),
            &observer,
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    let (_, gaps) = node
        .post_with(
            "/admin/list_sequence_gaps",
            &json!({"stream": "course", "limit": 10}),
            &observer,
        )
        .await;
    assert_eq!(gaps["gaps"].as_array().unwrap().len(), 1, "{gaps}");
    // Tutor's token still works where it belongs.
    let (status, _) = node
        .post_with(
            "/fetch_course_metadatas",
            &json!({"metadata_sequence_number_offset": 0, "max_num_metadatas": 10}),
            &[("Biglearn-Api-Token", API_TOKEN)],
        )
        .await;
    assert_eq!(status, 200);
    node.stop().await.unwrap();
}

#[derive(Parser, Debug)]
struct GapCli {
    #[command(subcommand)]
    command: GapCommand,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_with_the_observer_token_and_cannot_write_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    // No token files anywhere the CLI would look.
    let empty = tempfile::tempdir().unwrap();
    let base = node.base();
    let args = |rest: &[&str]| -> Vec<String> {
        let mut args = vec!["gap".to_owned(), rest[0].to_owned()];
        args.extend(
            [
                "--target",
                base.as_str(),
                "--observer-token",
                OBSERVER_TOKEN,
                "--data-dir",
                empty.path().to_str().unwrap(),
                "--actor",
                "dashboard",
            ]
            .iter()
            .chain(&rest[1..])
            .map(|arg| arg.to_string()),
        );
        args
    };
    let list = GapCli::try_parse_from(args(&["list", "--stream", "course"])).unwrap();
    biglearn::admin::run_gap(list.command).await.unwrap();
    let fill = GapCli::try_parse_from(args(&[
        "fill",
        "--course",
        &new_uuid(),
        "--seq",
        "1",
        "--reason",
        "x",
    ]))
    .unwrap();
    let error = biglearn::admin::run_gap(fill.command).await.unwrap_err();
    assert!(error.to_string().contains("no admin token"), "{error:#}");
    node.stop().await.unwrap();
}
