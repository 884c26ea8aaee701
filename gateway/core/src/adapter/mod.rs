//! Platform adapters (design §7): a declarative, root-signed manifest says how one platform's
//! own format maps to canonical records and back — columns, code tables, date formats, the
//! platform's JSON Schema and the GB/T 39443 exchange mode it uses.
//!
//! This module is sans-IO like the rest of the crate: the caller reads the manifest, its
//! signature and the files it names, and hands in bytes. [`Adapter::compile`] refuses a
//! manifest that does not match `schemas/adapter_manifest/schema.json`, names a schema whose
//! SHA-256 differs from the file given, or cannot represent a field its direction needs;
//! [`verify_signature`] refuses one that the federation root did not sign or the registry does
//! not approve.

pub mod conformance;
mod manifest;
mod mapping;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

pub use manifest::{
    DatabaseSettings, DatasetSpec, Direction, FieldKind, FieldMap, FileSettings, Formats, Manifest, Mode,
    PackageFormat, PlatformInfo, SchemaRef, ServiceSettings, TransportSpec, Way,
};
pub use mapping::{Dataset, DatePattern, Row};

use crate::canonical::Sha256Digest;
use crate::interchange::registry::Registry;
use crate::jws::Jws;
use crate::record::{FieldError, RecordType};

/// `typ` of a manifest signature (a JWS over `{platform, manifest_sha256, signed_at}`).
pub const MANIFEST_SIGNATURE_TYP: &str = "credit-gateway/adapter-manifest+v1";

/// The JSON Schema every manifest (TOML, read as JSON) must match.
pub const MANIFEST_SCHEMA: &str = include_str!("../../../../schemas/adapter_manifest/schema.json");

/// Why a manifest was refused. Each names the manifest's platform or file and the reason, so an
/// operator can fix it without reading code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    #[error("manifest is not valid TOML: {0}")]
    Toml(String),
    #[error("manifest does not match schemas/adapter_manifest/schema.json:\n{}", list(.0))]
    Schema(Vec<FieldError>),
    #[error("manifest is unsigned: no signature file {0} (sign it with `credit-gateway adapter sign`)")]
    Unsigned(String),
    #[error("manifest signature is malformed: {0}")]
    SignatureForm(String),
    #[error("manifest is signed by {kid}, which is not a federation root of the registry in force")]
    UntrustedSigner { kid: String },
    #[error("manifest signature does not verify")]
    BadSignature,
    #[error(
        "manifest was altered after signing: its SHA-256 is {actual}, the signature covers {signed} \
         (re-sign the reviewed manifest, or restore the signed one)"
    )]
    Tampered { actual: String, signed: String },
    #[error("signature is for platform {signed}, but the manifest declares {declared}")]
    WrongPlatform { signed: String, declared: String },
    #[error(
        "manifest {sha256} of platform {platform} is not approved by registry version {registry_version} \
         (the federation operator lists approved manifest hashes under `adapters`)"
    )]
    NotApproved { platform: String, sha256: String, registry_version: u64 },
    #[error("dataset {dataset}: cannot read {path}: {message}")]
    File { dataset: String, path: String, message: String },
    #[error("dataset {dataset}: {path} has SHA-256 {actual}, the manifest pins {pinned}")]
    SchemaHash { dataset: String, path: String, actual: String, pinned: String },
    #[error("dataset {dataset}: {message}")]
    Mapping { dataset: String, message: String },
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("  {} [{}]: {}", e.pointer, e.rule, e.message_en)).collect::<Vec<_>>().join("\n")
}

/// A manifest that matches its schema and whose mappings are complete, ready to translate.
#[derive(Debug)]
pub struct Adapter {
    pub manifest: Manifest,
    /// SHA-256 of the manifest file's bytes (what the root signs and the registry approves).
    pub sha256: Sha256Digest,
    pub datasets: Vec<Arc<Dataset>>,
}

impl Adapter {
    /// Compiles a manifest. `read` returns the bytes of a file the manifest names (its path as
    /// written, relative to the manifest's folder).
    pub fn compile(text: &[u8], read: impl Fn(&str) -> Result<Vec<u8>, String>) -> Result<Self, AdapterError> {
        let sha256 = Sha256Digest::of(text);
        let text = std::str::from_utf8(text).map_err(|e| AdapterError::Toml(e.to_string()))?;
        let value: toml::Value = toml::from_str(text).map_err(|e| AdapterError::Toml(e.to_string()))?;
        let json = serde_json::to_value(&value).map_err(|e| AdapterError::Toml(e.to_string()))?;
        check_manifest_schema(&json)?;
        let manifest: Manifest = serde_json::from_value(json).map_err(|e| {
            AdapterError::Schema(vec![FieldError::new("", "manifest.shape", e.to_string(), e.to_string())])
        })?;
        let mut datasets = Vec::with_capacity(manifest.datasets.len());
        for spec in &manifest.datasets {
            datasets.push(Arc::new(Dataset::compile(&manifest, spec, &read)?));
        }
        let mut names = BTreeSet::new();
        for d in &manifest.datasets {
            if !names.insert(d.name.as_str()) {
                return Err(AdapterError::Mapping {
                    dataset: d.name.clone(),
                    message: "two datasets share this name".into(),
                });
            }
        }
        Ok(Self { manifest, sha256, datasets })
    }

    /// The platform id (`[platform] id`).
    pub fn id(&self) -> &str {
        &self.manifest.platform.id
    }

    /// The dataset named `name` (a package's dataset, a staging table's, a sheet's).
    pub fn dataset(&self, name: &str) -> Option<&Arc<Dataset>> {
        self.datasets.iter().find(|d| d.spec.name == name)
    }

    /// The dataset that carries `record_type`, if any.
    pub fn dataset_for(&self, record_type: RecordType) -> Option<&Arc<Dataset>> {
        self.datasets.iter().find(|d| d.record_type == record_type)
    }
}

fn check_manifest_schema(json: &Value) -> Result<(), AdapterError> {
    let schema: Value = serde_json::from_str(MANIFEST_SCHEMA).map_err(|e| AdapterError::Toml(e.to_string()))?;
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| AdapterError::Toml(format!("manifest schema does not compile: {e}")))?;
    let errors: Vec<FieldError> =
        validator.iter_errors(json).map(|e| crate::record::schema_error(&schema, &e)).collect();
    if errors.is_empty() { Ok(()) } else { Err(AdapterError::Schema(errors)) }
}

/// The body of a manifest signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSignature {
    pub platform: String,
    pub manifest_sha256: String,
    pub signed_at: String,
}

/// Signs a manifest's bytes as the federation root `kid`.
pub fn sign_manifest(text: &[u8], platform: &str, signed_at: &str, kid: &str, key: &crate::crypto::SigningKey) -> Jws {
    let body = ManifestSignature {
        platform: platform.into(),
        manifest_sha256: Sha256Digest::of(text).to_hex(),
        signed_at: signed_at.into(),
    };
    crate::jws::sign(MANIFEST_SIGNATURE_TYP, kid, &serde_json::to_value(&body).unwrap_or_default(), key)
}

/// Checks that `adapter` is exactly what a root of `registry` signed in `signature`, and that the
/// registry approves its hash for its platform.
pub fn verify_signature(adapter: &Adapter, signature: &Jws, registry: &Registry) -> Result<(), AdapterError> {
    use crate::interchange::registry::RootSignatureError as R;
    let body = registry.root_signed_body(signature, MANIFEST_SIGNATURE_TYP).map_err(|e| match e {
        R::Form(e) => AdapterError::SignatureForm(e),
        R::UntrustedSigner { kid } => AdapterError::UntrustedSigner { kid },
        R::BadSignature => AdapterError::BadSignature,
    })?;
    let body: ManifestSignature =
        serde_json::from_value(body).map_err(|e| AdapterError::SignatureForm(e.to_string()))?;
    if !adapter.sha256.is_hex_of(&body.manifest_sha256) {
        return Err(AdapterError::Tampered { actual: adapter.sha256.to_hex(), signed: body.manifest_sha256 });
    }
    if body.platform != adapter.id() {
        return Err(AdapterError::WrongPlatform { signed: body.platform, declared: adapter.id().into() });
    }
    let approved = registry
        .body
        .adapters
        .iter()
        .any(|a| a.platform == adapter.id() && adapter.sha256.is_hex_of(&a.manifest_sha256));
    if !approved {
        return Err(AdapterError::NotApproved {
            platform: adapter.id().into(),
            sha256: adapter.sha256.to_hex(),
            registry_version: registry.body.version,
        });
    }
    Ok(())
}

/// What the conformance suite found for one dataset: fields that exist on one side only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Canonical fields (of the record type's schema) that no column carries.
    pub unmapped_fields: Vec<String>,
    /// Platform columns (of the platform schema) that no canonical field fills.
    pub unmapped_columns: Vec<String>,
}

impl Dataset {
    /// Which fields and columns this dataset leaves out (reported by `adapter check`).
    pub fn coverage(&self) -> Coverage {
        let mapped_fields: BTreeSet<&str> = self.spec.fields.iter().map(|f| f.field.as_str()).collect();
        let mapped_columns: BTreeSet<&str> = self.spec.fields.iter().map(|f| f.column.as_str()).collect();
        let canonical = property_names(&self.canonical_schema);
        let platform = property_names(&self.platform_schema);
        Coverage {
            unmapped_fields: canonical
                .into_iter()
                .filter(|f| {
                    f != "record_type" && !mapped_fields.contains(f.as_str()) && !self.spec.constants.contains_key(f)
                })
                .collect(),
            unmapped_columns: platform.into_iter().filter(|c| !mapped_columns.contains(c.as_str())).collect(),
        }
    }
}

fn property_names(schema: &Value) -> Vec<String> {
    schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

/// Code tables as the manifest writes them: table → canonical value → platform value.
pub type CodeTables = BTreeMap<String, BTreeMap<String, String>>;
