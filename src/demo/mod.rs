//! The local stack used by `canaryd demo` and the integration tests (placeholder).
