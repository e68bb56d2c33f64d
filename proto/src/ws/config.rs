//! Limits for one WebSocket connection.

/// Limits applied to what the peer sends. Exceeding one fails the connection
/// with close code 1009 ([`CapacityError`](super::error::CapacityError)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest message, all fragments together, in payload bytes. Default
    /// 16 MiB: the Autobahn suite's 9.* cases echo messages of up to 16 MiB.
    /// Checked when a frame header arrives, before its payload is buffered.
    pub message_bytes_max: usize,
    /// Largest single frame payload, in bytes. Default 16 MiB.
    pub frame_bytes_max: usize,
}

impl Config {
    /// Default for [`Config::message_bytes_max`]: 16 MiB.
    pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 16 << 20;
    /// Default for [`Config::frame_bytes_max`]: 16 MiB.
    pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 << 20;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            message_bytes_max: Self::MESSAGE_BYTES_MAX_DEFAULT,
            frame_bytes_max: Self::FRAME_BYTES_MAX_DEFAULT,
        }
    }
}
