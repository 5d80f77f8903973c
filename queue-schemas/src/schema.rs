//! The JSON Schema files, embedded and compiled once, so the worker refuses what the
//! schema forbids and tests (ours and other crates') validate what they produce.

use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

/// One of the message schemas in `queue-schemas/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schema {
    /// `import-job.v1.json`
    ImportJob,
    /// `asset-metadata.v1.json`
    AssetMetadata,
    /// `job-completed.v1.json`
    JobCompleted,
}

const IMPORT_JOB: &str = include_str!("../import-job.v1.json");
const ASSET_METADATA: &str = include_str!("../asset-metadata.v1.json");
const JOB_COMPLETED: &str = include_str!("../job-completed.v1.json");

type Compiled = LazyLock<Result<Validator, String>>;

static IMPORT_JOB_VALIDATOR: Compiled = LazyLock::new(|| compile(IMPORT_JOB));
static ASSET_METADATA_VALIDATOR: Compiled = LazyLock::new(|| compile(ASSET_METADATA));
static JOB_COMPLETED_VALIDATOR: Compiled = LazyLock::new(|| compile(JOB_COMPLETED));

fn compile(text: &str) -> Result<Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    jsonschema::draft202012::options().should_validate_formats(true).build(&schema).map_err(|e| e.to_string())
}

impl Schema {
    pub const ALL: [Schema; 3] = [Schema::ImportJob, Schema::AssetMetadata, Schema::JobCompleted];

    /// The file name beside `Cargo.toml`.
    pub fn file_name(self) -> &'static str {
        match self {
            Schema::ImportJob => "import-job.v1.json",
            Schema::AssetMetadata => "asset-metadata.v1.json",
            Schema::JobCompleted => "job-completed.v1.json",
        }
    }

    /// The schema document itself.
    pub fn text(self) -> &'static str {
        match self {
            Schema::ImportJob => IMPORT_JOB,
            Schema::AssetMetadata => ASSET_METADATA,
            Schema::JobCompleted => JOB_COMPLETED,
        }
    }

    fn validator(self) -> &'static Result<Validator, String> {
        match self {
            Schema::ImportJob => &IMPORT_JOB_VALIDATOR,
            Schema::AssetMetadata => &ASSET_METADATA_VALIDATOR,
            Schema::JobCompleted => &JOB_COMPLETED_VALIDATOR,
        }
    }

    /// Where `instance` breaks the schema, one line each (JSON pointer and rule); empty
    /// when it conforms. Lines never quote a value: a rejected message may hold a secret.
    pub fn violations(self, instance: &Value) -> Vec<String> {
        match self.validator() {
            Ok(v) => v.iter_errors(instance).map(|e| describe(&e)).collect(),
            Err(e) => vec![format!("{} does not compile: {e}", self.file_name())],
        }
    }

    pub fn is_valid(self, instance: &Value) -> bool {
        matches!(self.validator(), Ok(v) if v.is_valid(instance))
    }
}

fn describe(e: &ValidationError<'_>) -> String {
    let at = match e.instance_path().as_str() {
        "" => "/",
        p => p,
    };
    let rule = match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            format!("unexpected field(s) {}", unexpected.join(", "))
        }
        ValidationErrorKind::Required { property } => {
            format!("missing field {}", property.as_str().unwrap_or("?"))
        }
        _ => {
            let keyword = e.schema_path().as_str().rsplit('/').next().unwrap_or("?");
            format!("fails {keyword:?}")
        }
    };
    format!("{at}: {rule}")
}
