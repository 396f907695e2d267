//! Tidy checks of the source tree (as rust-analyzer's tidy test): every file says what it
//! is, and every crate root states its role, invariants and absences.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "target") {
                continue;
            }
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&workspace().join("services"), &mut files);
    rust_files(&workspace().join("tests"), &mut files);
    assert!(files.len() > 50, "the walk found the sources");
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.starts_with("//!")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:#?}"
    );
}

#[test]
fn every_crate_root_states_role_invariants_and_absences() {
    let mut roots = Vec::new();
    for entry in std::fs::read_dir(workspace().join("services"))
        .unwrap()
        .flatten()
    {
        for root in ["src/lib.rs", "src/main.rs"] {
            let path = entry.path().join(root);
            if path.exists() {
                roots.push(path);
            }
        }
    }
    assert!(roots.len() >= 10, "found the crate roots: {roots:?}");
    for path in roots {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: String = text
            .lines()
            .take_while(|line| line.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        for section in ["Invariants", "Does not"] {
            assert!(
                doc.contains(section),
                "{} lacks an `{section}` section in its crate doc",
                path.display()
            );
        }
    }
}

/// Every file under `dir` (sources, scripts, manifests), skipping build output.
fn all_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "target") {
                continue;
            }
            all_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

#[test]
fn nothing_reads_outside_the_clone() {
    // A fresh clone has no sibling directories: fixtures live in testdata/.
    let outside = [concat!("..", "/shared"), concat!("/work", "/shared")];
    let mut files = Vec::new();
    for dir in ["services", "tests", "scripts", ".ci"] {
        all_files(&workspace().join(dir), &mut files);
    }
    assert!(files.len() > 50, "the walk found the sources");
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| {
            std::fs::read_to_string(path)
                .is_ok_and(|text| outside.iter().any(|pattern| text.contains(pattern)))
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "files that refer to paths outside the repository: {offenders:#?}"
    );
    assert!(workspace()
        .join("testdata/biglearn-api/02_create_course.json")
        .is_file());
    assert!(workspace()
        .join("services/sparfa/tests/data/spisa/responses.csv")
        .is_file());
}
