//! Request bodies the node answers without reading to the end (a 413 on the declared length, a
//! 401 before the body, a batch cut off at its limit) are still read and thrown away, up to a
//! bound, after the handler is done. A client that writes its whole body before it reads (as
//! Python's http.client does) then gets the answer, not a broken pipe: hyper gives up on an
//! unread body and closes the connection while the client is still writing.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use http_body::{Frame, SizeHint};

/// How long a refused body is read at most.
const DISCARD_TIME: Duration = Duration::from_secs(30);
/// Most refused bodies read at once; past it a refused body is not read (its connection closes).
static DRAINING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

/// Largest body of the routes that take a small JSON body whole (answers to cases, checks,
/// credentials, lookups); the push, imports and workbooks have limits of their own.
pub const SMALL_BODY_LIMIT: usize = 2 << 20;

/// Wraps the request body: whatever the handler leaves unread is read and discarded, up to
/// `discard_bytes` bytes, once the body is dropped. A body over [`SMALL_BODY_LIMIT`], refused
/// by axum's extractor in plain text, is answered like every other error.
pub async fn drain_unread_bodies(State(discard_bytes): State<usize>, request: Request, next: Next) -> Response {
    // HTTP/2 ends an unread request stream with a reset after the answer: nothing to drain.
    let request = if request.version() <= axum::http::Version::HTTP_11 {
        let (parts, body) = request.into_parts();
        Request::from_parts(parts, Body::new(DrainOnDrop { inner: Some(body), ended: false, discard_bytes }))
    } else {
        request
    };
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return crate::error::ServiceError::payload_too_large(SMALL_BODY_LIMIT).into_response();
    }
    response
}

struct DrainOnDrop {
    inner: Option<Body>,
    ended: bool,
    discard_bytes: usize,
}

impl HttpBody for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(HttpBody::size_hint).unwrap_or_default()
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else { return };
        if self.ended || body.is_end_stream() {
            return;
        }
        let bound = self.discard_bytes;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Ok(slot) = DRAINING.try_acquire() else { return };
        runtime.spawn(async move {
            let _slot = slot;
            let mut seen = 0usize;
            let reading = async {
                while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    seen += frame.data_ref().map_or(0, Bytes::len);
                    if seen > bound {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DISCARD_TIME, reading).await;
        });
    }
}
