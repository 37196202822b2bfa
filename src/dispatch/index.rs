//! The matcher index: one lookup structure per source.
//! (Skeleton.)
