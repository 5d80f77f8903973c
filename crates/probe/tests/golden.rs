//! Golden fixtures: every file under `fixtures/assets` that `fixtures/expected/*.json`
//! names is probed and compared field by field with the values recorded there (which
//! were cross-checked against ffprobe / exiftool / pdfinfo / dcmdump when added).
//!
//! Each expected file is a JSON array of cases:
//! `{"file": "image/x.png", "expect": {"data_type": "image", "width": 3, ...}}` or
//! `{"file": "bad/x.png", "error": "truncated"}`. The `expect` object lists every field
//! the probe must report besides `size_bytes` (checked against the file), and no other
//! field may appear. Floats compare with the tolerances of the issue: durations within
//! 1% or 50 ms, frame rates within 0.5%.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use asset_probe::{Limits, probe};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[derive(Debug, serde::Deserialize)]
struct Case {
    file: String,
    #[serde(default)]
    expect: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    error: Option<String>,
}

fn load_cases() -> Vec<(String, Case)> {
    let dir = fixtures_dir().join("expected");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/expected exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let list: Vec<Case> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", f.display()));
        let origin = f.file_name().unwrap().to_string_lossy().into_owned();
        cases.extend(list.into_iter().map(|c| (origin.clone(), c)));
    }
    cases
}

fn close(field: &str, actual: f64, expected: f64) -> bool {
    match field {
        "duration_seconds" => (actual - expected).abs() <= (expected.abs() * 0.01).max(0.05),
        "frame_rate" => (actual - expected).abs() <= expected.abs() * 0.005,
        _ => (actual - expected).abs() <= 1e-9,
    }
}

fn check(case: &Case) -> Result<(), String> {
    let path = fixtures_dir().join("assets").join(&case.file);
    if !path.exists() {
        return Err("fixture file is missing".into());
    }
    let result = probe(&path, &Limits::default());
    match (&case.error, &case.expect, result) {
        (Some(code), _, Err(err)) if err.code().as_str() == code => Ok(()),
        (Some(code), _, Err(err)) => Err(format!("expected error {code}, got {} ({err})", err.code())),
        (Some(code), _, Ok(m)) => {
            Err(format!("expected error {code}, got metadata {}", serde_json::to_string(&m).unwrap()))
        }
        (None, None, _) => Err("case has neither expect nor error".into()),
        (None, Some(_), Err(err)) => Err(format!("unexpected error {}: {err}", err.code())),
        (None, Some(expect), Ok(m)) => {
            let actual = serde_json::to_value(&m).unwrap();
            let actual = actual.as_object().unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            let mut problems = Vec::new();
            if actual["size_bytes"] != size {
                problems.push(format!("size_bytes {} != {size}", actual["size_bytes"]));
            }
            let want: BTreeSet<&String> = expect.keys().filter(|k| *k != "size_bytes").collect();
            let got: BTreeSet<&String> = actual.keys().filter(|k| *k != "size_bytes").collect();
            for extra in got.difference(&want) {
                problems.push(format!("unexpected field {extra} = {}", actual[*extra]));
            }
            for missing in want.difference(&got) {
                problems.push(format!("missing field {missing} (expected {})", expect[*missing]));
            }
            for key in want.intersection(&got) {
                let (a, e) = (&actual[*key], &expect[*key]);
                let ok = match (a.as_f64(), e.as_f64()) {
                    (Some(a), Some(e)) if a.is_finite() => close(key, a, e),
                    _ => a == e,
                };
                if !ok {
                    problems.push(format!("{key}: got {a}, expected {e}"));
                }
            }
            if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
        }
    }
}

#[test]
fn every_fixture_matches_its_expected_values() {
    let cases = load_cases();
    let mut failures = Vec::new();
    for (origin, case) in &cases {
        if let Err(why) = check(case) {
            failures.push(format!("[{origin}] {}: {why}", case.file));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every asset under fixtures/assets has an expected entry: nothing is added untested.
#[test]
fn every_fixture_file_has_expected_values() {
    let named: BTreeSet<String> = load_cases().into_iter().map(|(_, c)| c.file).collect();
    let root = fixtures_dir().join("assets");
    let mut stack = vec![root.clone()];
    let mut missing = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if !name.ends_with(".md") && !name.starts_with('.') {
                let rel = p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
                if !named.contains(&rel) {
                    missing.push(rel);
                }
            }
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "fixtures without expected values: {missing:?}");
}

/// TGA has no magic and TGA 1.0 no footer: an uncompressed one is still recognised under
/// a name that says nothing (an object key without an extension), from its exact size;
/// the answer is the one recorded for the named fixture. An RLE one, whose size its
/// header does not say, stays `unsupported_format` without its name.
#[test]
fn a_footerless_uncompressed_tga_is_read_under_any_name() {
    let cases = load_cases();
    let expected = |file: &str| {
        cases
            .iter()
            .find(|(_, c)| c.file == file)
            .and_then(|(_, c)| c.expect.clone())
            .expect("a recorded case")
    };
    let dir = tempfile::tempdir().unwrap();
    let anonymous = |file: &str| {
        let to = dir.path().join(file.replace(['/', '.'], "-"));
        std::fs::copy(fixtures_dir().join("assets").join(file), &to).unwrap();
        to
    };
    let want = expected("image/tga-uncompressed.tga");
    let got = probe(&anonymous("image/tga-uncompressed.tga"), &Limits::default()).unwrap();
    let got = serde_json::to_value(&got).unwrap();
    for field in ["data_type", "mime", "width", "height"] {
        assert_eq!(got[field], want[field], "{field}");
    }
    let err = probe(&anonymous("image/tga-rle.tga"), &Limits::default()).unwrap_err();
    assert_eq!(err.code().as_str(), "unsupported_format");
}
