//! The offline evaluation of docs/design/sparfa.md §12: CSV input, the hash split, the five models
//! and their test scores.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::fit::{clipped_log_likelihood, rescore_knowledge, sigmoid, Hyperparameters};
use crate::hash::sha256_joined;
use crate::irt::eap_scores;
use crate::observations::{Observation, Observations};
use crate::select::{
    fit_selected, free_candidate, free_candidates, hinted_candidates, hinted_spec_candidate,
    rasch_candidate, rasch_marginal_candidate, two_pl_candidate, two_pl_marginal_candidate,
    Candidate, CandidateScore, Estimator, SelectedFit, SelectionInput,
};
use crate::SparfaError;

/// A fitted model's P(correct) for a test observation.
type Predictor = Box<dyn Fn(&Observation) -> f64>;

/// Above this many training observations, candidates are compared on a learner subsample.
pub const SELECTION_CAP: usize = 2_000_000;
/// U-steps (of §7's inner steps each) that re-score learners from their training and
/// validation responses, starting from the fit's U, which already fits the training
/// part: 2 change the test AUC by less than 1e−4 against 5 on the issue-20 shapes.
const RESCORE_ROUNDS: usize = 2;
/// Worker threads of an evaluation fit (the machine target has two cores).
const MAX_THREADS: usize = 2;

/// The models of §12, plus the fixed-constant variants of the selected ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// p = the item's training mean.
    ItemMean,
    /// K = 1, W fixed to 1.
    Rasch,
    /// K = 1 without hints, W ≥ 0 learned.
    #[serde(rename = "2pl")]
    TwoPl,
    /// Tag hints, hyper-parameters selected on the validation set (the default with tags).
    Tagged,
    /// Tag hints with the fixed §4 constants, no selection.
    TaggedSpec,
    /// Free concepts, selected on the validation set (the default without tags).
    Free,
    /// The §12 `free` configuration exactly, no selection.
    FreeSpec,
    /// A 2PL by marginal likelihood, learners scored by EAP.
    TwoPlMarginal,
    /// A common-slope Rasch model by marginal likelihood, learners scored by EAP.
    RaschMarginal,
}

impl ModelKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::ItemMean => "item-mean",
            Self::Rasch => "rasch",
            Self::TwoPl => "2pl",
            Self::Tagged => "tagged",
            Self::TaggedSpec => "tagged-spec",
            Self::Free => "free",
            Self::FreeSpec => "free-spec",
            Self::TwoPlMarginal => "2pl-marginal",
            Self::RaschMarginal => "rasch-marginal",
        }
    }

    /// Every model, in report order.
    pub const ALL: [ModelKind; 9] = [
        Self::ItemMean,
        Self::Rasch,
        Self::TwoPl,
        Self::Tagged,
        Self::TaggedSpec,
        Self::Free,
        Self::FreeSpec,
        Self::TwoPlMarginal,
        Self::RaschMarginal,
    ];
}

impl FromStr for ModelKind {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s.trim())
            .ok_or_else(|| EvalError::UnknownModel(s.to_owned()))
    }
}

/// Options of `biglearn sparfa eval`.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOptions {
    /// CSV `student_id,item_id,correct`.
    pub responses: PathBuf,
    /// CSV `item_id,tag`.
    pub tags: Option<PathBuf>,
    /// A separate test CSV; then all of `responses` is used for fitting.
    pub test: Option<PathBuf>,
    /// Where to write `student_id,item_id,p_correct` of the first model.
    pub predictions: Option<PathBuf>,
    /// Free concepts when there are no tags.
    pub concepts: Option<usize>,
    /// Models to run; empty means the default (`tagged` with tags, else `free`).
    pub models: Vec<ModelKind>,
    /// Split seed (the CLI default is "42").
    pub seed: String,
    /// Score test learners from their training and validation responses with the fitted
    /// (W, d) fixed (the CLI default); false uses the fit's own U (training only).
    pub rescore: bool,
}

/// Errors of the evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A CSV line is malformed.
    #[error("{path}:{line}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An unknown model name.
    #[error("unknown model {0:?} (expected one of item-mean, rasch, 2pl, tagged, tagged-spec, free, free-spec, 2pl-marginal, rasch-marginal)")]
    UnknownModel(String),
    /// The tagged models need a tags file.
    #[error("model {0} needs --tags")]
    TagsRequired(&'static str),
    /// The responses file has no observations.
    #[error("{0} has no responses")]
    NoResponses(PathBuf),
    /// The fitting code rejected its input.
    #[error(transparent)]
    Sparfa(#[from] SparfaError),
}

/// One model's scores on the test set, serialized as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelReport {
    /// The model name.
    pub model: String,
    /// Accuracy at threshold 0.5.
    pub accuracy: f64,
    /// Rank-based AUC (ties get average ranks); `null` when the test set has one class.
    pub auc: Option<f64>,
    /// Mean log-loss with p clipped to [1e−15, 1 − 1e−15].
    pub log_loss: f64,
    /// Wall-clock seconds of the fit, selection included.
    pub fit_seconds: f64,
    /// Training observations.
    pub n_train: usize,
    /// Test observations.
    pub n_test: usize,
    /// Concepts K of the fitted model (page or free rows plus extra rows).
    pub concepts: usize,
    /// The chosen hyper-parameters (absent for item-mean).
    #[serde(flatten)]
    pub hyperparameters: Option<Hyperparameters>,
    /// The chosen candidate's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// Outer iterations of the final fit.
    pub outer_iterations: usize,
    /// Validation observations used for early stopping.
    pub n_validation: usize,
    /// Every candidate's validation log-likelihood.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub selection: Vec<CandidateScore>,
    /// Students in the responses and test files.
    pub n_students: usize,
    /// Items in the responses, test and tags files.
    pub n_items: usize,
    /// Observed fraction of the responses file's student × item matrix.
    pub observed_fraction: f64,
    /// Mean correctness of the responses file.
    pub mean_correct: f64,
}

/// A parsed response row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseRow {
    /// The student id.
    pub student: String,
    /// The item id.
    pub item: String,
    /// Whether it was correct.
    pub correct: bool,
}

/// Reads CSV text whose header names (at least) the `wanted` columns, in any order, with
/// any other columns ignored, and calls `visit(line, fields)` for every data record with
/// its 1-based line number and the wanted fields in `wanted` order. Quoting is RFC 4180
/// (the `csv` crate); blank lines are skipped; a UTF-8 byte-order mark and spaces around
/// header names are ignored.
/// Most columns `parse_csv` looks up.
const MAX_WANTED: usize = 3;

fn parse_csv(
    text: &str,
    path: &Path,
    wanted: &[&str],
    mut visit: impl FnMut(usize, &[&str]) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    let csv_error = |line: usize, message: String| EvalError::Csv {
        path: path.to_owned(),
        line,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let record_line = |e: &csv::Error| e.position().map_or(1, |p| p.line() as usize);
    let header = reader
        .headers()
        .map_err(|e| csv_error(record_line(&e), csv_message(&e)))?
        .clone();
    if header.is_empty() || (header.len() == 1 && header[0].trim().is_empty()) {
        return Err(csv_error(
            1,
            format!(
                "empty file, expected a header with columns {}",
                wanted.join(",")
            ),
        ));
    }
    let names: Vec<&str> = header.iter().map(str::trim).collect();
    let wanted = &wanted[..wanted.len().min(MAX_WANTED)];
    let mut columns = Vec::with_capacity(wanted.len());
    for w in wanted {
        let mut at = names.iter().enumerate().filter(|(_, n)| *n == w);
        match (at.next(), at.next()) {
            (Some((i, _)), None) => columns.push(i),
            (None, _) => {
                return Err(csv_error(
                    1,
                    format!(
                        "bad header {:?}: no column {w:?} (expected columns {})",
                        names.join(","),
                        wanted.join(",")
                    ),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(csv_error(
                    1,
                    format!("bad header: column {w:?} appears twice"),
                ))
            }
        }
    }
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(record_line(&e), csv_message(&e))),
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if record.len() != names.len() {
            return Err(csv_error(
                line,
                format!(
                    "expected {} columns like the header, found {}",
                    names.len(),
                    record.len()
                ),
            ));
        }
        let mut fields = [""; MAX_WANTED];
        for (slot, &i) in fields.iter_mut().zip(&columns) {
            *slot = &record[i];
        }
        visit(line, &fields[..columns.len()])?;
    }
    Ok(())
}

/// The message of a `csv` error without its position (the caller names the line).
fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 in field {}", err.field() + 1),
        csv::ErrorKind::Io(err) => err.to_string(),
        _ => e.to_string(),
    }
}

/// Parses `correct`: `1`/`0` or `true`/`false` (any case, surrounding spaces ignored).
fn parse_correct(value: &str) -> Option<bool> {
    match value.trim() {
        "1" => Some(true),
        "0" => Some(false),
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// A fast non-cryptographic hasher for the parser's lookups (ids and pairs; only lookups,
/// never iteration order, depend on it): the multiply-rotate step of FxHash over 8-byte
/// words. SipHash's flood resistance is not needed for a local CSV file.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn write_u32(&mut self, word: u32) {
        self.write_u64(u64::from(word));
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.write_u64(u64::from(byte));
    }

    #[inline]
    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its bucket from the low bits and its
        // tag from the top seven.
        self.0 ^ (self.0 >> 29)
    }
}

type FastBuild = std::hash::BuildHasherDefault<FastHasher>;

/// Interned ids: each distinct string gets the next number, in order of appearance.
#[derive(Default)]
struct Interner {
    names: Vec<String>,
    index: HashMap<String, u32, FastBuild>,
}

impl Interner {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }
}

/// A response with interned student and item ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    student: u32,
    item: u32,
    correct: bool,
}

/// Parses a responses CSV into interned rows (see [`parse_responses`]).
fn parse_rows(
    text: &str,
    path: &Path,
    students: &mut Interner,
    items: &mut Interner,
) -> Result<Vec<Row>, EvalError> {
    // Room for every line of a typical file (about 16 bytes or more per line).
    let expected = text.len() / 16;
    let mut seen: HashSet<u64, FastBuild> =
        HashSet::with_capacity_and_hasher(expected, FastBuild::default());
    let mut rows = Vec::with_capacity(expected);
    parse_csv(
        text,
        path,
        &["student_id", "item_id", "correct"],
        |line, fields| {
            let error = |message: String| EvalError::Csv {
                path: path.to_owned(),
                line,
                message,
            };
            let Some(correct) = parse_correct(fields[2]) else {
                return Err(error(format!(
                    "column correct: bad value {:?}, expected 1, 0, true or false",
                    fields[2]
                )));
            };
            for (column, value) in [("student_id", fields[0]), ("item_id", fields[1])] {
                if value.trim().is_empty() {
                    return Err(error(format!("column {column}: empty value")));
                }
            }
            let row = Row {
                student: students.id(fields[0]),
                item: items.id(fields[1]),
                correct,
            };
            if seen.insert(u64::from(row.student) << 32 | u64::from(row.item)) {
                rows.push(row);
            }
            Ok(())
        },
    )?;
    Ok(rows)
}

/// Parses a responses CSV (columns `student_id`, `item_id`, `correct` found by header
/// name; other columns ignored); for a repeated (student, item) pair the first row wins.
pub fn parse_responses(text: &str, path: &Path) -> Result<Vec<ResponseRow>, EvalError> {
    let (mut students, mut items) = (Interner::default(), Interner::default());
    let rows = parse_rows(text, path, &mut students, &mut items)?;
    Ok(rows
        .iter()
        .map(|r| ResponseRow {
            student: students.names[r.student as usize].clone(),
            item: items.names[r.item as usize].clone(),
            correct: r.correct,
        })
        .collect())
}

/// Parses a tags CSV (columns `item_id`, `tag` by header name) into (item, tag) pairs.
pub fn parse_tags(text: &str, path: &Path) -> Result<Vec<(String, String)>, EvalError> {
    let mut pairs = Vec::new();
    parse_csv(text, path, &["item_id", "tag"], |line, fields| {
        for (column, value) in [("item_id", fields[0]), ("tag", fields[1])] {
            if value.trim().is_empty() {
                return Err(EvalError::Csv {
                    path: path.to_owned(),
                    line,
                    message: format!("column {column}: empty value"),
                });
            }
        }
        pairs.push((fields[0].to_owned(), fields[1].to_owned()));
        Ok(())
    })?;
    Ok(pairs)
}

fn read(path: &Path) -> Result<String, EvalError> {
    std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Accuracy at threshold 0.5, AUC and log-loss of predictions p against outcomes y.
pub fn score(predictions: &[(f64, bool)]) -> (f64, Option<f64>, f64) {
    let n = predictions.len().max(1) as f64;
    let hits = predictions
        .iter()
        .filter(|(p, y)| (*p >= 0.5) == *y)
        .count();
    let log_loss = -predictions
        .iter()
        .map(|(p, y)| clipped_log_likelihood(*p, *y))
        .sum::<f64>()
        / n;
    (hits as f64 / n, auc(predictions), log_loss)
}

/// Rank-based (Mann–Whitney) AUC with average ranks for ties; `None` without both classes.
pub fn auc(predictions: &[(f64, bool)]) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = predictions.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_pos = sorted.iter().filter(|(_, y)| *y).count();
    let n_neg = sorted.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let average = (i + j + 2) as f64 / 2.0;
        let positives = sorted[i..=j].iter().filter(|(_, y)| *y).count();
        rank_sum += average * positives as f64;
        i = j + 1;
    }
    let (p, q) = (n_pos as f64, n_neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * q))
}

/// The §12 split of observed entries: ascending SHA-256(seed|student|item); returns
/// (test, validation, training) with ⌊20 %⌋ and ⌊10 %⌋ of them (no test part when
/// `with_test` is false: then the first ⌊10 %⌋ are validation).
pub fn split(
    rows: &[ResponseRow],
    seed: &str,
    with_test: bool,
) -> (Vec<ResponseRow>, Vec<ResponseRow>, Vec<ResponseRow>) {
    let mut keyed: Vec<([u8; 32], &ResponseRow)> = rows
        .iter()
        .map(|r| (sha256_joined(&[seed, &r.student, &r.item]), r))
        .collect();
    keyed.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| (&a.1.student, &a.1.item).cmp(&(&b.1.student, &b.1.item)))
    });
    let n = keyed.len();
    let n_test = if with_test { n / 5 } else { 0 };
    let n_validation = n / 10;
    let take =
        |range: std::ops::Range<usize>| keyed[range].iter().map(|(_, r)| (*r).clone()).collect();
    (
        take(0..n_test),
        take(n_test..n_test + n_validation),
        take(n_test + n_validation..n),
    )
}

/// The free model's W⁰ = 0.5 · |g|, g standard normal from ChaCha8Rng seed 0, row-major K × Q.
pub fn free_initial_loadings(k: usize, q: usize) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    Array2::from_shape_fn((k, q), |_| {
        let g: f64 = StandardNormal.sample(&mut rng);
        0.5 * g.abs()
    })
}

/// [`split`] on interned rows, hashing on up to `threads` threads: the same partition
/// in the same order.
fn split_rows(
    rows: &[Row],
    students: &Interner,
    items: &Interner,
    seed: &str,
    with_test: bool,
    threads: usize,
) -> (Vec<Row>, Vec<Row>, Vec<Row>) {
    // Rows are sorted by their key's first 8 bytes as a big-endian number (compact
    // entries, integer comparisons), then runs with equal prefixes (almost never more
    // than one row) by the whole key and the names: exactly the order of the bytes.
    let mut keys: Vec<[u8; 32]> = vec![[0; 32]; rows.len()];
    let chunk = rows.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        for (part, out) in rows.chunks(chunk).zip(keys.chunks_mut(chunk)) {
            scope.spawn(move || {
                for (r, slot) in part.iter().zip(out.iter_mut()) {
                    *slot = sha256_joined(&[
                        seed,
                        &students.names[r.student as usize],
                        &items.names[r.item as usize],
                    ]);
                }
            });
        }
    });
    let prefix = |key: &[u8; 32]| {
        let mut first = [0u8; 8];
        first.copy_from_slice(&key[..8]);
        u64::from_be_bytes(first)
    };
    let mut keyed: Vec<(u64, u32)> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| (prefix(key), i as u32))
        .collect();
    keyed.sort_unstable();
    let names = |i: u32| {
        let r = rows[i as usize];
        (
            &students.names[r.student as usize],
            &items.names[r.item as usize],
        )
    };
    let mut start = 0;
    while start < keyed.len() {
        let mut end = start + 1;
        while end < keyed.len() && keyed[end].0 == keyed[start].0 {
            end += 1;
        }
        if end - start > 1 {
            keyed[start..end].sort_unstable_by(|a, b| {
                keys[a.1 as usize]
                    .cmp(&keys[b.1 as usize])
                    .then_with(|| names(a.1).cmp(&names(b.1)))
            });
        }
        start = end;
    }
    let n = keyed.len();
    let n_test = if with_test { n / 5 } else { 0 };
    let n_validation = n / 10;
    let take = |range: std::ops::Range<usize>| {
        keyed[range]
            .iter()
            .map(|(_, i)| rows[*i as usize])
            .collect()
    };
    (
        take(0..n_test),
        take(n_test..n_test + n_validation),
        take(n_test + n_validation..n),
    )
}

/// For each interned id, its position among all names sorted ascending.
fn ranks(interner: &Interner) -> Vec<usize> {
    let mut order: Vec<u32> = (0..interner.names.len() as u32).collect();
    order.sort_unstable_by(|a, b| interner.names[*a as usize].cmp(&interner.names[*b as usize]));
    let mut rank = vec![0; order.len()];
    for (position, id) in order.into_iter().enumerate() {
        rank[id as usize] = position;
    }
    rank
}

/// Runs the §12 protocol and returns one report per requested model.
pub fn run_eval(options: &EvalOptions) -> Result<Vec<ModelReport>, EvalError> {
    // Up to two threads; the result does not depend on it.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let (mut students, mut items) = (Interner::default(), Interner::default());
    let responses = parse_rows(
        &read(&options.responses)?,
        &options.responses,
        &mut students,
        &mut items,
    )?;
    if responses.is_empty() {
        return Err(EvalError::NoResponses(options.responses.clone()));
    }
    let (response_students, response_items) = (students.names.len(), items.names.len());
    let tags = match &options.tags {
        Some(path) => Some(parse_tags(&read(path)?, path)?),
        None => None,
    };
    let external_test = match &options.test {
        Some(path) => Some(parse_rows(&read(path)?, path, &mut students, &mut items)?),
        None => None,
    };
    for (item, _) in tags.iter().flatten() {
        items.id(item);
    }
    let (test, validation, train) = match external_test {
        Some(test) => {
            let (_, validation, train) =
                split_rows(&responses, &students, &items, &options.seed, false, threads);
            (test, validation, train)
        }
        None => split_rows(&responses, &students, &items, &options.seed, true, threads),
    };
    let (student_rank, item_rank) = (ranks(&students), ranks(&items));
    let observations = |rows: &[Row]| -> Vec<Observation> {
        rows.iter()
            .map(|r| Observation {
                learner: student_rank[r.student as usize],
                question: item_rank[r.item as usize],
                correct: r.correct,
            })
            .collect()
    };
    let (n_students, n_items) = (students.names.len(), items.names.len());
    let observed_fraction = responses.len() as f64 / (response_students * response_items) as f64;
    let mean_correct =
        responses.iter().filter(|r| r.correct).count() as f64 / responses.len() as f64;

    let train_obs = Observations::new(n_students, n_items, &observations(&train))?;
    // Learners are scored for the test from all their fitting responses (training and
    // validation), with the selected model's (W, d) fixed.
    let scoring_obs = Observations::new(
        n_students,
        n_items,
        &observations(&[train.as_slice(), validation.as_slice()].concat()),
    )?;
    let validation_obs = observations(&validation);
    let test_obs = observations(&test);

    // Tag hints: K = distinct tags, ascending.
    let tag_names: BTreeSet<&str> = tags.iter().flatten().map(|(_, t)| t.as_str()).collect();
    let tag_index: HashMap<&str, usize> =
        tag_names.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut tag_hints = Array2::from_elem((tag_names.len(), n_items), false);
    for (item, tag) in tags.iter().flatten() {
        tag_hints[(
            tag_index[tag.as_str()],
            item_rank[items.index[item.as_str()] as usize],
        )] = true;
    }
    let n_free = options.concepts.unwrap_or(tag_names.len().max(3));
    let free_hints = Array2::from_elem((n_free, n_items), false);
    let free_init = free_initial_loadings(n_free, n_items);
    let no_pages = Array2::from_elem((0, n_items), false);

    let models = if options.models.is_empty() {
        vec![if tags.is_some() {
            ModelKind::Tagged
        } else {
            ModelKind::Free
        }]
    } else {
        options.models.clone()
    };
    let mut reports = Vec::with_capacity(models.len());
    for (m, kind) in models.iter().enumerate() {
        let started = Instant::now();
        let (predict, fitted): (Predictor, Option<_>) = if *kind == ModelKind::ItemMean {
            let means: Vec<f64> = (0..n_items)
                .map(|q| {
                    let (mut s, mut n) = (0.0, 0.0);
                    for (_, y) in train_obs.question(q) {
                        n += 1.0;
                        s += f64::from(u8::from(y));
                    }
                    if n > 0.0 {
                        s / n
                    } else {
                        0.5
                    }
                })
                .collect();
            (Box::new(move |o: &Observation| means[o.question]), None)
        } else {
            let (pages, free, candidates): (&Array2<bool>, Option<&Array2<f64>>, Vec<Candidate>) =
                match kind {
                    ModelKind::Rasch => (&no_pages, None, vec![rasch_candidate()]),
                    ModelKind::TwoPl => (&no_pages, None, vec![two_pl_candidate()]),
                    ModelKind::TwoPlMarginal => {
                        (&no_pages, None, vec![two_pl_marginal_candidate()])
                    }
                    ModelKind::RaschMarginal => (&no_pages, None, vec![rasch_marginal_candidate()]),
                    ModelKind::Tagged | ModelKind::TaggedSpec => {
                        let spec_only = *kind == ModelKind::TaggedSpec;
                        if tags.is_none() {
                            return Err(EvalError::TagsRequired(kind.name()));
                        }
                        let c = if spec_only {
                            vec![hinted_spec_candidate()]
                        } else {
                            hinted_candidates()
                        };
                        (&tag_hints, None, c)
                    }
                    ModelKind::Free => (&free_hints, Some(&free_init), free_candidates()),
                    ModelKind::FreeSpec | ModelKind::ItemMean => {
                        (&free_hints, Some(&free_init), vec![free_candidate()])
                    }
                };
            let input = SelectionInput {
                page_hints: pages.view(),
                free_init: free.map(|w| w.view()),
                train: &train_obs,
                holdout: &validation_obs,
                selection_cap: SELECTION_CAP,
                threads,
            };
            let Some(selected) = fit_selected(&input, &candidates) else {
                continue;
            };
            let predict = if options.rescore {
                rescored_predictor(&selected, &scoring_obs, threads)
            } else {
                let fit = selected.fit.clone();
                Box::new(move |o: &Observation| fit.predict(o.learner, o.question)) as Predictor
            };
            (predict, Some(selected))
        };
        let fit_seconds = started.elapsed().as_secs_f64();
        let scored: Vec<(f64, bool)> = test_obs.iter().map(|o| (predict(o), o.correct)).collect();
        if m == 0 {
            if let Some(path) = &options.predictions {
                let names = test.iter().map(|r| {
                    (
                        students.names[r.student as usize].as_str(),
                        items.names[r.item as usize].as_str(),
                    )
                });
                write_predictions(path, names, &scored)?;
            }
        }
        let (accuracy, auc, log_loss) = score(&scored);
        reports.push(ModelReport {
            model: kind.name().to_owned(),
            accuracy,
            auc,
            log_loss,
            fit_seconds,
            n_train: train_obs.len(),
            n_test: test_obs.len(),
            concepts: fitted.as_ref().map_or(0, |s| s.hints.nrows()),
            hyperparameters: fitted.as_ref().map(|s| s.chosen.hyperparameters.clone()),
            candidate: fitted.as_ref().map(|s| s.chosen.name.clone()),
            outer_iterations: fitted.as_ref().map_or(0, |s| s.fit.stats.outer_iterations),
            n_validation: validation_obs.len(),
            selection: fitted
                .as_ref()
                .filter(|s| s.scores.len() > 1)
                .map_or_else(Vec::new, |s| s.scores.clone()),
            n_students,
            n_items,
            observed_fraction,
            mean_correct,
        });
    }
    Ok(reports)
}

/// Test predictions of a selected model with each learner re-scored from `responses`
/// (W and d fixed): EAP for a marginal candidate, the §10.1 solve for a joint one.
fn rescored_predictor(
    selected: &SelectedFit,
    responses: &Observations,
    threads: usize,
) -> Predictor {
    let fit = &selected.fit;
    if selected.chosen.estimator == Estimator::Marginal {
        let k = fit.loadings.nrows();
        let slopes: Vec<f64> = fit.loadings.row(k - 1).to_vec();
        let easiness = fit.easiness.to_vec();
        let theta = eap_scores(responses, &slopes, &easiness, threads);
        return Box::new(move |o: &Observation| {
            sigmoid(slopes[o.question] * theta[o.learner] + easiness[o.question])
        });
    }
    let knowledge = rescore_knowledge(
        fit,
        &selected.chosen.hyperparameters,
        responses,
        RESCORE_ROUNDS,
        threads,
    );
    let (loadings, easiness) = (fit.loadings.clone(), fit.easiness.clone());
    Box::new(move |o: &Observation| {
        let z = easiness[o.question]
            + loadings
                .column(o.question)
                .iter()
                .zip(knowledge.row(o.learner))
                .map(|(w, u)| w * u)
                .sum::<f64>();
        sigmoid(z)
    })
}

fn write_predictions<'a>(
    path: &Path,
    test: impl Iterator<Item = (&'a str, &'a str)>,
    scored: &[(f64, bool)],
) -> Result<(), EvalError> {
    let mut out = String::from("student_id,item_id,p_correct\n");
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    for ((student, item), (p, _)) in test.zip(scored) {
        let _ = writeln!(out, "{},{},{p}", quote(student), quote(item));
    }
    std::fs::write(path, out).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A human-readable table of reports (for standard error).
pub fn format_table(reports: &[ModelReport]) -> String {
    let mut out = String::new();
    if let Some(r) = reports.first() {
        let _ = writeln!(
            out,
            "students {}  items {}  observed {:.3}  mean correct {:.3}  train {}  validation {}  test {}",
            r.n_students, r.n_items, r.observed_fraction, r.mean_correct, r.n_train, r.n_validation, r.n_test
        );
    }
    let _ = writeln!(
        out,
        "{:<12} {:>8} {:>8} {:>8} {:>8} {:>4} {:>6}  candidate",
        "model", "accuracy", "auc", "log_loss", "fit_s", "K", "iters"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<12} {:>8.4} {:>8} {:>8.4} {:>8.3} {:>4} {:>6}  {}",
            r.model,
            r.accuracy,
            r.auc.map_or("-".to_owned(), |a| format!("{a:.4}")),
            r.log_loss,
            r.fit_seconds,
            r.concepts,
            r.outer_iterations,
            r.candidate.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests;
