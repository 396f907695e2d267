//! API and admin tokens: from the environment, or generated once and kept (mode 0600)
//! in the data directory, so that `biglearn up` works with nothing configured.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The tokens of one process and where generated ones are stored.
pub struct ResolvedTokens {
    pub api: String,
    pub admin: String,
    /// Set when at least one token was generated or read from the data directory.
    pub stored_in: Option<PathBuf>,
}

/// Refuses a token file that the group or others may read or write: a secret there may
/// already have leaked, and a new one must not be written into it.
fn refuse_if_loose(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the token file {file} has mode {mode:04o}: the group or others can read it. Run `chmod 600 {file}` (and rotate the token if others may have read it), then start again",
            file = path.display()
        );
    }
    Ok(())
}

fn read_or_generate(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    refuse_if_loose(&path)?;
    if let Ok(text) = fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write the generated token to {}", path.display()))?;
    writeln!(file, "{token}")?;
    Ok(token)
}

/// `BIGLEARN_API_TOKEN` / `BIGLEARN_ADMIN_TOKEN`, else tokens kept in `data_dir`.
pub fn resolve(data_dir: &Path) -> anyhow::Result<ResolvedTokens> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let mut stored_in = None;
    let api = match from_env("BIGLEARN_API_TOKEN") {
        Some(token) => token,
        None => {
            stored_in = Some(data_dir.join("api-token"));
            read_or_generate(data_dir, "api-token")?
        }
    };
    let admin = match from_env("BIGLEARN_ADMIN_TOKEN") {
        Some(token) => token,
        None => {
            stored_in = Some(data_dir.join("admin-token"));
            read_or_generate(data_dir, "admin-token")?
        }
    };
    Ok(ResolvedTokens {
        api,
        admin,
        stored_in,
    })
}

/// The observer token (docs/design/api.md D14: read-only admin endpoints only): `given` (the
/// `--observer-token` flag or `BIGLEARN_OBSERVER_TOKEN`), else the one kept in
/// `<data_dir>/observer-token` (generated once, like the other tokens). Returns the token
/// and, when it came from the data directory, its file.
///
/// It must differ from the API and admin tokens: an observer token that could write would
/// defeat its purpose.
pub fn resolve_observer(
    data_dir: &Path,
    given: Option<&str>,
    others: &ResolvedTokens,
) -> anyhow::Result<(String, Option<PathBuf>)> {
    let (token, stored_in) = match given.map(str::trim).filter(|token| !token.is_empty()) {
        Some(token) => (token.to_owned(), None),
        None => (
            read_or_generate(data_dir, "observer-token")?,
            Some(data_dir.join("observer-token")),
        ),
    };
    if token == others.api || token == others.admin {
        anyhow::bail!(
            "the observer token equals the API or admin token; give it its own secret (BIGLEARN_OBSERVER_TOKEN)"
        );
    }
    Ok((token, stored_in))
}

#[cfg(test)]
mod observer_tests {
    use super::*;

    #[test]
    fn the_observer_token_is_generated_once_and_must_differ_from_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let others = ResolvedTokens {
            api: "api".into(),
            admin: "admin".into(),
            stored_in: None,
        };
        let (first, stored) = resolve_observer(dir.path(), None, &others).unwrap();
        assert_eq!(stored, Some(dir.path().join("observer-token")));
        assert_eq!(first.len(), 64);
        let (again, _) = resolve_observer(dir.path(), None, &others).unwrap();
        assert_eq!(again, first, "kept in the data directory");
        assert_eq!(
            resolve_observer(dir.path(), Some("given"), &others).unwrap(),
            ("given".to_owned(), None)
        );
        for same in ["api", "admin"] {
            let error = resolve_observer(dir.path(), Some(same), &others).unwrap_err();
            assert!(
                error.to_string().contains("BIGLEARN_OBSERVER_TOKEN"),
                "{error}"
            );
        }
    }
}
