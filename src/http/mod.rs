//! HTTP as fanin speaks it, shared by the HTTP source (`sources::http`) and
//! the gateway: the error reply every refusal is ([`ApiError`]), extractors
//! that refuse with one, bodies read within their limits, request paths in
//! their one spelling, who the client is and its rate limits, and the
//! credentials a request presents.

pub mod auth;
pub mod body;
mod error;
pub mod extract;
pub mod limits;
pub mod path;

pub use error::ApiError;
