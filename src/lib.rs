//! canaryd: progressive delivery with statistics.
pub mod demo;
pub mod judge;
