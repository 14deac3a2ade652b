//! One error type for the native API. Client errors carry a code, a message and, for bad
//! input, the field at fault; everything else is logged in full and shown as a bare `internal`
//! with no detail. The Crossbar surface wraps the same type in its own envelope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_store::StoreError;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    InvalidInput {
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("The upstream service could not be reached")]
    BadGateway,
    #[error("The upstream service did not answer in time")]
    GatewayTimeout,
    #[error("The request took too long and was abandoned; try again")]
    Timeout,
    #[error("Rate limit exceeded. Please try again later.")]
    RateLimited { retry_after: std::time::Duration },
    #[error("Not enough credits: this call needs {needed}, {available} available")]
    InsufficientCredits { needed: u64, available: i64 },
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::Unauthorized(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(message.into())
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::Conflict(message.into())
    }

    /// A validation error naming the field at fault, in seed 003's shape.
    pub fn invalid_field(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        ApiError::InvalidInput {
            message: format!("{field}: {reason}"),
            details: Some(json!({ "field": field, "reason": reason })),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidInput {
            message: message.into(),
            details: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The lowercase snake-case code of DESIGN.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::InvalidInput { .. } | ApiError::PayloadTooLarge(_) => "invalid_input",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
            ApiError::BadGateway => "bad_gateway",
            ApiError::GatewayTimeout => "gateway_timeout",
            ApiError::Timeout => "timeout",
            ApiError::InsufficientCredits { .. } => "insufficient_credits",
            ApiError::Internal(_) => "internal",
        }
    }

    /// What the client may read. Internal errors are logged here, where the request's span
    /// (and so its request id) is still current, and shown without detail.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "internal error");
                "An internal error occurred; it has been logged.".to_owned()
            }
            other => other.to_string(),
        }
    }

    pub fn details(&self) -> Option<Value> {
        match self {
            ApiError::InvalidInput { details, .. } => details.clone(),
            ApiError::InsufficientCredits { needed, available } => {
                Some(json!({ "credits_needed": needed, "credits_available": available }))
            }
            _ => None,
        }
    }

    /// `Retry-After` for a 429: whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict(rule) => ApiError::Conflict(
                match rule {
                    "accounts_name" => "an account with this name already exists",
                    "users_username" => "a user with this username already exists in the account",
                    _ => "this would duplicate an existing record",
                }
                .to_owned(),
            ),
            StoreError::Backend(msg) => ApiError::Internal(anyhow::anyhow!(msg)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code(), "message": self.public_message() });
        if let Some(details) = self.details() {
            error["details"] = details;
        }
        let mut response = (self.status(), axum::Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The error body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBodyDoc {
    pub error: ErrorDoc,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDoc {
    /// `unauthorized`, `forbidden`, `not_found`, `invalid_input`, `conflict`,
    /// `rate_limit_exceeded`, `insufficient_credits`, `internal`.
    pub code: String,
    pub message: String,
    /// For validation errors: `{"field": …, "reason": …}`.
    pub details: Option<serde_json::Value>,
}
