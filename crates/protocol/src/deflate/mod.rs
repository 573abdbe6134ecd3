//! permessage-deflate (RFC 7692), sans IO: the handshake's offers and answer ([`offer`]),
//! compressing outgoing messages ([`compress`]) and inflating incoming ones ([`inflate`]).
//! docs/PROTOCOL.md, "Compression", says what a client sees; docs/ARCHITECTURE.md how the
//! gateway shares one compressed tick between connections.

pub mod compress;
pub mod inflate;
pub mod offer;

pub use compress::{DeflateCounts, MIN_COMPRESSED_LEN, MessageDeflater};
pub use inflate::{InboundInflate, InflateError, MessageInflater};
pub use offer::{Agreed, Decline, Negotiation, PERMESSAGE_DEFLATE, negotiate};
