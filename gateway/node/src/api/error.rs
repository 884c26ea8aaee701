//! How the API answers a [`ServiceError`]: the status of its kind and the documented body.
//!
//! Client mistakes are 4xx with a code, a message in Chinese and English and, where it
//! applies, the JSON pointer of the offending place. Server faults were logged in full where
//! they were made and are answered with a generic 500: internal details never reach a client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use crate::error::{ErrorBody, ErrorDetail, ErrorKind, ServiceError};

/// Query parameters, where one given empty (`?period=`, as forms and generated clients send an
/// unset field) counts as not given; what still does not parse is a 400 (`bad_query`).
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let given: Vec<&str> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| pair.split_once('=').is_some_and(|(_, value)| !value.is_empty()))
            .collect();
        let uri: axum::http::Uri = format!("/?{}", given.join("&")).parse().map_err(|e| {
            ServiceError::bad_request("bad_query", format!("查询参数错误：{e}"), format!("bad query parameters: {e}"))
        })?;
        let axum::extract::Query(params) = axum::extract::Query::<T>::try_from_uri(&uri).map_err(bad_query)?;
        Ok(Self(params))
    }
}

/// Query parameters that do not parse (a missing required one, a number that is not).
pub fn bad_query(e: axum::extract::rejection::QueryRejection) -> ServiceError {
    ServiceError::bad_request("bad_query", format!("查询参数错误：{e}"), format!("bad query parameters: {e}"))
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Busy or not ready yet: worth another try soon.
        let retry = matches!(self.body.error.code, "busy" | "not_ready" | "too_many_in_flight" | "store_unavailable");
        let mut response = (status, Json(self.body)).into_response();
        if retry {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
