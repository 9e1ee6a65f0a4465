//! Opus to AAC (to be written).
