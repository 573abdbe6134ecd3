//! tickgate's wire protocol, sans IO.
//!
//! - [`command`]: client commands, parsed from text frames with simd-json.
//! - [`message`]: server messages, encoded straight into byte buffers (no intermediate values).
//! - [`ws`]: server-to-client WebSocket frames, built once and shared by every client.
//! - [`deflate`]: permessage-deflate: the handshake's offers, compressing and inflating messages.
//! - [`inbound`]: fail-fast UTF-8 checking of client text messages as their bytes arrive.
//!
//! docs/PROTOCOL.md is the specification; this crate implements it. Nothing here reads a
//! socket, a clock or a thread: inputs are bytes and values, outputs are bytes.

pub mod command;
pub mod deflate;
pub mod inbound;
pub mod json;
pub mod message;
pub mod ws;

pub use command::{Command, CommandError, Request, RequestId, Resume, parse_command};
pub use message::ErrorCode;
pub use ws::{CloseCode, FrameBuilder, close_frame, data_frame, ping_frame};
