//! A complete, immutable WebSocket frame shared by every connection that sends it.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The bytes of one whole server-to-client WebSocket frame (header and payload), or of another
/// unit that must leave whole, such as an HTTP response head.
///
/// Server frames are unmasked, so the same bytes go to every client: a frame is built once and
/// cloning it only bumps a reference count. Nothing ever copies or re-encodes it per client.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Arc<[u8]>);

impl Frame {
    /// Wraps bytes that already form one or more complete frames.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Frame(Arc::from(bytes))
    }

    /// Whether `self` and `other` are the same shared buffer (not merely equal bytes).
    pub fn ptr_eq(&self, other: &Frame) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// How many holders share this buffer right now.
    pub fn share_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({} bytes)", self.0.len())
    }
}
