//! What a committed change is numbered by ([`Lsn`]) and what the log promises about it
//! ([`Durability`]): every layer sees these, so they live at the bottom.

/// A log sequence number: every change (page create, page free, each routed delta, each
/// extension record) gets the next one, starting at 1.
pub type Lsn = u64;

/// How much the transaction log promises about a returned write.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to OS buffers: survives a process crash, not a power loss.
    #[default]
    None = 0,
    /// Concurrent writers share one fsync; each returns once its record is on disk.
    GroupCommit = 1,
    /// One fsync per write.
    Always = 2,
}

impl Durability {
    /// Decodes the C ABI representation.
    pub fn from_u32(v: u32) -> Option<Durability> {
        match v {
            0 => Some(Durability::None),
            1 => Some(Durability::GroupCommit),
            2 => Some(Durability::Always),
            _ => None,
        }
    }
}
