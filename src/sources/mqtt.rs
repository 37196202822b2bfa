//! The MQTT source.
//! (Skeleton: being written.)

use super::{SourceContext, SourceTask};

/// Starts the MQTT listener when `[channels_config.mqtt]` is configured.
pub fn start(_ctx: &SourceContext) -> Result<Option<SourceTask>, String> {
    Ok(None)
}
