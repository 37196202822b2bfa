//! The cron scheduler.
//! (Skeleton: being written.)

use super::{SourceContext, SourceTask};

/// Starts the scheduler when any SOP has a cron trigger.
pub fn start(_ctx: &SourceContext) -> Result<Option<SourceTask>, String> {
    Ok(None)
}
