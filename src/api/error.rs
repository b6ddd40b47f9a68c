//! Every API error is JSON `{"error": "..."}` with a status a client can act on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::controller::ControlError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong API token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("request body is larger than the {0} bytes allowed")]
    TooLarge(usize),
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::UnknownRule(_) => ApiError::BadRequest(e.to_string()),
            ControlError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ControlError::Conflict(_) | ControlError::Rejected(_) => {
                ApiError::Conflict(e.to_string())
            }
            ControlError::Store(_) | ControlError::ShuttingDown => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        (status, axum::Json(json!({"error": self.to_string()}))).into_response()
    }
}
