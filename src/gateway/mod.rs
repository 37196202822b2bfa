//! The HTTP gateway (DESIGN §4).
//! (Skeleton.)
