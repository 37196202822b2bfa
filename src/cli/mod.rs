//! The command line (DESIGN §8).
//! (Skeleton.)
