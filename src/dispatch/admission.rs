//! Admission per SOP.
//! (Skeleton.)
