//! The schemas and the Rust types must agree: every fixture job, every kind of result
//! and completion we produce is checked against the JSON Schema files, and what either
//! side refuses the other refuses too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use asset_core::{AssetMetadata, DataType, ErrorBody, ErrorCode};
use asset_schemas::{
    ASSET_METADATA_V1, AssetResult, Extractor, ImportJob, JOB_COMPLETED_V1, JobCompleted, JobError, Schema,
    Status,
};
use serde_json::{Value, json};

const ERROR_CODES: &[ErrorCode] = &ErrorCode::ALL;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("queue-schemas sits in the repository root").into()
}

fn schema_doc(s: Schema) -> Value {
    serde_json::from_str(s.text()).expect("schema file is JSON")
}

/// Every `*.json` under fixtures/jobs, sub-folders included.
fn fixture_jobs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("fixtures/jobs is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root().join("fixtures/jobs"), &mut out);
    out.sort();
    out
}

fn full_metadata() -> AssetMetadata {
    AssetMetadata {
        data_type: DataType::Video,
        mime: "video/mp4".into(),
        size_bytes: 1_234_567,
        width: Some(1920),
        height: Some(1080),
        orientation: Some(6),
        duration_seconds: Some(12.5),
        frame_count: Some(375),
        frame_rate: Some(29.97),
        sample_rate: Some(48_000),
        channels: Some(2),
        page_count: Some(3),
        codec: Some("h264".into()),
        char_count: Some(42),
        line_count: Some(7),
        encoding: Some("utf-8".into()),
        modality: Some("CT".into()),
        browser_playable: Some(true),
    }
}

fn sample_job() -> ImportJob {
    ImportJob::from_slice(
        json!({
            "schema": "import-job/v1", "job_id": "job-1", "org_id": "org-1", "project_id": "p-1",
            "created_at": "2026-11-23T09:00:00Z",
            "storage": {"provider": "local", "root": "fixtures/assets"},
            "assets": [
                {"asset_id": "a-1", "external_id": "x/1.mp4", "url": "local://video/faststart.mp4", "data_type": "video"},
                {"asset_id": "a-2", "external_id": "x/2.png", "url": "local://image/missing.png"}
            ]
        })
        .to_string()
        .as_bytes(),
    )
    .expect("sample job is valid")
}

fn timings() -> BTreeMap<String, u64> {
    BTreeMap::from([("download".to_string(), 12), ("probe".to_string(), 3), ("total".to_string(), 15)])
}

fn ok_result() -> AssetResult {
    let job = sample_job();
    AssetResult::ok(&job, &job.assets[0], full_metadata(), 65_536, timings())
}

fn error_result() -> AssetResult {
    let job = sample_job();
    let error = ErrorBody { code: ErrorCode::NotFound, message: "no such object".into() };
    AssetResult::failed(&job, &job.assets[1], error, 0, 0, timings())
}

fn assert_valid(schema: Schema, value: &Value) {
    let v = schema.violations(value);
    assert!(v.is_empty(), "{} rejects {value}: {v:?}", schema.file_name());
}

fn assert_invalid(schema: Schema, value: &Value) -> Vec<String> {
    let v = schema.violations(value);
    assert!(!v.is_empty(), "{} accepts {value}", schema.file_name());
    v
}

#[test]
fn every_schema_file_is_a_valid_2020_12_schema() {
    for s in Schema::ALL {
        let doc = schema_doc(s);
        assert_eq!(doc["$schema"], "https://json-schema.org/draft/2020-12/schema", "{}", s.file_name());
        jsonschema::meta::validate(&doc).unwrap_or_else(|e| panic!("{}: {e}", s.file_name()));
        // The embedded copy is the file on disk.
        let on_disk = std::fs::read_to_string(repo_root().join("queue-schemas").join(s.file_name())).unwrap();
        assert_eq!(on_disk, s.text());
    }
}

#[test]
fn every_fixture_job_validates_and_decodes() {
    let jobs = fixture_jobs();
    assert!(jobs.len() >= 8, "expected the fixture jobs, found {jobs:?}");
    for path in jobs {
        let bytes = std::fs::read(&path).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_valid(Schema::ImportJob, &value);
        let job = ImportJob::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Nothing is lost between the message and the type.
        assert_eq!(serde_json::to_value(&job).unwrap(), value, "{}", path.display());
    }
}

#[test]
fn local_fixture_jobs_reference_files_that_exist_or_are_meant_to_fail() {
    // Assets that deliberately do not resolve: a missing file and paths escaping the root.
    let meant_to_fail =
        ["local://image/does-not-exist.png", "local://../Cargo.toml", "local://image/../../../README.md"];
    let root = repo_root();
    let mut ids = std::collections::BTreeSet::new();
    for path in fixture_jobs() {
        let job = ImportJob::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for a in &job.assets {
            // Asset ids are unique across all fixtures so replays into one table never collide.
            assert!(ids.insert(a.asset_id.clone()), "{} repeats asset_id {}", path.display(), a.asset_id);
            let Some(rel) = a.url.strip_prefix("local://") else { continue };
            if meant_to_fail.contains(&a.url.as_str()) {
                continue;
            }
            let asset_root = match &job.storage {
                asset_core::Integration::Local(l) => root.join(&l.root),
                other => panic!("{}: local:// url under provider {}", path.display(), other.provider()),
            };
            assert!(asset_root.join(rel).is_file(), "{}: {} does not exist", path.display(), a.url);
        }
    }
}

#[test]
fn every_data_type_has_a_fixture_job() {
    let mut seen = std::collections::HashSet::new();
    for path in fixture_jobs() {
        let job = ImportJob::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        seen.extend(job.assets.iter().filter_map(|a| a.data_type));
    }
    for t in DataType::ALL {
        assert!(seen.contains(&t), "no fixture job asset of type {t}");
    }
}

#[test]
fn results_of_every_shape_validate_and_round_trip() {
    let minimal_ok = {
        let job = sample_job();
        AssetResult::ok(
            &job,
            &job.assets[0],
            AssetMetadata::new(DataType::Text, "text/plain", 0),
            0,
            BTreeMap::new(),
        )
    };
    let error_with_metadata = AssetResult {
        metadata: Some(AssetMetadata::new(DataType::Pdf, "application/pdf", 99)),
        error: Some(ErrorBody { code: ErrorCode::Encrypted, message: "needs a password".into() }),
        ..error_result()
    };
    for result in [ok_result(), error_result(), minimal_ok, error_with_metadata] {
        let value = serde_json::to_value(&result).unwrap();
        assert_valid(Schema::AssetMetadata, &value);
        let back: AssetResult = serde_json::from_value(value).unwrap();
        assert_eq!(back, result);
    }
    let ok = serde_json::to_value(ok_result()).unwrap();
    assert_eq!(ok["schema"], ASSET_METADATA_V1);
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["size_bytes"], 1_234_567);
    assert_eq!(ok["extractor"], json!({"name": "metadata-worker", "version": env!("CARGO_PKG_VERSION")}));
    let err = serde_json::to_value(error_result()).unwrap();
    assert_eq!(err["error"], json!({"code": "not_found", "message": "no such object"}));
    assert!(err.get("metadata").is_none());
}

#[test]
fn the_metadata_schema_lists_exactly_the_probe_fields() {
    let doc = schema_doc(Schema::AssetMetadata);
    let in_schema: std::collections::BTreeSet<String> =
        doc["$defs"]["metadata"]["properties"].as_object().unwrap().keys().cloned().collect();
    let from_probe: std::collections::BTreeSet<String> =
        serde_json::to_value(full_metadata()).unwrap().as_object().unwrap().keys().cloned().collect();
    assert_eq!(in_schema, from_probe);
    assert_eq!(in_schema.len(), 18);
    assert_eq!(doc["$defs"]["metadata"]["additionalProperties"], false);
}

#[test]
fn the_schemas_list_exactly_the_stable_error_codes() {
    let expected: Vec<Value> = ERROR_CODES.iter().map(|c| json!(c.as_str())).collect();
    let results = schema_doc(Schema::AssetMetadata);
    let completed = schema_doc(Schema::JobCompleted);
    for listed in [&results["$defs"]["error_code"]["enum"], &completed["$defs"]["error_code"]["enum"]] {
        assert_eq!(listed.as_array().unwrap(), &expected);
        for code in listed.as_array().unwrap() {
            let parsed: ErrorCode = serde_json::from_value(code.clone()).unwrap();
            assert_eq!(json!(parsed.as_str()), *code);
        }
    }
}

#[test]
fn the_integration_schema_takes_every_field_the_types_write() {
    let full_s3 = json!({
        "provider": "s3_compatible", "id": "int-1", "org_id": "org-1", "region": "us-east-1",
        "endpoint": "https://minio.example.com:9000", "path_style": true, "buckets": ["b-1", "b.two"],
        "access": {"type": "iam_user", "access_key_id": "minioadmin", "secret_ref": "file:s3.key"}
    });
    let local = json!({"provider": "local", "id": "l", "org_id": "org-1", "root": "/srv/assets"});
    let aws = json!({
        "provider": "aws", "id": "int-2", "org_id": "org-1", "region": "eu-west-1", "buckets": ["acme"],
        "access": {"type": "iam_delegated", "role_arn": "arn:aws:iam::123456789012:role/path/r", "external_id": "ext-123"}
    });
    let azure = json!({
        "provider": "azure", "id": "int-6", "org_id": "org-1", "account": "custstorage",
        "containers": ["assets", "raw-2"], "endpoint": "http://127.0.0.1:10000/devstoreaccount1",
        "access": {"type": "service_principal", "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                   "client_id": "0b6a1d6e-1b4f-4a53-9e36-0c1e2c5d7f10", "secret_ref": "env:AZ_APP"}
    });
    for storage in [full_s3, local, aws, azure] {
        let typed: asset_core::Integration = serde_json::from_value(storage.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), storage);
        let mut job = serde_json::to_value(sample_job()).unwrap();
        job["storage"] = storage;
        assert_valid(Schema::ImportJob, &job);
        ImportJob::from_slice(job.to_string().as_bytes()).unwrap();
    }
}

fn azure_job(storage: Value) -> Value {
    json!({
        "schema": "import-job/v1", "job_id": "job-1", "org_id": "org-1", "project_id": "p-1",
        "created_at": "2026-11-23T09:00:00Z", "storage": storage,
        "assets": [{"asset_id": "a-1", "external_id": "e",
                    "url": "https://custstorage.blob.core.windows.net/assets/my%20cat.jpg"}]
    })
}

#[test]
fn the_azure_integration_schema_takes_each_access_and_refuses_malformed_ones() {
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let base = |access: Value| {
        json!({"provider": "azure", "id": "int-6", "org_id": "org-1", "account": "custstorage",
               "containers": ["assets"], "access": access})
    };
    for access in [
        json!({"type": "iam_delegated", "tenant_id": tenant}),
        json!({"type": "account_key", "secret_ref": "env:AZ_KEY"}),
        json!({"type": "sas_token", "secret_ref": "file:azure/sas"}),
        json!({"type": "service_principal", "tenant_id": tenant, "client_id": tenant, "secret_ref": "env:S"}),
    ] {
        let job = azure_job(base(access));
        assert_valid(Schema::ImportJob, &job);
        ImportJob::from_slice(job.to_string().as_bytes()).unwrap();
    }
    let mut refused = Vec::new();
    for (field, value) in [
        ("account", json!("Cust_Storage")),
        ("account", json!("ab")),
        ("account", json!("a".repeat(25))),
        ("containers", json!([])),
        ("containers", json!(["UPPER"])),
        ("containers", json!(["a--b"])),
        ("endpoint", json!("http://u:p@127.0.0.1:10000")),
        ("access", json!({"type": "iam_delegated", "tenant_id": "contoso.onmicrosoft.com/../x"})),
        ("access", json!({"type": "iam_delegated"})),
        (
            "access",
            json!({"type": "account_key", "secret_ref": "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6"}),
        ),
        ("access", json!({"type": "account_key", "secret_ref": "env:K", "account_key": "x"})),
        ("access", json!({"type": "service_principal", "tenant_id": tenant, "secret_ref": "env:S"})),
        ("access", json!({"type": "role_arn", "tenant_id": tenant})),
        ("region", json!("eastus")),
    ] {
        let mut storage = base(json!({"type": "iam_delegated", "tenant_id": tenant}));
        storage[field] = value.clone();
        let job = azure_job(storage);
        assert_invalid(Schema::ImportJob, &job);
        assert!(ImportJob::from_slice(job.to_string().as_bytes()).is_err(), "{field}: {value}");
        refused.push(field);
    }
    assert_eq!(refused.len(), 14);
}

#[test]
fn completions_validate_round_trip_and_add_up() {
    let job = sample_job();
    let done = JobCompleted::for_job(&job, &[ok_result(), error_result()], "2026-11-23T09:01:02.5Z");
    assert_eq!(done.schema, JOB_COMPLETED_V1);
    assert_eq!((done.assets_total, done.assets_ok, done.assets_failed), (2, 1, 1));
    assert_eq!(done.error_codes, BTreeMap::from([("not_found".to_string(), 1)]));
    let value = serde_json::to_value(&done).unwrap();
    assert_valid(Schema::JobCompleted, &value);
    assert_eq!(serde_json::from_value::<JobCompleted>(value).unwrap(), done);

    let all_ok = JobCompleted::for_job(&job, &[ok_result()], "2026-11-23T09:01:02+01:00");
    assert!(all_ok.error_codes.is_empty());
    assert_valid(Schema::JobCompleted, &serde_json::to_value(&all_ok).unwrap());
}

#[test]
fn the_result_schema_refuses_what_the_contract_forbids() {
    let ok = serde_json::to_value(ok_result()).unwrap();
    let err = serde_json::to_value(error_result()).unwrap();

    let mut no_metadata = ok.clone();
    no_metadata.as_object_mut().unwrap().remove("metadata");
    assert_invalid(Schema::AssetMetadata, &no_metadata);

    let mut no_error = err.clone();
    no_error.as_object_mut().unwrap().remove("error");
    assert_invalid(Schema::AssetMetadata, &no_error);

    let mut ok_with_error = ok.clone();
    ok_with_error["error"] = json!({"code": "io", "message": "x"});
    assert_invalid(Schema::AssetMetadata, &ok_with_error);

    let mut unknown_code = err.clone();
    unknown_code["error"]["code"] = json!("disk_on_fire");
    assert_invalid(Schema::AssetMetadata, &unknown_code);

    let mut unknown_field = ok.clone();
    unknown_field["metadata"]["bitrate"] = json!(128);
    let v = assert_invalid(Schema::AssetMetadata, &unknown_field);
    assert!(v.iter().any(|l| l.contains("/metadata") && l.contains("bitrate")), "{v:?}");

    let mut null_field = ok.clone();
    null_field["metadata"]["width"] = Value::Null;
    assert_invalid(Schema::AssetMetadata, &null_field);

    let mut wrong_version = ok;
    wrong_version["schema"] = json!("asset-metadata/v2");
    assert_invalid(Schema::AssetMetadata, &wrong_version);

    let mut bad_time =
        serde_json::to_value(JobCompleted::for_job(&sample_job(), &[ok_result()], "x")).unwrap();
    assert_invalid(Schema::JobCompleted, &bad_time);
    bad_time["completed_at"] = json!("2026-11-23T09:00:00Z");
    bad_time["error_codes"] = json!({"made_up": 1});
    assert_invalid(Schema::JobCompleted, &bad_time);
}

fn delegated_job(access: Value) -> Value {
    json!({
        "schema": "import-job/v1", "job_id": "job-1", "org_id": "org-1", "project_id": "p-1",
        "created_at": "2026-11-23T09:00:00Z",
        "storage": {"provider": "aws", "id": "int-1", "org_id": "org-1", "region": "eu-west-1",
                    "buckets": ["acme"], "access": access},
        "assets": [{"asset_id": "a-1", "external_id": "e", "url": "s3://acme/a.jpg"}]
    })
}

#[test]
fn a_missing_external_id_passes_the_types_but_not_the_schema() {
    let job = delegated_job(json!({"type": "iam_delegated", "role_arn": "arn:aws:iam::123456789012:role/r"}));
    // The types default it to empty so that storage validation can explain the refusal…
    let typed: ImportJob = serde_json::from_value(job.clone()).unwrap();
    assert!(matches!(&typed.storage, asset_core::Integration::Aws(s)
        if matches!(&s.access, asset_core::Access::IamDelegated { external_id, .. } if external_id.is_empty())));
    // …but the schema requires it, and the worker checks the schema.
    let v = assert_invalid(Schema::ImportJob, &job);
    assert!(v.iter().any(|l| l == "/storage/access: missing field external_id"), "{v:?}");
    assert!(matches!(ImportJob::from_slice(job.to_string().as_bytes()), Err(JobError::Schema(_))));
}

#[test]
fn a_secret_by_value_is_refused_by_both_and_never_echoed() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let job = delegated_job(json!({
        "type": "iam_user", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_ref": "env:S",
        "secret_access_key": secret
    }));
    assert!(serde_json::from_value::<ImportJob>(job.clone()).is_err());
    let v = assert_invalid(Schema::ImportJob, &job);
    assert!(v.iter().any(|l| l.contains("secret_access_key")), "{v:?}");
    let err = ImportJob::from_slice(job.to_string().as_bytes()).unwrap_err();
    assert!(!err.to_string().contains(secret), "{err}");
    assert_eq!(err.code(), ErrorCode::InvalidJob);
    assert!(!err.is_retryable());

    // A secret pasted where its reference belongs is refused without being quoted either.
    let pasted = delegated_job(
        json!({"type": "iam_user", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_ref": secret}),
    );
    let err = ImportJob::from_slice(pasted.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, JobError::Schema(_)), "{err}");
    assert!(!err.to_string().contains(secret), "{err}");
}

#[test]
fn unknown_versions_and_broken_messages_are_refused() {
    let mut v2 = serde_json::to_value(sample_job()).unwrap();
    v2["schema"] = json!("import-job/v2");
    assert_invalid(Schema::ImportJob, &v2);
    assert!(matches!(
        ImportJob::from_slice(v2.to_string().as_bytes()),
        Err(JobError::UnknownVersion(s)) if s == "import-job/v2"
    ));

    let mut unversioned = serde_json::to_value(sample_job()).unwrap();
    unversioned.as_object_mut().unwrap().remove("schema");
    assert!(matches!(ImportJob::from_slice(unversioned.to_string().as_bytes()), Err(JobError::Invalid(_))));

    assert!(matches!(ImportJob::from_slice(b"not json"), Err(JobError::Malformed(_))));
    assert!(matches!(ImportJob::from_slice(b"[1,2]"), Err(JobError::Invalid(_))));

    let mut no_assets = serde_json::to_value(sample_job()).unwrap();
    no_assets["assets"] = json!([]);
    assert!(matches!(ImportJob::from_slice(no_assets.to_string().as_bytes()), Err(JobError::Schema(_))));

    let mut bad_time = serde_json::to_value(sample_job()).unwrap();
    bad_time["created_at"] = json!("yesterday");
    assert!(matches!(ImportJob::from_slice(bad_time.to_string().as_bytes()), Err(JobError::Schema(_))));
}

#[test]
fn a_storage_integration_of_another_org_is_refused() {
    let mut job = delegated_job(json!({
        "type": "iam_delegated", "role_arn": "arn:aws:iam::123456789012:role/r", "external_id": "ext-1"
    }));
    ImportJob::from_slice(job.to_string().as_bytes()).unwrap();
    job["storage"]["org_id"] = json!("org-2");
    // The schema cannot see this; the type check does.
    assert_valid(Schema::ImportJob, &job);
    assert!(
        matches!(ImportJob::from_slice(job.to_string().as_bytes()), Err(JobError::Invalid(m)) if m.contains("org-2"))
    );

    let mut local = serde_json::to_value(sample_job()).unwrap();
    local["storage"]["org_id"] = json!("org-9");
    assert!(matches!(ImportJob::from_slice(local.to_string().as_bytes()), Err(JobError::Invalid(_))));
}

#[test]
fn repeated_asset_ids_are_refused() {
    let mut job = serde_json::to_value(sample_job()).unwrap();
    job["assets"][1]["asset_id"] = json!("a-1");
    assert!(
        matches!(ImportJob::from_slice(job.to_string().as_bytes()), Err(JobError::Invalid(m)) if m.contains("a-1"))
    );
}

#[test]
fn constructors_fill_the_envelope_from_the_job() {
    let r = error_result();
    assert_eq!(r.schema, ASSET_METADATA_V1);
    assert_eq!((r.job_id.as_str(), r.org_id.as_str(), r.project_id.as_str()), ("job-1", "org-1", "p-1"));
    assert_eq!((r.asset_id.as_str(), r.external_id.as_str()), ("a-2", "x/2.png"));
    assert_eq!(r.status, Status::Error);
    assert_eq!(r.extractor, Extractor::current());
}

#[test]
fn the_asyncapi_document_names_the_topology_and_references_every_schema() {
    let doc = std::fs::read_to_string(repo_root().join("queue-schemas/asyncapi.yaml")).unwrap();
    assert!(doc.contains("asyncapi: 3.0.0"));
    // Every local `$ref: './x.json'` names a schema file of this crate, and each is used.
    let referenced: std::collections::BTreeSet<&str> =
        doc.lines().filter_map(|l| l.trim().strip_prefix("$ref: './")?.strip_suffix("'")).collect();
    let files: std::collections::BTreeSet<&str> = Schema::ALL.iter().map(|s| s.file_name()).collect();
    assert_eq!(referenced, files);
    for name in [
        "address: asset-import\n",
        "address: asset-import.jobs\n",
        "address: asset-import.retry\n",
        "address: asset-import.dlq\n",
        "address: asset-import.results\n",
        "cc: ['job.v1']",
        "cc: ['asset.v1']",
        "cc: ['job-completed.v1']",
        "x-attempt:",
        "x-reason:",
        "x-error-code:",
        "x-queue-type: quorum",
    ] {
        assert!(doc.contains(name), "asyncapi.yaml lacks {name:?}");
    }
    // Internal references point at something defined in the document.
    for r in doc.lines().filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("$ref: '#/")) {
        let last = r.trim_end_matches('\'').rsplit('/').next().unwrap();
        let key = format!("{last}:");
        assert!(doc.lines().any(|l| l.trim() == key), "{r} is not defined");
    }
}

#[test]
fn the_gcs_integration_schema_takes_every_access_type_and_refuses_keys_by_value() {
    let gcs = |access: Value| {
        json!({
            "provider": "gcs", "id": "int-5", "org_id": "org-1", "endpoint": "https://storage.googleapis.com",
            "buckets": ["cust-bucket", "cust_under.score"], "access": access
        })
    };
    for access in [
        json!({"type": "iam_delegated", "service_account": "mw-org-1-read@cust-proj.iam.gserviceaccount.com"}),
        json!({"type": "service_account_key", "client_email": "reader@cust-proj.iam.gserviceaccount.com",
               "secret_ref": "file:gcs/sa.json"}),
        json!({"type": "hmac", "access_id": "GOOG1EXAMPLEACCESSID0123", "secret_ref": "env:GCS_HMAC"}),
    ] {
        let storage = gcs(access);
        let typed: asset_core::Integration = serde_json::from_value(storage.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), storage);
        let mut job = serde_json::to_value(sample_job()).unwrap();
        job["storage"] = storage;
        assert_valid(Schema::ImportJob, &job);
        ImportJob::from_slice(job.to_string().as_bytes()).unwrap();
    }
    for (access, why) in [
        (json!({"type": "iam_delegated", "service_account": "someone@gmail.com"}), "not a service account"),
        (json!({"type": "iam_delegated"}), "no service account"),
        (json!({"type": "iam_user", "access_key_id": "GOOG1X", "secret_ref": "env:K"}), "an S3 access type"),
        (
            json!({"type": "service_account_key", "client_email": "r@p.iam.gserviceaccount.com",
                   "secret_ref": "file:sa.json", "private_key": "-----BEGIN PRIVATE KEY-----"}),
            "a key by value",
        ),
        (
            json!({"type": "hmac", "access_id": "GOOG1EXAMPLEACCESSID0123", "secret": "x"}),
            "a secret by value",
        ),
    ] {
        let mut job = serde_json::to_value(sample_job()).unwrap();
        job["storage"] = gcs(access);
        assert_invalid(Schema::ImportJob, &job);
        assert!(ImportJob::from_slice(job.to_string().as_bytes()).is_err(), "{why}");
    }
}
