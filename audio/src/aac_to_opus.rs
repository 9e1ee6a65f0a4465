//! AAC to Opus (to be written).
