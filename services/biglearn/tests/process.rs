//! The `biglearn` process as an operator sees it: help, `up` with nothing configured,
//! health endpoints, generated tokens, and graceful exit on SIGTERM and SIGINT.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use biglearn_testkit::listening_address;

fn biglearn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_biglearn"))
}

/// Starts `biglearn up` on port 0 and returns the child and its base URL.
fn start_up(data_dir: &std::path::Path) -> (Child, String) {
    let mut command = biglearn();
    command
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    start_child(command)
}

/// Starts `command` (a `biglearn up` or `serve`) and returns the child and its base URL.
fn start_child(mut command: Command) -> (Child, String) {
    let mut child = command
        .env_remove("BIGLEARN_API_TOKEN")
        .env_remove("BIGLEARN_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("biglearn starts");
    let base = listening_address(&mut child);
    (child, base)
}

fn get(url: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::get(url).await.expect("the process answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&format!("{base}/readyz")).0 != 200 {
        assert!(Instant::now() < deadline, "/readyz did not turn 200");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal_and_wait(child: &mut Child, signal: &str) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "biglearn did not exit after {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_lists_the_subcommands() {
    let output = biglearn().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for subcommand in ["up", "serve", "gap", "publish"] {
        assert!(
            help.contains(subcommand),
            "--help lacks {subcommand}:\n{help}"
        );
    }
}

#[test]
fn up_serves_health_and_metrics_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start_up(dir.path());
    wait_ready(&base);
    let (status, body) = get(&format!("{base}/ping"));
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
    assert_eq!(get(&format!("{base}/healthz")).0, 200);
    let (status, metrics) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert!(metrics.contains("biglearn_build_info"), "{metrics}");
    for name in ["api-token", "admin-token"] {
        let path = dir.path().join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} must be private");
        assert!(std::fs::read_to_string(&path).unwrap().trim().len() >= 32);
    }
    let exit = signal_and_wait(&mut child, "-TERM");
    assert_eq!(exit.code(), Some(0), "SIGTERM must end cleanly");
}

#[test]
fn up_exits_zero_on_sigint_and_keeps_its_tokens_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start_up(dir.path());
    wait_ready(&base);
    let token = std::fs::read_to_string(dir.path().join("api-token")).unwrap();
    assert_eq!(signal_and_wait(&mut child, "-INT").code(), Some(0));
    let (mut child, base) = start_up(dir.path());
    wait_ready(&base);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("api-token")).unwrap(),
        token,
        "a restart reuses the stored token"
    );
    assert_eq!(signal_and_wait(&mut child, "-TERM").code(), Some(0));
}

#[test]
fn an_unknown_feature_flag_stops_the_start_with_the_known_ones_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = biglearn()
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--feature-flags",
            "online_rebuld=off",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("BIGLEARN_FEATURE_FLAGS")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("online_rebuld") && stderr.contains("online_rebuild"),
        "the error names the bad flag and the known ones: {stderr}"
    );
}

fn post(url: &str, token: &str, body: &serde_json::Value) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .header("Biglearn-Api-Token", token)
            .body(body.to_string())
            .send()
            .await
            .expect("the process answers")
            .status()
            .as_u16()
    })
}

/// Every directory and file under `dir`, `dir` included.
fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_owned()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(entries(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_data_directory_is_private_under_umask_000_and_022() {
    for umask in ["000", "022"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // What an older version left under umask 022: a world-readable directory and file.
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stray = data.join("notes.txt");
        std::fs::write(&stray, "left by hand").unwrap();
        std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o644)).unwrap();

        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_biglearn"))
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data);
        let (mut child, base) = start_child(command);
        wait_ready(&base);
        // A write, so that the log and sled hold data and sled writes more files.
        let token = std::fs::read_to_string(data.join("api-token")).unwrap();
        let course = serde_json::json!({
            "course_uuid": "7d3b5ba4-3fd2-4fc7-9a3c-1f3e2a1c0d11",
            "ecosystem_uuid": "0bb8d3d9-060f-4645-bcda-f2558236bf81",
            "is_real_course": true,
            "starts_at": "2017-03-27T23:26:43.502491Z",
            "ends_at": "2017-09-27T23:26:43.502707Z",
            "created_at": "2017-06-27T23:26:45.704487Z",
        });
        assert_eq!(
            post(&format!("{base}/create_course"), token.trim(), &course),
            200
        );
        assert_eq!(signal_and_wait(&mut child, "-TERM").code(), Some(0));

        let all = entries(&data);
        assert!(
            all.iter().any(|path| path.starts_with(data.join("log")))
                && all.iter().any(|path| path.starts_with(data.join("state"))),
            "{all:?}"
        );
        for path in all {
            let mode = std::fs::symlink_metadata(&path)
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            if path.is_dir() {
                assert_eq!(mode, 0o700, "umask {umask}: {}", path.display());
            } else {
                assert_eq!(
                    mode & 0o077,
                    0,
                    "umask {umask}: {} is {mode:o}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn a_token_file_others_can_read_stops_the_start_and_is_left_as_it_is() {
    let cases: [(&str, u32, &[&str]); 3] = [
        ("", 0o644, &["up"]),
        ("a-stored-secret-of-some-length\n", 0o640, &["up"]),
        (
            "a-stored-secret-of-some-length\n",
            0o604,
            &["serve", "--role", "reader"],
        ),
    ];
    for (content, mode, command) in cases {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("api-token");
        std::fs::write(&token, content).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
        let output = biglearn()
            .args(command)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env_remove("BIGLEARN_API_TOKEN")
            .env_remove("BIGLEARN_ADMIN_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command:?} {mode:o}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("chmod 600 {}", token.display())),
            "the error names the file and the fix: {stderr}"
        );
        // No secret was written into it, and nothing was started.
        assert_eq!(std::fs::read_to_string(&token).unwrap(), content);
        assert!(!dir.path().join("state").exists());
        assert!(!dir.path().join("log").exists());
    }
}
