//! tickgate's IO layer: the reactors, their connections, the HTTP routes, and the wiring that
//! starts a [`Gateway`].
//!
//! Everything that decides *what* to send lives in the sans-IO crates (tickgate-core and
//! tickgate-protocol); this crate only moves bytes between them and sockets. Each reactor thread
//! owns its sockets outright: nothing on the per-message path takes a lock.

pub mod admission;
pub mod auth;
pub mod config;
pub mod connection;
pub mod connz;
pub mod deflate;
pub mod forwarded;
pub mod gateway;
pub mod hold;
pub mod http;
pub mod liveness;
pub mod metrics;
pub mod proxy_protocol;
pub mod reactor;
pub mod replay;
pub mod resume_fetch;
pub mod session;
pub mod stats;
pub mod tls;

pub use config::{Config, ConfigError};
pub use gateway::{Gateway, GatewayStats, StartError};
pub use liveness::{Failure, Fault, Liveness};
pub use tickgate_feed::sim::{Activity, SimConfig};
