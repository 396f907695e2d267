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

// ---------------------------------------------------------------------------------------
// Design-document citations.
//
// The rule (docs/design/README.md, "Citing these documents"): a citation names the
// document by its path from the repository root, `docs/design/<doc>.md`, optionally
// followed by sections (`§3.5`, `§3–§14`, `§1, §2`) or Decision ids (`D13`, `S9`, `O7`).
// A bare `§N` refers to the design document most recently named above it in the same file;
// inside docs/design/ it is a section of the same document, and a bare `events.md` is the
// sibling. The short form `api.md` is accepted only outside Markdown and comments (Rust
// strings such as settings descriptions and recorded event reasons, JSON, Avro docs).

/// The stems of the design documents that the code cites by short name.
const DESIGN_STEMS: [&str; 5] = ["api", "events", "scheduler", "sparfa", "operations"];
const DESIGN_DIR: &str = "docs/design";

/// The numbered sections and the Decision ids of one design document.
#[derive(Debug, Default)]
struct DocIndex {
    sections: std::collections::BTreeSet<String>,
    decisions: std::collections::BTreeSet<String>,
}

/// Sections are the numbers that open headings (`## 3. …` is "3", `### 3.5 …` is "3.5");
/// Decisions are the ids in `**Decision:** (D13)`.
fn doc_index(text: &str) -> DocIndex {
    let mut index = DocIndex::default();
    for line in text.lines() {
        let hashes = line.bytes().take_while(|&b| b == b'#').count();
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let rest = line[hashes..].trim_start();
        if let Some((number, after)) = section_number(rest.as_bytes(), 0) {
            let after = rest[after..].strip_prefix('.').unwrap_or(&rest[after..]);
            if after.is_empty() || after.starts_with(char::is_whitespace) {
                index.sections.insert(number);
            }
        }
    }
    let marker = "**Decision:**";
    let mut from = 0;
    while let Some(at) = text[from..].find(marker) {
        let rest = text[from + at + marker.len()..].trim_start();
        if let Some(inner) = rest.strip_prefix('(') {
            if let Some((id, end)) = decision_id(inner.as_bytes(), 0) {
                if inner[end..].starts_with(')') {
                    index.decisions.insert(id);
                }
            }
        }
        from += at + marker.len();
    }
    index
}

/// `digits(.digits)*` at `at`: the number and the index after it.
fn section_number(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    let mut end = at;
    loop {
        let start = end;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
            end += 1;
            continue;
        }
        return Some((String::from_utf8_lossy(&bytes[at..end]).into_owned(), end));
    }
}

/// A Decision id (`D13`, `S9`, `O7`: a letter and one or two digits, then no word character).
fn decision_id(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    if !matches!(bytes.get(at), Some(b'D' | b'S' | b'O')) {
        return None;
    }
    let digits = bytes[at + 1..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let end = at + 1 + digits;
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    if !(1..=2).contains(&digits) || bytes.get(end).is_some_and(word) {
        return None;
    }
    Some((String::from_utf8_lossy(&bytes[at..end]).into_owned(), end))
}

const SECTION_SIGN: &str = "§";

/// `§N` or `§ N` at `at`: the number and the index after it.
fn section_ref(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    if !bytes[at..].starts_with(SECTION_SIGN.as_bytes()) {
        return None;
    }
    let mut i = at + SECTION_SIGN.len();
    if bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    section_number(bytes, i)
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// Whether the line holding `at` must use the full form: every line of Markdown, and the
/// comment lines of sources and scripts.
fn is_prose_line(rel: &str, text: &str, at: usize) -> bool {
    if rel.ends_with(".md") {
        return true;
    }
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].trim_start();
    if rel.ends_with(".rs") {
        return line.starts_with("//");
    }
    let hash_comments = [
        ".py",
        ".sh",
        ".yml",
        ".yaml",
        ".properties",
        ".toml",
        "Dockerfile",
    ];
    hash_comments.iter().any(|ext| rel.ends_with(ext))
        && line.starts_with('#')
        && !line.starts_with("#!")
        && !line.starts_with("#[")
}

/// `a/b/../c` → `a/c`; `None` when the path leaves the repository.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// The repository as the citation check sees it: which files exist, and the index of a
/// design document.
trait Repo {
    fn is_file(&self, rel: &str) -> bool;
    fn index(&self, rel: &str) -> Option<&DocIndex>;
}

/// Every citation problem in one file (`rel`: its path from the repository root).
fn citation_errors(rel: &str, text: &str, repo: &dyn Repo) -> Vec<String> {
    let bytes = text.as_bytes();
    let in_design = rel.starts_with(&format!("{DESIGN_DIR}/"));
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let mut errors = Vec::new();
    // The document a bare `§N` refers to.
    let mut current: Option<String> = in_design.then(|| rel.to_owned());
    let mut i = 0;
    while i < bytes.len() {
        // A bare section reference.
        if let Some((number, end)) = section_ref(bytes, i) {
            match current.as_deref().map(|doc| (doc, repo.index(doc))) {
                None => errors.push(format!(
                    "{rel}:{}: §{number} with no design document named above it in the file",
                    line_of(i)
                )),
                Some((doc, index)) => {
                    if !index.is_some_and(|index| index.sections.contains(&number)) {
                        errors.push(format!(
                            "{rel}:{}: §{number} (of {doc}) does not exist",
                            line_of(i)
                        ));
                    }
                }
            }
            i = end;
            continue;
        }
        // A document name: `….md` ending here.
        let is_md_end = bytes[i..].starts_with(b".md")
            && !bytes
                .get(i + 3)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if !is_md_end || i == 0 || !is_path_byte(bytes[i - 1]) || bytes[i - 1] == b'.' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > 0 && is_path_byte(bytes[start - 1]) {
            start -= 1;
        }
        let end = i + 3;
        let token = &text[start..end];
        i = end;
        if token.starts_with("//") {
            continue; // part of a URL
        }
        let token = token.trim_start_matches('/');
        let name = token.rsplit('/').next().unwrap_or(token);
        let stem = name.trim_end_matches(".md");
        let target = if !token.contains('/') {
            let sibling = format!("{DESIGN_DIR}/{name}");
            if in_design && repo.is_file(&sibling) {
                sibling
            } else if DESIGN_STEMS.contains(&stem) {
                if is_prose_line(rel, text, start) {
                    errors.push(format!(
                        "{rel}:{}: `{token}`: write {DESIGN_DIR}/{name}",
                        line_of(start)
                    ));
                }
                sibling
            } else {
                continue; // README.md, ARCHITECTURE.md, …: not a design document
            }
        } else {
            let dir = rel.rsplit_once('/').map_or("", |(dir, _)| dir);
            let found = [normalize(token), normalize(&format!("{dir}/{token}"))]
                .into_iter()
                .flatten()
                .find(|candidate| repo.is_file(candidate));
            match found {
                Some(found) => found,
                None if DESIGN_STEMS.contains(&stem) || token.contains("design/") => {
                    errors.push(format!(
                        "{rel}:{}: `{token}` names no file of the repository",
                        line_of(start)
                    ));
                    continue;
                }
                None => continue, // an original source, e.g. `kevin/summaries/170815.md`
            }
        };
        if !target.starts_with(&format!("{DESIGN_DIR}/")) {
            continue; // e.g. docs/operations.md, the runbook
        }
        let Some(index) = repo.index(&target) else {
            errors.push(format!("{rel}:{}: {target} does not exist", line_of(start)));
            continue;
        };
        if !in_design {
            current = Some(target.clone());
        }
        // The sections and Decisions that follow the name: `§3.5`, `§3–§14`, `§1, §2`, `D13`.
        loop {
            let mut at = i;
            if bytes.get(at) == Some(&b'`') {
                at += 1;
            }
            while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
                at += 1;
            }
            for separator in [",", "and", "or", "–", "-"] {
                if text[at..].starts_with(separator) {
                    at += separator.len();
                    break;
                }
            }
            while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
                at += 1;
            }
            if let Some((number, end)) = section_ref(bytes, at) {
                if !index.sections.contains(&number) {
                    errors.push(format!(
                        "{rel}:{}: {target} has no section §{number}",
                        line_of(at)
                    ));
                }
                i = end;
            } else if let Some((id, end)) = decision_id(bytes, at) {
                if !index.decisions.contains(&id) {
                    errors.push(format!(
                        "{rel}:{}: {target} has no Decision {id}",
                        line_of(at)
                    ));
                }
                i = end;
            } else {
                break;
            }
        }
    }
    errors
}

/// The working tree, with the design documents indexed once.
struct Tree {
    root: PathBuf,
    docs: std::collections::BTreeMap<String, DocIndex>,
}

impl Tree {
    fn new(root: PathBuf) -> Self {
        let mut docs = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(root.join(DESIGN_DIR)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".md") {
                let text = std::fs::read_to_string(entry.path()).unwrap();
                docs.insert(format!("{DESIGN_DIR}/{name}"), doc_index(&text));
            }
        }
        Tree { root, docs }
    }
}

impl Repo for Tree {
    fn is_file(&self, rel: &str) -> bool {
        self.root.join(rel).is_file()
    }
    fn index(&self, rel: &str) -> Option<&DocIndex> {
        self.docs.get(rel)
    }
}

#[test]
fn design_citations_resolve() {
    let root = workspace();
    let tree = Tree::new(root.clone());
    for doc in [
        "README",
        "api",
        "events",
        "scheduler",
        "sparfa",
        "operations",
    ] {
        let path = format!("{DESIGN_DIR}/{doc}.md");
        assert!(tree.docs.contains_key(&path), "{path} exists");
    }
    assert!(tree.docs[&format!("{DESIGN_DIR}/api.md")]
        .decisions
        .contains("D13"));
    let mut files = Vec::new();
    for dir in ["services", "tests", "scripts", "docs", "schemas", "infra"] {
        all_files(&root.join(dir), &mut files);
    }
    for file in [
        "README.md",
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
        "docker-compose.yml",
    ] {
        files.push(root.join(file));
    }
    let mut errors = Vec::new();
    let mut cited = 0;
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "tests/tidy.rs" {
            continue; // its own examples below are wrong on purpose
        }
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // not text
        };
        cited += text.matches("docs/design/").count();
        errors.extend(citation_errors(&rel, &text, &tree));
    }
    assert!(cited > 150, "the walk found the citations ({cited})");
    assert!(
        errors.is_empty(),
        "citations that point nowhere (rule: docs/design/README.md, \"Citing these documents\"):\n{}",
        errors.join("\n")
    );
}

/// A small repository for the checks' own tests.
struct Sample(std::collections::BTreeMap<String, DocIndex>);

impl Repo for Sample {
    fn is_file(&self, rel: &str) -> bool {
        self.0.contains_key(rel) || rel == "docs/operations.md"
    }
    fn index(&self, rel: &str) -> Option<&DocIndex> {
        self.0.get(rel)
    }
}

fn sample_repo() -> Sample {
    let api = "# HTTP API\n\n## 3. Writes\n\n### 3.5 Delivery failures\n\n\
               **Decision:** (D13) ranges.\n\n### 2.7 `/x` and 2.8 `/y`\n";
    let events = "# Events\n\n## 7. Consumers\n\n### 7.2 Apply\n";
    Sample(
        [
            ("docs/design/api.md".to_owned(), doc_index(api)),
            ("docs/design/events.md".to_owned(), doc_index(events)),
        ]
        .into_iter()
        .collect(),
    )
}

#[test]
fn doc_index_reads_numbered_headings_and_decisions() {
    let index = &sample_repo().0["docs/design/api.md"];
    let sections: Vec<&str> = index.sections.iter().map(String::as_str).collect();
    // "2.8" hides inside the 2.7 heading: only the leading number counts.
    assert_eq!(sections, ["2.7", "3", "3.5"]);
    assert_eq!(index.decisions.iter().collect::<Vec<_>>(), ["D13"]);
}

#[test]
fn good_citations_pass() {
    let repo = sample_repo();
    let text = "//! Writes (docs/design/api.md §3.5, §3, D13) and apply\n\
                //! (docs/design/events.md §7–§7.2); below, a bare §7.2 is of that document.\n\
                // The runbook: docs/operations.md, \"Sequence gaps\".\n\
                let help = \"retrain (events.md §7.2)\"; // short form in code\n";
    assert_eq!(
        citation_errors("services/x/src/lib.rs", text, &repo),
        Vec::<String>::new()
    );
    // Inside docs/design a bare name is the sibling, a bare § the document itself.
    let design = "# API\n\n## 3. W\n\nSee `events.md` §7.2. Here, §3 is this document's.\n";
    assert_eq!(
        citation_errors("docs/design/api.md", design, &repo),
        Vec::<String>::new()
    );
}

#[test]
fn bad_citations_are_named() {
    let repo = sample_repo();
    let check = |rel: &str, text: &str| citation_errors(rel, text, &repo);
    // A section or Decision the document does not have.
    assert_eq!(
        check("a.rs", "// docs/design/api.md §3.6 and §9"),
        [
            "a.rs:1: docs/design/api.md has no section §3.6",
            "a.rs:1: docs/design/api.md has no section §9"
        ]
    );
    assert_eq!(
        check("a.rs", "// docs/design/api.md D6"),
        ["a.rs:1: docs/design/api.md has no Decision D6"]
    );
    // A document that is not in the repository, or outside it (and so the section after
    // it has no document either).
    assert_eq!(
        check("a.md", "see docs/design/scheduler.md §4"),
        [
            "a.md:1: `docs/design/scheduler.md` names no file of the repository",
            "a.md:1: §4 with no design document named above it in the file"
        ]
    );
    assert_eq!(
        check("a.md", concat!("see ..", "/shared/spec/api.md")),
        [concat!(
            "a.md:1: `..",
            "/shared/spec/api.md` names no file of the repository"
        )]
    );
    // The short form in a comment or in Markdown.
    assert_eq!(
        check("a.rs", "/// as in events.md §7.2"),
        ["a.rs:1: `events.md`: write docs/design/events.md"]
    );
    // A bare § with no document named above it, or one its document lacks.
    assert_eq!(
        check(
            "a.rs",
            "// the §7 loop\n// docs/design/events.md §7\n// and §7.3"
        ),
        [
            "a.rs:1: §7 with no design document named above it in the file",
            "a.rs:3: §7.3 (of docs/design/events.md) does not exist"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// The code map of ARCHITECTURE.md against `cargo metadata`.
//
// Each crate's section in "## Code map" (a `### \`services/<dir>\` — …` heading; the root
// package's is `### \`tests/\` — …`) says `Depends on …`: the workspace crates it has as
// normal or build dependencies, by short name in backticks (`domain` for biglearn-domain,
// `biglearn` for the binary crate), or "nothing of ours". A clause ends at the first `.` or
// `;` outside backticks and parentheses; names in parentheses are commentary. Dev-dependencies
// are checked too: each must be on the `Depends on` line or on a `Tests also use …` line,
// so that test-only edges are visible without counting as layering. Listed edges that the
// manifests lack fail as well: the map must stay true both ways.

/// What one code-map section says.
#[derive(Debug, Default, PartialEq)]
struct MapSection {
    /// The paths of its heading, e.g. `services/gateway`.
    paths: Vec<String>,
    /// `Depends on`: crate short names; `None` when the section says nothing.
    depends: Option<std::collections::BTreeSet<String>>,
    /// `Tests also use`.
    tests_use: std::collections::BTreeSet<String>,
}

/// The clause after `lead` in `text` (to the first `.`/`;` outside backticks and
/// parentheses), with parenthesized parts removed; one per occurrence.
fn clauses(text: &str, lead: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(lead) {
        let start = from + at + lead.len();
        let (mut depth, mut tick) = (0usize, false);
        let mut clause = String::new();
        for c in text[start..].chars() {
            match c {
                '`' => tick = !tick,
                '(' if !tick => depth += 1,
                ')' if !tick && depth > 0 => {
                    depth -= 1;
                    continue;
                }
                '.' | ';' if !tick && depth == 0 => break,
                _ => {}
            }
            if depth == 0 {
                clause.push(c);
            }
        }
        out.push(clause);
        from = start;
    }
    out
}

/// The backticked names of a clause; a clause without any must say "nothing".
fn clause_names(
    clause: &str,
    section: &str,
    errors: &mut Vec<String>,
) -> std::collections::BTreeSet<String> {
    let names: std::collections::BTreeSet<String> = clause
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    if names.is_empty() && !clause.contains("nothing") {
        errors.push(format!(
            "{section}: `{}` names no crate and does not say \"nothing of ours\"",
            clause.trim()
        ));
    }
    names
}

/// The sections of "## Code map" in ARCHITECTURE.md.
fn code_map(text: &str) -> Result<Vec<MapSection>, Vec<String>> {
    let mut errors = Vec::new();
    let body = text
        .split_once("\n## Code map\n")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .ok_or_else(|| vec!["ARCHITECTURE.md has no `## Code map` section".to_owned()])?;
    let mut sections = Vec::new();
    for chunk in body.split("\n### ").skip(1) {
        let (heading, prose) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let head = heading.split(" — ").next().unwrap_or(heading);
        let paths: Vec<String> = head
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|path| path.trim_end_matches('/').to_owned())
            .collect();
        if paths.is_empty() {
            errors.push(format!("code-map heading `{heading}` names no crate path"));
            continue;
        }
        let prose = prose.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut section = MapSection {
            paths,
            ..MapSection::default()
        };
        for clause in clauses(&prose, "Depends on ") {
            let names = clause_names(&clause, heading, &mut errors);
            section
                .depends
                .get_or_insert_with(Default::default)
                .extend(names);
        }
        for clause in clauses(&prose, "Tests also use ") {
            let names = clause_names(&clause, heading, &mut errors);
            section.tests_use.extend(names);
        }
        sections.push(section);
    }
    if errors.is_empty() {
        Ok(sections)
    } else {
        Err(errors)
    }
}

/// One workspace package as `cargo metadata` describes it.
#[derive(Debug)]
struct Package {
    name: String,
    /// Directory of its manifest, relative to the workspace root ("" for the root).
    dir: String,
    /// Directories of its targets' sources, relative to the workspace root.
    target_dirs: Vec<String>,
    /// Workspace dependencies: (name, kind), kind "normal", "build" or "dev".
    deps: Vec<(String, String)>,
}

fn packages(metadata: &serde_json::Value) -> Vec<Package> {
    let root = metadata["workspace_root"].as_str().expect("workspace_root");
    let relative = |path: &str| {
        let dir = Path::new(path).parent().unwrap_or(Path::new(""));
        dir.strip_prefix(root)
            .unwrap_or(dir)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let members: Vec<&serde_json::Value> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .collect();
    let names: std::collections::BTreeSet<&str> = members
        .iter()
        .filter_map(|package| package["name"].as_str())
        .collect();
    members
        .iter()
        .map(|package| Package {
            name: package["name"].as_str().unwrap().to_owned(),
            dir: relative(package["manifest_path"].as_str().unwrap()),
            target_dirs: package["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|target| target["src_path"].as_str())
                .map(relative)
                .collect(),
            deps: package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| {
                    dep["path"].is_string() && names.contains(dep["name"].as_str().unwrap_or(""))
                })
                .map(|dep| {
                    let kind = dep["kind"].as_str().unwrap_or("normal").to_owned();
                    (dep["name"].as_str().unwrap().to_owned(), kind)
                })
                .collect(),
        })
        .collect()
}

/// `domain` → `biglearn-domain`; `biglearn` stays.
fn crate_name(short: &str) -> String {
    if short == "biglearn" {
        short.to_owned()
    } else {
        format!("biglearn-{short}")
    }
}

/// Every way the code map and the manifests disagree.
fn code_map_errors(sections: &[MapSection], packages: &[Package]) -> Vec<String> {
    use std::collections::BTreeSet;
    let mut errors = Vec::new();
    let known: BTreeSet<&str> = packages
        .iter()
        .map(|package| package.name.as_str())
        .collect();
    let mut mapped = BTreeSet::new();
    for section in sections {
        for path in &section.paths {
            let owner = packages
                .iter()
                .find(|package| package.dir == *path)
                .or_else(|| {
                    packages.iter().find(|package| {
                        package
                            .target_dirs
                            .iter()
                            .any(|dir| dir == path || dir.starts_with(&format!("{path}/")))
                    })
                });
            let Some(package) = owner else {
                errors.push(format!("the code map's `{path}` is no workspace crate"));
                continue;
            };
            mapped.insert(package.name.as_str());
            let Some(depends) = &section.depends else {
                errors.push(format!(
                    "the code map's `{path}` ({}) has no `Depends on …` line",
                    package.name
                ));
                continue;
            };
            for short in depends.iter().chain(&section.tests_use) {
                if !known.contains(crate_name(short).as_str()) {
                    errors.push(format!(
                        "the code map's `{path}` names `{short}`, which is no workspace crate"
                    ));
                }
            }
            let listed: BTreeSet<String> = depends.iter().map(|short| crate_name(short)).collect();
            let tests: BTreeSet<String> = section
                .tests_use
                .iter()
                .map(|short| crate_name(short))
                .collect();
            let mut production = BTreeSet::new();
            let mut dev = BTreeSet::new();
            for (dep, kind) in &package.deps {
                if kind == "dev" {
                    dev.insert(dep.clone());
                    if !listed.contains(dep) && !tests.contains(dep) {
                        errors.push(format!(
                            "{} → {dep} (dev-dependency) is not in ARCHITECTURE.md's code map: \
                             add it to `Tests also use …` of `{path}`",
                            package.name
                        ));
                    }
                } else {
                    production.insert(dep.clone());
                    if !listed.contains(dep) {
                        errors.push(format!(
                            "{} → {dep} ({kind} dependency) is not in ARCHITECTURE.md's code map: \
                             add it to `Depends on …` of `{path}`",
                            package.name
                        ));
                    }
                }
            }
            for dep in listed.difference(&production) {
                if known.contains(dep.as_str()) {
                    errors.push(format!(
                        "the code map says {} depends on {dep}, but its manifest has no such \
                         normal or build dependency",
                        package.name
                    ));
                }
            }
            for dep in tests.difference(&dev) {
                if known.contains(dep.as_str()) && !production.contains(dep) {
                    errors.push(format!(
                        "the code map says the tests of {} use {dep}, but its manifest has no \
                         such dev-dependency",
                        package.name
                    ));
                }
            }
        }
    }
    for package in packages {
        if !mapped.contains(package.name.as_str()) {
            errors.push(format!(
                "{} ({}) has no section in ARCHITECTURE.md's code map",
                package.name, package.dir
            ));
        }
    }
    errors
}

#[test]
fn code_map_lists_every_workspace_edge() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = packages(&metadata);
    assert!(packages.len() >= 15, "found the workspace: {packages:?}");
    let edges: usize = packages.iter().map(|package| package.deps.len()).sum();
    assert!(edges >= 50, "found the workspace edges ({edges})");
    let text = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    let sections = code_map(&text).unwrap_or_else(|errors| panic!("{}", errors.join("\n")));
    let errors = code_map_errors(&sections, &packages);
    assert!(
        errors.is_empty(),
        "ARCHITECTURE.md's code map is not true:\n{}",
        errors.join("\n")
    );
}

/// A two-crate sample: `cargo metadata`'s shape, trimmed to the fields the check reads.
fn sample_metadata(gateway_deps: &str) -> Vec<Package> {
    let json = format!(
        r#"{{"workspace_root": "/w", "packages": [
            {{"name": "biglearn-domain", "manifest_path": "/w/services/domain/Cargo.toml",
              "targets": [{{"src_path": "/w/services/domain/src/lib.rs"}}], "dependencies": []}},
            {{"name": "biglearn-testkit", "manifest_path": "/w/services/testkit/Cargo.toml",
              "targets": [{{"src_path": "/w/services/testkit/src/lib.rs"}}], "dependencies": []}},
            {{"name": "biglearn-gateway", "manifest_path": "/w/services/gateway/Cargo.toml",
              "targets": [{{"src_path": "/w/services/gateway/src/lib.rs"}}],
              "dependencies": [{gateway_deps}]}},
            {{"name": "biglearn-suite", "manifest_path": "/w/Cargo.toml",
              "targets": [{{"src_path": "/w/tests/e2e/main.rs"}}], "dependencies": []}}
        ]}}"#
    );
    packages(&serde_json::from_str(&json).unwrap())
}

const SAMPLE_MAP: &str = "# A\n\n## Code map\n\nIntro.\n\n\
    ### `services/domain` — the core\nIds. Depends on nothing of ours.\n\n\
    ### `services/testkit` — support\nA broker. Depends on nothing of ours.\n\n\
    ### `services/gateway` — HTTP (**API Boundary**)\nRequests (`requests`, `writer`). Depends\n\
    on `domain` (ids, `CourseUuid`). Tests also use `testkit`.\n\n\
    ### `tests/` — end to end\nDepends on nothing of ours.\n\n## Cross-cutting\n\nDepends on `x`.\n";

const DOMAIN_DEP: &str =
    r#"{"name": "biglearn-domain", "kind": null, "path": "/w/services/domain"}"#;
const TESTKIT_DEV: &str =
    r#"{"name": "biglearn-testkit", "kind": "dev", "path": "/w/services/testkit"}"#;
const SERDE_DEP: &str = r#"{"name": "serde", "kind": null}"#;

#[test]
fn code_map_parses_depends_lines() {
    let sections = code_map(SAMPLE_MAP).unwrap();
    assert_eq!(sections.len(), 4);
    let gateway = &sections[2];
    assert_eq!(gateway.paths, ["services/gateway"]);
    // Names in parentheses are commentary; the clause runs across the line break.
    assert_eq!(
        gateway.depends.as_ref().unwrap().iter().collect::<Vec<_>>(),
        ["domain"]
    );
    assert_eq!(gateway.tests_use.iter().collect::<Vec<_>>(), ["testkit"]);
    assert_eq!(sections[0].depends, Some(Default::default()));
    // The sample agrees with a manifest that has exactly those edges (serde is not ours).
    let packages = sample_metadata(&format!("{DOMAIN_DEP}, {TESTKIT_DEV}, {SERDE_DEP}"));
    assert_eq!(code_map_errors(&sections, &packages), Vec::<String>::new());
}

#[test]
fn code_map_flags_unlisted_and_stale_edges() {
    let sections = code_map(SAMPLE_MAP).unwrap();
    // An edge the map does not list, normal and build.
    let unlisted = format!(
        "{DOMAIN_DEP}, {TESTKIT_DEV}, \
         {{\"name\": \"biglearn-testkit\", \"kind\": \"build\", \"path\": \"/w/services/testkit\"}}"
    );
    assert_eq!(
        code_map_errors(&sections, &sample_metadata(&unlisted)),
        [
            "biglearn-gateway → biglearn-testkit (build dependency) is not in ARCHITECTURE.md's \
          code map: add it to `Depends on …` of `services/gateway`"
        ]
    );
    // A dev-dependency the map does not list.
    let map = SAMPLE_MAP.replace(" Tests also use `testkit`.", "");
    let sections_without_tests = code_map(&map).unwrap();
    assert_eq!(
        code_map_errors(
            &sections_without_tests,
            &sample_metadata(&format!("{DOMAIN_DEP}, {TESTKIT_DEV}"))
        ),
        [
            "biglearn-gateway → biglearn-testkit (dev-dependency) is not in ARCHITECTURE.md's \
          code map: add it to `Tests also use …` of `services/gateway`"
        ]
    );
    // Listed edges that the manifest lacks.
    assert_eq!(
        code_map_errors(&sections, &sample_metadata("")),
        [
            "the code map says biglearn-gateway depends on biglearn-domain, but its manifest \
             has no such normal or build dependency",
            "the code map says the tests of biglearn-gateway use biglearn-testkit, but its \
             manifest has no such dev-dependency"
        ]
    );
}

#[test]
fn code_map_flags_missing_sections_and_unknown_names() {
    // A crate without a section, and a section without a `Depends on` line.
    let map = SAMPLE_MAP
        .replace(
            "### `services/testkit` — support\nA broker. Depends on nothing of ours.\n\n",
            "",
        )
        .replace("Ids. Depends on nothing of ours.", "Ids.");
    let sections = code_map(&map).unwrap();
    let packages = sample_metadata(&format!("{DOMAIN_DEP}, {TESTKIT_DEV}"));
    assert_eq!(
        code_map_errors(&sections, &packages),
        [
            "the code map's `services/domain` (biglearn-domain) has no `Depends on …` line",
            "biglearn-testkit (services/testkit) has no section in ARCHITECTURE.md's code map"
        ]
    );
    // A name that is no crate, and a clause that names nothing.
    let map = SAMPLE_MAP.replace("on `domain` (ids", "on `domian` (ids");
    let errors = code_map_errors(&code_map(&map).unwrap(), &packages);
    assert!(
        errors.contains(
            &"the code map's `services/gateway` names `domian`, which is no workspace crate"
                .to_owned()
        ),
        "{errors:?}"
    );
    let map = SAMPLE_MAP.replace(
        "A broker. Depends on nothing of ours.",
        "Depends on the rest.",
    );
    assert_eq!(
        code_map(&map).unwrap_err(),
        ["`services/testkit` — support: `the rest` names no crate and does not say \"nothing of ours\""
            .to_owned()]
    );
}
