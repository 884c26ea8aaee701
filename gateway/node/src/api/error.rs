//! How the API answers a [`ServiceError`]: the status of its kind and the documented body.
//!
//! Client mistakes are 4xx with a code, a message in Chinese and English and, where it
//! applies, the JSON pointer of the offending place. Server faults were logged in full where
//! they were made and are answered with a generic 500: internal details never reach a client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use crate::error::{ErrorBody, ErrorDetail, ErrorKind, ServiceError};

/// Query parameters that do not parse (a missing required one, a number that is not).
pub fn bad_query(e: axum::extract::rejection::QueryRejection) -> ServiceError {
    ServiceError::bad_request("bad_query", format!("查询参数错误：{e}"), format!("bad query parameters: {e}"))
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body)).into_response()
    }
}
