//! The one error type of the HTTP API and its documented body.
//!
//! Client mistakes are 4xx with a code, a message in Chinese and English and, where it
//! applies, the JSON pointer of the offending place. Server faults are logged in full and
//! answered with a generic 500: internal details never reach a client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

/// The error body: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `malformed_json`, `payload_too_large`.
    pub code: &'static str,
    pub message_zh: String,
    pub message_en: String,
    /// JSON pointer into the request body, when the error is about one place in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, zh: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: ErrorDetail { code, message_zh: zh.into(), message_en: en.into(), pointer: None },
            },
        }
    }

    pub fn with_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.body.error.pointer = Some(pointer.into());
        self
    }

    /// A server-side fault: logged here, answered without details.
    pub fn internal(err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "网关内部错误，已记录日志，请稍后重试",
            "internal gateway error; it has been logged, please retry later",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "请求体必须是 JSON（Content-Type: application/json）",
            "the request body must be JSON (Content-Type: application/json)",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("请求体超过上限 {limit} 字节，请拆分批次"),
            format!("the request body exceeds the limit of {limit} bytes; split the batch"),
        )
    }

    pub fn too_many_records(count: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!("一批最多 {limit} 条记录，本批 {count} 条，请拆分批次"),
            format!("a batch holds at most {limit} records, this one has {count}; split the batch"),
        )
    }

    /// Query parameters that do not parse (a missing required one, a number that is not).
    pub fn from_query(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request("bad_query", format!("查询参数错误：{e}"), format!("bad query parameters: {e}"))
    }

    /// The body of a push is not a JSON array, or not JSON at all.
    pub fn from_batch_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Self::new(
                StatusCode::BAD_REQUEST,
                "not_an_array",
                "请求体必须是记录的 JSON 数组",
                "the request body must be a JSON array of records",
            )
            .with_pointer(""),
            _ => Self::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("JSON 格式错误：第 {} 行第 {} 列", e.line(), e.column()),
                format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column()),
            ),
        }
    }

    /// A JSON request body parsed strictly (duplicate member names refused) into `T`.
    pub fn strict_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Self> {
        use gateway_core::canonical::{StrictJsonError, parse_strict};
        let value = parse_strict(body).map_err(|e| match e {
            StrictJsonError::DuplicateKey { pointer, key } => Self::bad_request(
                "duplicate_key",
                format!("同一对象中成员名 {key:?} 重复"),
                format!("member name {key:?} appears twice in one object"),
            )
            .with_pointer(pointer),
            StrictJsonError::Syntax(m) => {
                Self::bad_request("malformed_json", format!("JSON 格式错误：{m}"), format!("malformed JSON: {m}"))
            }
        })?;
        serde_json::from_value(value).map_err(|e| {
            Self::bad_request(
                "body.schema",
                format!("请求体不符合要求：{e}"),
                format!("the request body does not fit: {e}"),
            )
            .with_pointer("")
        })
    }

    pub fn not_found(what_zh: &str, what_en: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("未找到{what_zh}"), format!("{what_en} not found"))
    }

    pub fn bad_request(code: &'static str, zh: impl Into<String>, en: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, zh, en)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
