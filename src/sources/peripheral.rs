//! Peripheral boards on serial lines.
//! (Skeleton: being written.)

use super::{SourceContext, SourceTask};

/// Starts one reader per `[peripherals.<board>]` with `transport = "serial"`.
pub fn start(_ctx: &SourceContext) -> Result<Vec<SourceTask>, String> {
    Ok(Vec::new())
}
