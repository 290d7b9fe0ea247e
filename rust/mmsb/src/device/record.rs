//! The DeviceSync log record: written to the transaction log (as an extension record) once a
//! doorbell confirms that a sync completed.
//!
//! The record is informational for replay: a host→device sync changes no CPU byte, and the bytes
//! a device→host sync brings back are routed as an ordinary delta (logged with its own LSN, which
//! `delta_lsn` names). Replay may therefore skip these records; they tell a reader which
//! epoch of each page the device had seen.

use serde::{Deserialize, Serialize};

use crate::device::plan::SyncDirection;
use crate::types::error::LogError;
use crate::types::page::PageId;

/// Version of the body encoding; bumped on incompatible change.
pub const DEVICE_SYNC_RECORD_VERSION: u8 = 1;

/// Body of a DeviceSync log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSyncRecord {
    /// Body encoding version (`DEVICE_SYNC_RECORD_VERSION`).
    pub version: u8,
    /// The page synced.
    pub page: PageId,
    /// Which way the bytes moved.
    pub direction: SyncDirection,
    /// The page's epoch whose bytes the device and the CPU agree on after the sync.
    pub epoch: u64,
    /// For device→host syncs that changed bytes: the LSN of the routed delta.
    pub delta_lsn: Option<u64>,
    /// The copies made (`(offset, len)` in the page).
    pub copies: Vec<(u64, u64)>,
    /// Bytes that crossed the bus.
    pub bytes: u64,
}

/// Serializes a record body (postcard).
pub fn encode_sync_record(rec: &DeviceSyncRecord) -> Vec<u8> {
    postcard::to_allocvec(rec).expect("postcard serializes plain data to a Vec without failing")
}

/// Deserializes a record body; rejects trailing bytes and unknown versions.
pub fn decode_sync_record(body: &[u8]) -> Result<DeviceSyncRecord, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { file: "device sync record".into(), offset: 0, reason };
    let (rec, rest): (DeviceSyncRecord, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| corrupt(format!("undecodable body: {e}")))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    if rec.version != DEVICE_SYNC_RECORD_VERSION {
        return Err(LogError::UnsupportedVersion {
            file: "device sync record".into(),
            found: u32::from(rec.version),
            supported: u32::from(DEVICE_SYNC_RECORD_VERSION),
        });
    }
    Ok(rec)
}

/// The device layer's log records as a log extension: `DEVICE_SYNC` records are informational
/// (the bytes a sync changed were logged as ordinary deltas), so replaying one only checks
/// that it decodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceSyncRecords;

impl crate::runtime::extension::LogExtension for DeviceSyncRecords {
    fn record_kinds(&self) -> &'static [u8] {
        &[crate::runtime::tlog::ext_kind::DEVICE_SYNC]
    }

    fn replay(
        &mut self,
        _kind: u8,
        body: &[u8],
        _page_size: crate::runtime::extension::PageSizes<'_>,
    ) -> crate::types::error::Result<()> {
        decode_sync_record(body).map(|_| ()).map_err(Into::into)
    }

    fn fresh(&self) -> Box<dyn crate::runtime::extension::LogExtension> {
        Box::new(DeviceSyncRecords)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeviceSyncRecord {
        DeviceSyncRecord {
            version: DEVICE_SYNC_RECORD_VERSION,
            page: PageId(42),
            direction: SyncDirection::DeviceToHost,
            epoch: 7,
            delta_lsn: Some(99),
            copies: vec![(0, 4096), (1 << 20, 17)],
            bytes: 4113,
        }
    }

    #[test]
    fn round_trip() {
        for rec in [sample(), DeviceSyncRecord { direction: SyncDirection::HostToDevice, delta_lsn: None, ..sample() }]
        {
            let body = encode_sync_record(&rec);
            assert_eq!(decode_sync_record(&body).unwrap(), rec);
        }
    }

    #[test]
    fn rejects_garbage() {
        let body = encode_sync_record(&sample());
        for cut in 0..body.len() {
            assert!(decode_sync_record(&body[..cut]).is_err(), "truncation at {cut} accepted");
        }
        let mut long = body.clone();
        long.push(0);
        assert!(decode_sync_record(&long).is_err());
        let mut v2 = sample();
        v2.version = 2;
        assert!(matches!(decode_sync_record(&encode_sync_record(&v2)), Err(LogError::UnsupportedVersion { .. })));
    }
}
