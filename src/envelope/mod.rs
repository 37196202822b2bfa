//! Envelopes (DESIGN §7).
//! (Skeleton.)
