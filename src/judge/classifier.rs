//! Kayenta-style classifier (placeholder until the statistics work lands).
