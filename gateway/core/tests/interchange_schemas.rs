//! The interchange schemas (`schemas/interchange/`): every valid example passes, every invalid
//! one fails at the place it names.

mod support;

use serde_json::Value;
use support::{assert_matches_schema, interchange_validator, json_files, schemas_dir};

#[test]
fn interchange_examples_are_judged_as_labelled() {
    let names = [
        "jws",
        "jws_header",
        "envelope_header",
        "envelope",
        "receipt",
        "registry",
        "evidence",
        "agreement",
        "evaluation_answer",
        "evaluation_evidence",
    ];
    for name in names {
        let v = interchange_validator(name);
        let dir = schemas_dir().join("interchange").join(name);
        for file in json_files(&dir.join("valid")) {
            assert_matches_schema(name, &serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json"));
        }
        let invalid = json_files(&dir.join("invalid"));
        assert!(invalid.len() >= 3, "{name}: too few invalid examples");
        for file in invalid {
            let wrapper: Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
            let doc = &wrapper["record"];
            let paths: Vec<String> = v.iter_errors(doc).map(|e| e.instance_path().to_string()).collect();
            assert!(!paths.is_empty(), "{}: passes, but it is an invalid example", file.display());
            for e in wrapper["expect"].as_array().expect("expect") {
                let pointer = e["pointer"].as_str().expect("pointer");
                // Missing or unexpected members are reported at their parent object.
                let parent = pointer.rsplit_once('/').map_or("", |(p, _)| p);
                assert!(
                    paths.iter().any(|p| p == pointer || p == parent),
                    "{}: expected an error at {pointer:?}, got {paths:?}",
                    file.display()
                );
            }
        }
    }
}
