//! Rank statistics (placeholder until the statistics work lands).
