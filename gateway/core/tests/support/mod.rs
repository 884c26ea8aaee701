//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository's `schemas/` folder.
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// The `*.json` files of a folder, sorted.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Compiles `schemas/interchange/<name>/schema.json` with format checking on.
pub fn interchange_validator(name: &str) -> jsonschema::Validator {
    let path = schemas_dir().join("interchange").join(name).join("schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).expect("schema")).expect("json");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Panics with every schema error if `doc` does not match `schemas/interchange/<name>`.
pub fn assert_matches_schema(name: &str, doc: &Value) {
    let v = interchange_validator(name);
    let errors: Vec<String> = v.iter_errors(doc).map(|e| format!("{} {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}");
}
