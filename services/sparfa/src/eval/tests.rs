//! Unit tests of `eval`: CSV parsing and its errors, AUC with ties, the split, and a small end-to-end run.

use super::*;

fn path() -> PathBuf {
    PathBuf::from("responses.csv")
}

fn check_error(text: &str, expected_line: usize, expected_fragment: &str) {
    match parse_responses(text, &path()) {
        Err(EvalError::Csv { line, message, .. }) => {
            assert_eq!(line, expected_line, "{message}");
            assert!(message.contains(expected_fragment), "{message}");
        }
        other => panic!("expected a CSV error, got {other:?}"),
    }
}

#[test]
fn csv_errors_name_the_line_and_column() {
    check_error("", 1, "empty file");
    check_error("student,item,correct\n", 1, "no column \"student_id\"");
    check_error(
        "student_id,item_id,correct,item_id\n",
        1,
        "column \"item_id\" appears twice",
    );
    check_error(
        "student_id,item_id,correct\ns1,i1,1\ns1,i2,yes\n",
        3,
        "column correct: bad value \"yes\"",
    );
    check_error(
        "student_id,item_id,correct\ns1,i1\n",
        2,
        "expected 3 columns like the header, found 2",
    );
    check_error(
        "student_id,item_id,correct\ns1,i1,1,9\n",
        2,
        "expected 3 columns like the header, found 4",
    );
    // An unterminated quote swallows the rest of the file into one field.
    check_error("student_id,item_id,correct\n\"s1,i1,1\n", 2, "found 1");
    check_error(
        "student_id,item_id,correct\n,i1,1\n",
        2,
        "column student_id: empty",
    );
    check_error(
        "student_id,item_id,correct\ns1, ,0\n",
        2,
        "column item_id: empty",
    );
    // Line numbers count physical lines, also after a quoted field spanning two.
    check_error(
        "student_id,item_id,correct\n\"s\n1\",i1,1\ns2,i1,2\n",
        4,
        "bad value \"2\"",
    );
    let err = parse_tags("item,tag\n", Path::new("tags.csv")).unwrap_err();
    assert!(
        err.to_string().starts_with("tags.csv:1: bad header"),
        "{err}"
    );
    let err = parse_tags("item_id,tag\ni1,\n", Path::new("tags.csv")).unwrap_err();
    assert_eq!(err.to_string(), "tags.csv:2: column tag: empty value");
    let bad_utf8 = parse_csv_bytes(b"student_id,item_id,correct\ns1,i\xff,1\n");
    assert!(bad_utf8.is_err());
}

/// Invalid UTF-8 cannot be a `&str`: it is caught when the file is read.
fn parse_csv_bytes(bytes: &[u8]) -> Result<Vec<ResponseRow>, EvalError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.csv");
    std::fs::write(&file, bytes).unwrap();
    parse_responses(&read(&file)?, &file)
}

#[test]
fn responses_parse_quotes_crlf_and_keep_the_first_of_duplicates() {
    let rows = parse_responses(
        "\u{feff}student_id,item_id,correct\r\n\"s,1\",i1,1\r\ns2,\"i\"\"2\",0\n\ns2,\"i\"\"2\",1\n",
        &path(),
    )
    .unwrap();
    let got: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| (r.student.as_str(), r.item.as_str(), r.correct))
        .collect();
    assert_eq!(got, vec![("s,1", "i1", true), ("s2", "i\"2", false)]);
}

#[test]
fn responses_find_columns_by_header_name_and_accept_true_false() {
    let rows = parse_responses(
        "correct, item_id ,session,student_id\nTRUE,i1,x,s1\nfalse,i2,y,s1\n 1 ,i3,z,s2\n0,i1,,s2\n",
        &path(),
    )
    .unwrap();
    let got: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| (r.student.as_str(), r.item.as_str(), r.correct))
        .collect();
    assert_eq!(
        got,
        vec![
            ("s1", "i1", true),
            ("s1", "i2", false),
            ("s2", "i3", true),
            ("s2", "i1", false)
        ]
    );
    let tags = parse_tags("tag,item_id\nalgebra,i1\n\"a, b\",i2\n", Path::new("t.csv")).unwrap();
    assert_eq!(
        tags,
        vec![
            ("i1".to_owned(), "algebra".to_owned()),
            ("i2".to_owned(), "a, b".to_owned())
        ]
    );
}

fn check_auc(input: &[(f64, bool)], expected: Option<f64>) {
    match (auc(input), expected) {
        (Some(a), Some(e)) => assert!((a - e).abs() < 1e-12, "{a} != {e}"),
        (a, e) => assert_eq!(a, e),
    }
}

#[test]
fn auc_gives_ties_their_average_rank() {
    check_auc(
        &[(0.1, false), (0.4, true), (0.4, false), (0.8, true)],
        Some(0.875),
    );
    check_auc(&[(0.5, false), (0.5, true), (0.5, true)], Some(0.5));
    check_auc(&[(0.9, false), (0.1, true)], Some(0.0));
    check_auc(&[(0.1, false), (0.9, true)], Some(1.0));
    check_auc(&[(0.3, true), (0.4, true)], None);
    let (accuracy, _, log_loss) = score(&[(0.5, true), (0.2, true), (0.0, false)]);
    assert!((accuracy - 2.0 / 3.0).abs() < 1e-12);
    let expected = -(0.5f64.ln() + 0.2f64.ln() + (1.0 - 1e-15f64).ln()) / 3.0;
    assert!((log_loss - expected).abs() < 1e-12);
}

fn rows(n_students: usize, n_items: usize) -> Vec<ResponseRow> {
    (0..n_students)
        .flat_map(|s| {
            (0..n_items).map(move |i| ResponseRow {
                student: format!("s{s}"),
                item: format!("i{i}"),
                correct: (s * 7 + i * 3) % 5 < 3,
            })
        })
        .collect()
}

#[test]
fn split_is_hash_ordered_sized_and_stable() {
    let all = rows(10, 10);
    let (test, validation, train) = split(&all, "42", true);
    assert_eq!((test.len(), validation.len(), train.len()), (20, 10, 70));
    let key = |r: &ResponseRow| sha256_joined(&["42", &r.student, &r.item]);
    let ordered: Vec<[u8; 32]> = test
        .iter()
        .chain(&validation)
        .chain(&train)
        .map(key)
        .collect();
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(split(&all, "42", true), (test.clone(), validation, train));
    assert_ne!(split(&all, "43", true).0, test);
    let (none, validation, train) = split(&all, "42", false);
    assert_eq!((none.len(), validation.len(), train.len()), (0, 10, 90));
}

#[test]
fn interned_split_matches_the_plain_split_for_any_thread_count() {
    let all = rows(30, 17);
    let (mut students, mut items) = (Interner::default(), Interner::default());
    let interned: Vec<Row> = all
        .iter()
        .map(|r| Row {
            student: students.id(&r.student),
            item: items.id(&r.item),
            correct: r.correct,
        })
        .collect();
    let plain = |part: &[Row]| -> Vec<ResponseRow> {
        part.iter()
            .map(|r| ResponseRow {
                student: students.names[r.student as usize].clone(),
                item: items.names[r.item as usize].clone(),
                correct: r.correct,
            })
            .collect()
    };
    for with_test in [true, false] {
        let expected = split(&all, "7", with_test);
        for threads in [1, 2, 3] {
            let (test, validation, train) =
                split_rows(&interned, &students, &items, "7", with_test, threads);
            assert_eq!(
                (plain(&test), plain(&validation), plain(&train)),
                expected,
                "{threads} threads, with_test {with_test}"
            );
        }
    }
}

#[test]
fn free_initial_loadings_are_seeded_and_non_negative() {
    let a = free_initial_loadings(3, 4);
    assert_eq!(a, free_initial_loadings(3, 4));
    assert!(a.iter().all(|w| *w >= 0.0) && a.iter().any(|w| *w > 0.0));
    // Draws are row-major, so the first row agrees with a 1 × 4 draw.
    assert_eq!(a.row(0), free_initial_loadings(1, 4).row(0));
}

#[test]
fn run_eval_reports_every_model_and_writes_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let responses = dir.path().join("responses.csv");
    let tags = dir.path().join("tags.csv");
    let predictions = dir.path().join("predictions.csv");
    let mut text = String::from("student_id,item_id,correct\n");
    for r in rows(40, 12) {
        text.push_str(&format!(
            "{},{},{}\n",
            r.student,
            r.item,
            u8::from(r.correct)
        ));
    }
    std::fs::write(&responses, text).unwrap();
    let tag_text: String = (0..12).map(|i| format!("i{i},t{}\n", i % 3)).collect();
    std::fs::write(&tags, format!("item_id,tag\n{tag_text}")).unwrap();
    let options = EvalOptions {
        responses: responses.clone(),
        tags: Some(tags),
        test: None,
        predictions: Some(predictions.clone()),
        concepts: None,
        models: "item-mean,rasch,2pl,tagged,free"
            .split(',')
            .map(|m| m.parse().unwrap())
            .collect(),
        seed: "42".to_owned(),
        rescore: true,
    };
    let reports = run_eval(&options).unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(names, vec!["item-mean", "rasch", "2pl", "tagged", "free"]);
    for r in &reports {
        assert_eq!((r.n_test, r.n_validation, r.n_train), (96, 48, 336));
        assert!((0.0..=1.0).contains(&r.accuracy));
        let json = serde_json::to_value(r).unwrap();
        for field in [
            "model",
            "accuracy",
            "auc",
            "log_loss",
            "fit_seconds",
            "n_train",
            "n_test",
            "concepts",
            "outer_iterations",
        ] {
            assert!(json.get(field).is_some(), "{field} missing in {json}");
        }
    }
    let tagged = serde_json::to_value(&reports[3]).unwrap();
    assert!(tagged.get("lambda_h_l2").is_some() && tagged.get("candidate").is_some());
    let written = std::fs::read_to_string(&predictions).unwrap();
    assert!(written.starts_with("student_id,item_id,p_correct\n"));
    assert_eq!(written.lines().count(), 97);
    assert!(format_table(&reports).contains("tagged"));
    // Without tags, tagged is an error and the default model is free.
    let mut no_tags = options.clone();
    no_tags.tags = None;
    assert!(matches!(
        run_eval(&no_tags),
        Err(EvalError::TagsRequired("tagged"))
    ));
    no_tags.models.clear();
    no_tags.predictions = None;
    assert_eq!(run_eval(&no_tags).unwrap()[0].model, "free");
    // With --test the whole file trains (minus its validation share) and the test file scores.
    let mut with_test = no_tags.clone();
    with_test.test = Some(responses);
    let r = &run_eval(&with_test).unwrap()[0];
    assert_eq!((r.n_test, r.n_validation, r.n_train), (480, 48, 432));
    assert!(matches!(
        "bogus".parse::<ModelKind>(),
        Err(EvalError::UnknownModel(_))
    ));
}
