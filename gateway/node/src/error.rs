//! The error type of the node's services (the push path, the interchange, evaluations): what
//! went wrong and whose it is — the caller's mistake, a refusal, something missing, a fault
//! upstream or here — with a stable code, a message in Chinese and English and, where it
//! applies, the JSON pointer of the offending place. It knows nothing of HTTP routing or
//! responses: `api/error.rs` turns it into the documented response. A server fault is logged
//! where it is made and carries no details for the client.

use serde::Serialize;
use utoipa::ToSchema;

/// Whose problem an error is; decides the HTTP status the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (400).
    BadRequest,
    /// No credential, or one that is unknown, revoked or expired (401).
    Unauthorized,
    /// The caller may not do this (403).
    Forbidden,
    /// What the request names does not exist here (404).
    NotFound,
    /// The route exists, not with this method (405).
    MethodNotAllowed,
    /// The client did not send its request in time (408).
    RequestTimeout,
    /// It conflicts with what is held (409).
    Conflict,
    /// The request is larger than a limit (413).
    PayloadTooLarge,
    /// The body is not of a type the route takes (415).
    UnsupportedMediaType,
    /// Too many calls or failed attempts; try again later (429).
    TooManyRequests,
    /// A fault here, logged; the client may retry (500).
    Internal,
    /// A partner or peer answered with an error or not at all (502).
    BadGateway,
    /// Not available now: not configured, or a dependency is down (503).
    Unavailable,
}

impl ErrorKind {
    /// The HTTP status code of this kind (also what a pull-mode child reports to its parent).
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyRequests => 429,
            Self::Internal => 500,
            Self::BadGateway => 502,
            Self::Unavailable => 503,
        }
    }
}

/// A service failure: its kind and the body a client is shown.
#[derive(Debug)]
pub struct ServiceError {
    pub kind: ErrorKind,
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

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.kind.status(), self.body.error.code, self.body.error.message_en)
    }
}

impl std::error::Error for ServiceError {}

impl ServiceError {
    pub fn new(kind: ErrorKind, code: &'static str, zh: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            kind,
            body: ErrorBody {
                error: ErrorDetail { code, message_zh: zh.into(), message_en: en.into(), pointer: None },
            },
        }
    }

    pub fn with_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.body.error.pointer = Some(pointer.into());
        self
    }

    /// A server-side fault: logged here, answered without details. A store that cannot be
    /// reached is no fault of the request's either, but worth another try: 503
    /// `store_unavailable` with `Retry-After`.
    pub fn internal<E: std::fmt::Display + 'static>(err: &E) -> Self {
        if store_unavailable(err) {
            tracing::warn!(error = %err, "store unavailable");
            return Self::new(
                ErrorKind::Unavailable,
                "store_unavailable",
                "存储暂不可用，请稍后重试",
                "the store is not available at the moment; retry shortly",
            );
        }
        tracing::error!(error = %err, "internal error");
        Self::new(
            ErrorKind::Internal,
            "internal",
            "网关内部错误，已记录日志，请稍后重试",
            "internal gateway error; it has been logged, please retry later",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            ErrorKind::UnsupportedMediaType,
            "unsupported_media_type",
            "请求体必须是 JSON（Content-Type: application/json）",
            "the request body must be JSON (Content-Type: application/json)",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::PayloadTooLarge,
            "payload_too_large",
            format!("请求体超过上限 {limit} 字节，请拆分批次"),
            format!("the request body exceeds the limit of {limit} bytes; split the batch"),
        )
    }

    /// A batch with more than `limit` records (found while parsing, which stops there).
    pub fn too_many_records(limit: usize) -> Self {
        Self::new(
            ErrorKind::PayloadTooLarge,
            "too_many_records",
            format!("一批最多 {limit} 条记录，本批超过此数，请拆分批次"),
            format!("a batch holds at most {limit} records, this one has more; split the batch"),
        )
    }

    /// The body of a push is not a JSON array, or not JSON at all.
    pub fn from_batch_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Self::bad_request(
                "not_an_array",
                "请求体必须是记录的 JSON 数组",
                "the request body must be a JSON array of records",
            )
            .with_pointer(""),
            _ => Self::bad_request(
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
        Self::new(ErrorKind::NotFound, "not_found", format!("未找到{what_zh}"), format!("{what_en} not found"))
    }

    pub fn bad_request(code: &'static str, zh: impl Into<String>, en: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, zh, en)
    }
}

/// Whether `err` is the store's, or wraps the store's, saying the database cannot be reached.
pub(crate) fn store_unavailable<E: 'static>(err: &E) -> bool {
    let any = err as &dyn std::any::Any;
    let store = any
        .downcast_ref::<gateway_store::StoreError>()
        .or_else(|| any.downcast_ref::<anyhow::Error>().and_then(|e| e.downcast_ref()));
    store.is_some_and(gateway_store::StoreError::is_unavailable)
}
