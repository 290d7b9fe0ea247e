//! Checkpoints in the JetStream object store: one object per stream (the newest), a small
//! header (which state, term, LSN, and the stream sequence a follower continues from) and the
//! state's checkpoint image.

use async_nats::jetstream::{self, object_store};
use mmsb::Lsn;
use tokio::io::AsyncReadExt;

use crate::nats::Target;

const MAGIC: [u8; 8] = *b"MMSBRCK1";
pub(crate) const HEADER_LEN: usize = 48;
/// The object's name in the bucket.
const OBJECT: &str = "checkpoint";

/// What a checkpoint object says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// The state it belongs to.
    pub state_id: u128,
    /// The term of the primary that published it.
    pub term: u64,
    /// The LSN the image holds.
    pub lsn: Lsn,
    /// Every stream message below this sequence covers LSNs at or below `lsn`: a follower
    /// starting from the image reads from here (skipping what it already has), and compaction
    /// may purge below it.
    pub start_seq: u64,
}

impl CheckpointHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..24].copy_from_slice(&self.state_id.to_le_bytes());
        h[24..32].copy_from_slice(&self.term.to_le_bytes());
        h[32..40].copy_from_slice(&self.lsn.to_le_bytes());
        h[40..48].copy_from_slice(&self.start_seq.to_le_bytes());
        h
    }

    pub(crate) fn decode(b: &[u8]) -> Option<CheckpointHeader> {
        let h = b.get(..HEADER_LEN)?;
        if h[0..8] != MAGIC {
            return None;
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(h[r].try_into().expect("8 bytes"));
        Some(CheckpointHeader {
            state_id: u128::from_le_bytes(h[8..24].try_into().expect("16 bytes")),
            term: u(24..32),
            lsn: u(32..40),
            start_seq: u(40..48),
        })
    }
}

async fn bucket(target: &Target, js: &jetstream::Context) -> mmsb::Result<object_store::ObjectStore> {
    if let Ok(b) = js.get_object_store(target.bucket()).await {
        return Ok(b);
    }
    js.create_object_store(object_store::Config {
        bucket: target.bucket(),
        num_replicas: target.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| target.failed("create the checkpoint bucket", e))
}

/// Stores `image` as the stream's newest checkpoint.
pub(crate) async fn put(
    target: &Target,
    js: &jetstream::Context,
    h: &CheckpointHeader,
    image: &[u8],
) -> mmsb::Result<()> {
    let b = bucket(target, js).await?;
    let mut data = Vec::with_capacity(HEADER_LEN + image.len());
    data.extend_from_slice(&h.encode());
    data.extend_from_slice(image);
    b.put(OBJECT, &mut data.as_slice()).await.map_err(|e| target.failed("store the checkpoint", e))?;
    Ok(())
}

/// The stream's newest checkpoint, if one was published: its header and the image.
pub(crate) async fn get(target: &Target, js: &jetstream::Context) -> mmsb::Result<Option<(CheckpointHeader, Vec<u8>)>> {
    let Ok(b) = js.get_object_store(target.bucket()).await else { return Ok(None) };
    let mut obj = match b.get(OBJECT).await {
        Ok(o) => o,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(target.failed("read the checkpoint", e)),
    };
    let mut data = Vec::new();
    obj.read_to_end(&mut data).await.map_err(|e| target.failed("read the checkpoint", e))?;
    let h = CheckpointHeader::decode(&data).ok_or_else(|| mmsb::types::error::ReplicaError::Malformed {
        stream: target.stream.clone(),
        seq: 0,
        reason: "the checkpoint object has no valid header".into(),
    })?;
    Ok(Some((h, data.split_off(HEADER_LEN))))
}
