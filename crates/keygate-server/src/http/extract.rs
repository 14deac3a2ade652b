//! Extractors whose rejections are our error body. axum's own answer plain text; ours name the
//! field at fault (through `serde_path_to_error`) and never echo the input back.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::ApiError;

/// The request bodies we accept are small; anything larger is refused before it is parsed.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body, parsed with the failing field named.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // Bodies are parsed as JSON whatever their Content-Type says: `curl -d '{…}'` sends
        // a form type, and refusing it would only make the first request of a new user fail.
        let declared_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim())
            .is_none_or(|mime| {
                mime.eq_ignore_ascii_case("application/json")
                    || mime
                        .get(mime.len().saturating_sub(5)..)
                        .is_some_and(|end| end.eq_ignore_ascii_case("+json"))
            });
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        match parse_json(&bytes) {
            Err(ApiError::InvalidInput { message, details }) if !declared_json => {
                Err(ApiError::InvalidInput {
                    message: format!("{message} (send Content-Type: application/json)"),
                    details,
                })
            }
            other => other.map(Json),
        }
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    // The common case, a valid body, without the bookkeeping of paths; a body that fails is
    // parsed again to name the field at fault.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid(format!(
                "the body is not valid JSON (line {}, column {})",
                inner.line(),
                inner.column()
            ))
        } else if path.is_empty() || path == "." {
            let reason = strip_position(&inner.to_string());
            // serde reports a missing field at its parent's path, naming it in the message.
            match reason
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                Some(field) => ApiError::invalid_field(field, "is required"),
                None => ApiError::invalid_field("body", reason),
            }
        } else {
            let reason = strip_position(&inner.to_string());
            match reason
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                Some(field) => ApiError::invalid_field(&format!("{path}.{field}"), "is required"),
                None => ApiError::invalid_field(&path, reason),
            }
        }
    })
}

/// serde_json appends "at line 1 column 12"; the field name says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("the body is larger than {} bytes", MAX_BODY_BYTES))
    } else {
        ApiError::invalid("the body could not be read")
    }
}

/// Query parameters, with the same error body as JSON.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|rejection: QueryRejection| {
                let text = rejection.body_text();
                let reason = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::invalid_field("query", reason.to_owned())
            })
    }
}

/// Path ids are parsed by the handler into typed ids; anything that does not parse is simply
/// not found, so an absurd id never reaches the database.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParams(p.0))
            .map_err(|_| ApiError::NotFound("not found".into()))
    }
}
