//! Fresh ids for what fanin creates: events, runs, envelopes, leases. UUID
//! v7, so ids sort by creation in the store and in logs. This is the one
//! place the runtime makes an id; fanin-core never does — it is handed them,
//! so what it plans stays a function of its inputs.

/// A new, unique, time-ordered id.
pub fn fresh() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Fresh ids for planning (`fanin_core::runs::plan::IdSource`).
pub struct Fresh;

impl fanin_core::runs::plan::IdSource for Fresh {
    fn fresh(&mut self) -> String {
        fresh()
    }
}
