//! The §12 offline evaluation: CSV input, the hash split, the five models and their test scores.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::fit::{clipped_log_likelihood, Hyperparameters};
use crate::hash::sha256_joined;
use crate::observations::{Observation, Observations};
use crate::select::{
    fit_selected, free_candidate, free_candidates, hinted_candidates, hinted_spec_candidate,
    rasch_candidate, two_pl_candidate, Candidate, CandidateScore, SelectionInput,
};
use crate::SparfaError;

/// A fitted model's P(correct) for a test observation.
type Predictor = Box<dyn Fn(&Observation) -> f64>;

/// Above this many training observations, candidates are compared on a learner subsample.
pub const SELECTION_CAP: usize = 2_000_000;
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
        }
    }

    /// Every model, in report order.
    pub const ALL: [ModelKind; 7] = [
        Self::ItemMean,
        Self::Rasch,
        Self::TwoPl,
        Self::Tagged,
        Self::TaggedSpec,
        Self::Free,
        Self::FreeSpec,
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
    #[error("unknown model {0:?} (expected one of item-mean, rasch, 2pl, tagged, tagged-spec, free, free-spec)")]
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

/// Splits one CSV line into fields, honouring double quotes ("" inside quotes is a quote).
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    while let Some(ch) = chars.next() {
        match (in_quotes, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => in_quotes = false,
            (false, '"') if field.is_empty() => in_quotes = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quoted field".to_owned());
    }
    fields.push(field);
    Ok(fields)
}

/// Parses CSV text with an exact expected header; returns (line number, fields) per data row.
fn parse_csv(
    text: &str,
    path: &Path,
    header: &[&str],
) -> Result<Vec<(usize, Vec<String>)>, EvalError> {
    let csv_error = |line: usize, message: String| EvalError::Csv {
        path: path.to_owned(),
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let Some((_, first)) = lines.next() else {
        return Err(csv_error(
            1,
            format!("empty file, expected header {}", header.join(",")),
        ));
    };
    let found =
        split_csv_line(first.trim_start_matches('\u{feff}')).map_err(|m| csv_error(1, m))?;
    let found: Vec<&str> = found.iter().map(|f| f.trim()).collect();
    if found != header {
        return Err(csv_error(
            1,
            format!(
                "bad header {:?}, expected {}",
                found.join(","),
                header.join(",")
            ),
        ));
    }
    let mut rows = Vec::new();
    for (line, text) in lines {
        if text.trim().is_empty() {
            continue;
        }
        let fields = split_csv_line(text).map_err(|m| csv_error(line, m))?;
        if fields.len() != header.len() {
            let missing = header
                .get(fields.len())
                .map_or(String::new(), |h| format!(" (missing {h})"));
            return Err(csv_error(
                line,
                format!(
                    "expected {} columns, found {}{missing}",
                    header.len(),
                    fields.len()
                ),
            ));
        }
        rows.push((line, fields));
    }
    Ok(rows)
}

/// Parses a responses CSV (`student_id,item_id,correct`); for a repeated (student,
/// item) pair the first row wins.
pub fn parse_responses(text: &str, path: &Path) -> Result<Vec<ResponseRow>, EvalError> {
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for (line, fields) in parse_csv(text, path, &["student_id", "item_id", "correct"])? {
        let correct = match fields[2].trim() {
            "0" => false,
            "1" => true,
            other => {
                return Err(EvalError::Csv {
                    path: path.to_owned(),
                    line,
                    message: format!("bad correct value {other:?}, expected 0 or 1"),
                })
            }
        };
        let (student, item) = (fields[0].clone(), fields[1].clone());
        if seen.insert((student.clone(), item.clone())) {
            rows.push(ResponseRow {
                student,
                item,
                correct,
            });
        }
    }
    Ok(rows)
}

/// Parses a tags CSV (`item_id,tag`) into (item, tag) pairs.
pub fn parse_tags(text: &str, path: &Path) -> Result<Vec<(String, String)>, EvalError> {
    Ok(parse_csv(text, path, &["item_id", "tag"])?
        .into_iter()
        .map(|(_, mut f)| {
            let tag = f.pop().unwrap_or_default();
            let item = f.pop().unwrap_or_default();
            (item, tag)
        })
        .collect())
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

struct Indexed {
    students: BTreeMap<String, usize>,
    items: BTreeMap<String, usize>,
}

impl Indexed {
    fn observations(&self, rows: &[ResponseRow]) -> Vec<Observation> {
        rows.iter()
            .map(|r| Observation {
                learner: self.students[&r.student],
                question: self.items[&r.item],
                correct: r.correct,
            })
            .collect()
    }
}

/// Runs the §12 protocol and returns one report per requested model.
pub fn run_eval(options: &EvalOptions) -> Result<Vec<ModelReport>, EvalError> {
    let responses = parse_responses(&read(&options.responses)?, &options.responses)?;
    if responses.is_empty() {
        return Err(EvalError::NoResponses(options.responses.clone()));
    }
    let tags = match &options.tags {
        Some(path) => Some(parse_tags(&read(path)?, path)?),
        None => None,
    };
    let external_test = match &options.test {
        Some(path) => Some(parse_responses(&read(path)?, path)?),
        None => None,
    };
    let (test, validation, train) = match &external_test {
        Some(test) => {
            let (_, validation, train) = split(&responses, &options.seed, false);
            (test.clone(), validation, train)
        }
        None => split(&responses, &options.seed, true),
    };
    let mut students = BTreeSet::new();
    let mut items = BTreeSet::new();
    for r in responses.iter().chain(external_test.iter().flatten()) {
        students.insert(r.student.clone());
        items.insert(r.item.clone());
    }
    for (item, _) in tags.iter().flatten() {
        items.insert(item.clone());
    }
    let index = Indexed {
        students: students
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i))
            .collect(),
        items: items.into_iter().enumerate().map(|(i, s)| (s, i)).collect(),
    };
    let (n_students, n_items) = (index.students.len(), index.items.len());
    let response_students: BTreeSet<&str> = responses.iter().map(|r| r.student.as_str()).collect();
    let response_items: BTreeSet<&str> = responses.iter().map(|r| r.item.as_str()).collect();
    let observed_fraction =
        responses.len() as f64 / (response_students.len() * response_items.len()) as f64;
    let mean_correct =
        responses.iter().filter(|r| r.correct).count() as f64 / responses.len() as f64;

    let train_obs = Observations::new(n_students, n_items, &index.observations(&train))?;
    let validation_obs = index.observations(&validation);
    let test_obs = index.observations(&test);
    // Candidates run side by side on up to two threads; the result does not depend on it.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));

    // Tag hints: K = distinct tags, ascending.
    let tag_names: BTreeSet<&str> = tags.iter().flatten().map(|(_, t)| t.as_str()).collect();
    let tag_index: HashMap<&str, usize> =
        tag_names.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut tag_hints = Array2::from_elem((tag_names.len(), n_items), false);
    for (item, tag) in tags.iter().flatten() {
        tag_hints[(tag_index[tag.as_str()], index.items[item])] = true;
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
            let fit = selected.fit.clone();
            (
                Box::new(move |o: &Observation| fit.predict(o.learner, o.question)),
                Some(selected),
            )
        };
        let fit_seconds = started.elapsed().as_secs_f64();
        let scored: Vec<(f64, bool)> = test_obs.iter().map(|o| (predict(o), o.correct)).collect();
        if m == 0 {
            if let Some(path) = &options.predictions {
                write_predictions(path, &test, &scored)?;
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

fn write_predictions(
    path: &Path,
    test: &[ResponseRow],
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
    for (row, (p, _)) in test.iter().zip(scored) {
        let _ = writeln!(out, "{},{},{p}", quote(&row.student), quote(&row.item));
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
