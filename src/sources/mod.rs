//! Event sources (DESIGN §5): each receives and normalizes, nothing more.
//! The webhook source lives in the gateway; MQTT, cron timers and serial
//! peripherals are wired here.

pub mod cron;
