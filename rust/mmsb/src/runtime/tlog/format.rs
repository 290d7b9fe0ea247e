//! Byte layout of segments, records and checkpoints (`docs/log-format.md` is the reference).
//!
//! All integers are little-endian. Every checksum is CRC32C. Record checksums are seeded with
//! the salt of the segment that holds them, so a record copied from another generation of the
//! log never verifies.

use crate::runtime::state::Lsn;
use crate::runtime::tlog::checksum;
use crate::types::error::LogError;

/// Version of the segment and checkpoint formats written by this build. Version 2 added blob
/// records (`RECORD_FLAG_BLOB`); version 3 aligned checkpoint page images to OS pages so that
/// open maps them (`checkpoint.rs`; segments are unchanged); this build reads versions 1..=3.
pub const FORMAT_VERSION: u32 = 3;
/// First bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"MMSBLOG\0";
/// First bytes of every checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"MMSBCKPT";
/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: usize = 56;
/// Bytes in a record header.
pub const RECORD_HEADER_LEN: usize = 32;
/// Bytes in a checkpoint header.
pub const CHECKPOINT_HEADER_LEN: usize = 64;
/// Segment flag: the log chain starts here (a fresh log, or the output of a compaction); lower
/// numbered segments are leftovers and are never replayed.
pub const FLAG_CHAIN_START: u32 = 1;

/// The header of one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The segment's number in its file name.
    pub segno: u64,
    /// Random per segment; every record checksum covers it, so stale records do not verify.
    pub salt: u64,
    /// Salt of the previous segment of the chain (0 for a chain start).
    pub prev_salt: u64,
    /// LSN of the last record before this segment; its first record has `base_lsn + 1`.
    pub base_lsn: Lsn,
}

impl SegmentHeader {
    /// The header's bytes, checksum included.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.segno.to_le_bytes());
        b[24..32].copy_from_slice(&self.salt.to_le_bytes());
        b[32..40].copy_from_slice(&self.prev_salt.to_le_bytes());
        b[40..48].copy_from_slice(&self.base_lsn.to_le_bytes());
        let crc = checksum::crc32c(&b[0..52]);
        b[52..56].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a header. `Ok(None)` means "not a valid header" (torn, corrupt or foreign); a
    /// well-formed header of a newer format version is an error of its own.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Option<SegmentHeader>, LogError> {
        let Some(b) = bytes.get(..SEGMENT_HEADER_LEN) else { return Ok(None) };
        if b[0..8] != SEGMENT_MAGIC || checksum::crc32c(&b[0..52]) != le32(&b[52..56]) {
            return Ok(None);
        }
        let version = le32(&b[8..12]);
        if version > FORMAT_VERSION {
            return Err(LogError::UnsupportedVersion { file: file.into(), found: version, supported: FORMAT_VERSION });
        }
        if version == 0 {
            return Ok(None);
        }
        Ok(Some(SegmentHeader {
            flags: le32(&b[12..16]),
            segno: le64(&b[16..24]),
            salt: le64(&b[24..32]),
            prev_salt: le64(&b[32..40]),
            base_lsn: le64(&b[40..48]),
        }))
    }
}

/// Type byte of padding records (`RecordType::Pad`): they carry no LSN (`lsn == count == 0`),
/// their body is zeros, and readers skip them. Reserved so that a writer may align records
/// (this version writes none: aligning 64 KiB payloads measured no gain on ext4).
pub const PAD_KIND: u8 = 6;

/// Record flag (header byte 25): the record's large payloads are in the segment's blob file,
/// and its body starts with a blob descriptor (see [`BlobRef`]).
pub const RECORD_FLAG_BLOB: u8 = 1;

/// A record whose payloads add up to at least this many bytes puts them in the blob file.
/// Why: the kernel's page cache writes a 64 KiB-aligned 64 KiB write as one large folio, and
/// any other shape as several small ones (1.5x the time on ext4); framing interleaved with
/// payloads in one file can never keep payloads aligned, a blob file beside it can.
/// (The default of `Config::blob_min`.)
pub const BLOB_MIN: u64 = 32 << 10;

/// Alignment of a payload run in the blob file: 64 KiB for runs of at least 64 KiB (one large
/// folio each), 4 KiB for runs of at least 4 KiB, none below (only a small `Config::blob_min`
/// makes such runs, and aligning them gains nothing). Gaps are never written: holes cost no
/// disk blocks.
pub fn blob_align(total: u64) -> u64 {
    match total {
        t if t >= 64 << 10 => 64 << 10,
        t if t >= 4 << 10 => 4 << 10,
        _ => 1,
    }
}

/// The fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Length of the body as stored in the segment (for a blob record: descriptor + inline bytes).
    pub len: u32,
    /// First LSN the record covers (0 for padding).
    pub lsn: Lsn,
    /// How many LSNs it covers (more than 1 for a compacted run).
    pub count: u64,
    /// The `RecordType` byte.
    pub kind: u8,
    /// `RECORD_FLAG_*` bits.
    pub flags: u8,
}

/// The descriptor at the front of a blob record's stored body: `blob offset: u64`, `pieces: u32`,
/// then per piece `at: u32, len: u32`. The record's logical body is the stored bytes after the
/// descriptor (the inline bytes) with piece `i`'s `len` blob bytes inserted at inline offset
/// `at_i` (ascending); the pieces lie back to back in the blob file from `off` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// Offset of the first piece in the blob file.
    pub off: u64,
    /// Per piece `(at, len)`: its inline offset and its length.
    pub pieces: Vec<(u32, u32)>,
    /// Sum of the piece lengths.
    pub total: u64,
    /// Where the inline bytes start in the stored body.
    pub inline_at: usize,
}

impl BlobRef {
    /// Bytes of a descriptor with `n` pieces.
    pub fn encoded_len(n: usize) -> usize {
        12 + 8 * n
    }

    /// Writes a descriptor into `out[..Self::encoded_len(pieces.len())]`.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the writer makes one piece per delta payload of a record, far below u32::MAX pieces (not checked here)"
    )]
    pub fn encode(off: u64, pieces: &[(u32, u32)], out: &mut [u8]) {
        out[0..8].copy_from_slice(&off.to_le_bytes());
        out[8..12].copy_from_slice(&(pieces.len() as u32).to_le_bytes());
        for (i, (at, len)) in pieces.iter().enumerate() {
            let o = 12 + 8 * i;
            out[o..o + 4].copy_from_slice(&at.to_le_bytes());
            out[o + 4..o + 8].copy_from_slice(&len.to_le_bytes());
        }
    }

    /// Parses and checks the descriptor at the front of a stored body (untrusted bytes).
    pub fn parse(body: &[u8]) -> Result<BlobRef, &'static str> {
        const BAD: &str = "blob descriptor does not fit its record";
        let head = body.get(..12).ok_or(BAD)?;
        let off = le64(&head[0..8]);
        let n = le32(&head[8..12]) as usize;
        if n == 0 || n > (body.len() - 12) / 8 {
            return Err(BAD);
        }
        let inline_at = Self::encoded_len(n);
        let inline_len = (body.len() - inline_at) as u64;
        let mut pieces = Vec::with_capacity(n);
        let mut total = 0u64;
        let mut prev_at = 0u32;
        for i in 0..n {
            let o = 12 + 8 * i;
            let (at, len) = (le32(&body[o..o + 4]), le32(&body[o + 4..o + 8]));
            if at < prev_at || u64::from(at) > inline_len {
                return Err("blob pieces out of order or past the inline bytes");
            }
            prev_at = at;
            total += u64::from(len);
            pieces.push((at, len));
        }
        off.checked_add(total).ok_or("blob range overflows")?;
        Ok(BlobRef { off, pieces, total, inline_at })
    }

    /// The blob bytes this descriptor covers, if `blob` holds all of them.
    pub fn slice<'a>(&self, blob: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.off).ok()?;
        blob.get(start..start.checked_add(usize::try_from(self.total).ok()?)?)
    }

    /// The logical body: inline bytes with the pieces spliced in.
    pub fn splice(&self, body: &[u8], payload: &[u8]) -> Vec<u8> {
        let inline = &body[self.inline_at..];
        let mut out = Vec::with_capacity(inline.len() + payload.len());
        let (mut from, mut p) = (0usize, 0usize);
        for &(at, len) in &self.pieces {
            out.extend_from_slice(&inline[from..at as usize]);
            out.extend_from_slice(&payload[p..p + len as usize]);
            from = at as usize;
            p += len as usize;
        }
        out.extend_from_slice(&inline[from..]);
        out
    }
}

impl RecordHeader {
    /// Last LSN the record covers.
    pub fn last_lsn(&self) -> Lsn {
        self.lsn + self.count - 1
    }
}

/// Fills the header in front of a body already placed at `frame[RECORD_HEADER_LEN..]`.
#[allow(
    clippy::cast_possible_truncation,
    reason = "callers re-seal bodies the log already framed (compaction), or forge test logs; not checked here"
)]
pub fn seal_record(frame: &mut [u8], salt: u64, lsn: Lsn, count: u64, kind: u8) {
    let body_len = (frame.len() - RECORD_HEADER_LEN) as u32;
    write_record_header(frame, body_len, lsn, count, kind);
    let crc = record_crc(salt, [&frame[8..]]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Seals a blob record: `frame[RECORD_HEADER_LEN..]` holds the descriptor and the inline bytes,
/// `payload` the blob bytes the descriptor covers (used by tests and fuzz targets that forge
/// logs; the writer seals in place).
#[allow(clippy::cast_possible_truncation, reason = "test and fuzz forging only; bodies are small")]
pub fn seal_blob_record(frame: &mut [u8], salt: u64, lsn: Lsn, count: u64, kind: u8, payload: &[u8]) {
    let body_len = (frame.len() - RECORD_HEADER_LEN) as u32;
    write_record_header_flags(frame, body_len, lsn, count, kind, RECORD_FLAG_BLOB);
    let crc = record_crc(salt, [&frame[8..], payload]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Writes every header field but the checksum (left zero) into `h[..RECORD_HEADER_LEN]`.
pub fn write_record_header(h: &mut [u8], body_len: u32, lsn: Lsn, count: u64, kind: u8) {
    write_record_header_flags(h, body_len, lsn, count, kind, 0);
}

/// [`write_record_header`] with `RECORD_FLAG_*` bits.
pub fn write_record_header_flags(h: &mut [u8], body_len: u32, lsn: Lsn, count: u64, kind: u8, flags: u8) {
    h[0..4].copy_from_slice(&body_len.to_le_bytes());
    h[4..8].fill(0);
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24] = kind;
    h[25] = flags;
    h[26..32].fill(0);
}

/// The record checksum over `covered`: the record's bytes from offset 8 on, in pieces.
pub fn record_crc<'a>(salt: u64, covered: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    covered.into_iter().fold(salt_crc(salt), checksum::crc32c_append)
}

/// The CRC32C of a salt: where every record checksum of a segment starts. Readers of a whole
/// segment compute it once ([`check_record_seeded`]) instead of once per record.
pub fn salt_crc(salt: u64) -> u32 {
    checksum::crc32c(&salt.to_le_bytes())
}

/// Why a record did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than the header or the body announces: a torn write.
    Truncated,
    /// Bytes are there but do not verify.
    Bad(&'static str),
}

/// Verifies the record at the front of `bytes` under `salt`, with `blob` the contents of the
/// segment's blob file (empty when it has none); returns its header. The stored body is
/// `bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len]`; [`record_body`] gives the logical one.
pub fn check_record(bytes: &[u8], salt: u64, blob: &[u8]) -> Result<RecordHeader, Invalid> {
    check_record_seeded(bytes, salt_crc(salt), blob)
}

/// [`check_record`] with the salt given as its [`salt_crc`].
pub fn check_record_seeded(bytes: &[u8], seed: u32, blob: &[u8]) -> Result<RecordHeader, Invalid> {
    let Some(h) = bytes.get(..RECORD_HEADER_LEN) else { return Err(Invalid::Truncated) };
    let len = le32(&h[0..4]);
    let count = le64(&h[16..24]);
    let lsn = le64(&h[8..16]);
    let flags = h[25];
    if flags & !RECORD_FLAG_BLOB != 0 || h[26..32].iter().any(|&b| b != 0) {
        return Err(Invalid::Bad("reserved header bytes are not zero"));
    }
    if h[24] == PAD_KIND {
        if count != 0 || lsn != 0 {
            return Err(Invalid::Bad("padding with an LSN"));
        }
    } else if count == 0 || lsn == 0 || lsn.checked_add(count).is_none() {
        return Err(Invalid::Bad("impossible LSN range"));
    }
    let end = RECORD_HEADER_LEN + len as usize;
    let Some(frame) = bytes.get(..end) else { return Err(Invalid::Truncated) };
    let crc = if flags & RECORD_FLAG_BLOB != 0 {
        if h[24] == PAD_KIND {
            return Err(Invalid::Bad("padding with blob bytes"));
        }
        let r = BlobRef::parse(&frame[RECORD_HEADER_LEN..]).map_err(Invalid::Bad)?;
        // The blob is written before the record, so a record without all of its blob bytes is
        // a torn write (unsynced pages that reached the disk out of order).
        let payload = r.slice(blob).ok_or(Invalid::Truncated)?;
        checksum::crc32c_append(checksum::crc32c_append(seed, &frame[8..]), payload)
    } else {
        checksum::crc32c_append(seed, &frame[8..])
    };
    if crc != le32(&h[4..8]) {
        return Err(Invalid::Bad("checksum mismatch"));
    }
    Ok(RecordHeader { len, lsn, count, kind: h[24], flags })
}

/// The logical body of a record that [`check_record`] accepted: the stored body, or for a blob
/// record its inline bytes with the blob pieces spliced in.
pub fn record_body<'a>(h: &RecordHeader, stored: &'a [u8], blob: &[u8]) -> std::borrow::Cow<'a, [u8]> {
    if h.flags & RECORD_FLAG_BLOB == 0 {
        return std::borrow::Cow::Borrowed(stored);
    }
    let r = BlobRef::parse(stored).expect("checked by check_record");
    std::borrow::Cow::Owned(r.splice(stored, r.slice(blob).expect("checked by check_record")))
}

/// Name of segment `segno`.
pub fn segment_name(segno: u64) -> String {
    format!("log-{segno:020}.seg")
}

/// Name of the blob file of segment `segno` (created with its first blob record).
pub fn blob_name(segno: u64) -> String {
    format!("log-{segno:020}.blob")
}

/// Name of the checkpoint taken at `lsn`.
pub fn checkpoint_name(lsn: Lsn) -> String {
    format!("ckpt-{lsn:020}.ckpt")
}

/// Suffix of files being written (removed on open).
pub const TMP_SUFFIX: &str = ".tmp";

fn parse_num(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment number encoded in a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    parse_num(name, "log-", ".seg")
}

/// Segment number encoded in a blob file name.
pub fn parse_blob_name(name: &str) -> Option<u64> {
    parse_num(name, "log-", ".blob")
}

/// LSN encoded in a checkpoint file name.
pub fn parse_checkpoint_name(name: &str) -> Option<Lsn> {
    parse_num(name, "ckpt-", ".ckpt")
}

pub(crate) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

pub(crate) fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// A random, non-zero salt.
pub fn random_salt() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to time and address entropy; salts only need to differ
        // between generations, not be unpredictable.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        // The low 64 bits of the nanosecond clock are the entropy wanted.
        #[allow(clippy::cast_possible_truncation, reason = "keeping the low bits is the point")]
        let t = t as u64;
        b = (t ^ (&b as *const _ as u64).rotate_left(32)).to_le_bytes();
    }
    u64::from_le_bytes(b).max(1)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test frames are small")]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trip_and_version_check() {
        let h = SegmentHeader { flags: FLAG_CHAIN_START, segno: 7, salt: 99, prev_salt: 0, base_lsn: 41 };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b, "f").unwrap(), Some(h));
        for i in 0..b.len() {
            let mut c = b;
            c[i] ^= 0x10;
            assert_eq!(SegmentHeader::decode(&c, "f").unwrap(), None, "flip at {i}");
        }
        let mut newer = b;
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let crc = crc32c::crc32c(&newer[0..52]);
        newer[52..56].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(&newer, "f"),
            Err(LogError::UnsupportedVersion { found, .. }) if found == FORMAT_VERSION + 1
        ));
    }

    #[test]
    fn record_checks_salt_and_every_byte() {
        let mut frame = vec![0u8; RECORD_HEADER_LEN];
        frame.extend_from_slice(b"body bytes");
        seal_record(&mut frame, 5, 10, 2, 3);
        let h = check_record(&frame, 5, &[]).unwrap();
        assert_eq!((h.lsn, h.count, h.kind, h.len), (10, 2, 3, 10));
        assert!(check_record(&frame, 6, &[]).is_err(), "another generation's salt must not verify");
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut c = frame.clone();
                c[i] ^= 1 << bit;
                assert!(check_record(&c, 5, &[]).is_err(), "flip of bit {bit} at byte {i} verified");
            }
        }
        for cut in 0..frame.len() {
            assert!(check_record(&frame[..cut], 5, &[]).is_err());
        }
    }

    /// A blob record as the writer lays it out: descriptor + inline bytes in the segment, the
    /// payload in the blob file at `off`.
    fn blob_record(salt: u64, inline: &[u8], pieces: &[(u32, &[u8])], off: usize) -> (Vec<u8>, Vec<u8>) {
        let desc: Vec<(u32, u32)> = pieces.iter().map(|(at, p)| (*at, p.len() as u32)).collect();
        let mut frame = vec![0u8; RECORD_HEADER_LEN + BlobRef::encoded_len(desc.len())];
        BlobRef::encode(off as u64, &desc, &mut frame[RECORD_HEADER_LEN..]);
        frame.extend_from_slice(inline);
        let mut blob = vec![0xEEu8; off];
        for (_, p) in pieces {
            blob.extend_from_slice(p);
        }
        seal_blob_record(&mut frame, salt, 10, 2, 3, &blob[off..]);
        (frame, blob)
    }

    #[test]
    fn blob_records_verify_their_blob_bytes_and_splice_back() {
        let (frame, blob) = blob_record(5, b"headmidtail", &[(4, b"AAAA"), (7, b"BB")], 4096);
        let h = check_record(&frame, 5, &blob).unwrap();
        assert_eq!(h.flags, RECORD_FLAG_BLOB);
        let body = record_body(&h, &frame[RECORD_HEADER_LEN..], &blob);
        assert_eq!(&body[..], b"headAAAAmidBBtail");
        // Every byte of the payload is covered by the checksum.
        for i in 4096..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 1;
            assert_eq!(check_record(&frame, 5, &b), Err(Invalid::Bad("checksum mismatch")), "flip at {i}");
        }
        // A blob file that stops short of the payload is a torn write, not damage.
        for cut in 0..blob.len() {
            assert_eq!(check_record(&frame, 5, &blob[..cut]), Err(Invalid::Truncated), "cut at {cut}");
        }
        // Bytes before the payload are not the record's.
        let mut b = blob.clone();
        b[0] ^= 1;
        assert!(check_record(&frame, 5, &b).is_ok());
    }

    #[test]
    fn blob_descriptors_from_untrusted_bytes_are_checked() {
        let mut d = vec![0u8; BlobRef::encoded_len(2)];
        BlobRef::encode(u64::MAX - 1, &[(0, 1), (0, 1)], &mut d);
        assert_eq!(BlobRef::parse(&d), Err("blob range overflows"));
        BlobRef::encode(0, &[(2, 1), (1, 1)], &mut d);
        d.extend_from_slice(b"xy");
        assert!(BlobRef::parse(&d).is_err(), "pieces out of order");
        BlobRef::encode(0, &[(1, 1), (3, 1)], &mut d);
        assert!(BlobRef::parse(&d).is_err(), "piece past the inline bytes");
        BlobRef::encode(0, &[(1, 1), (2, 1)], &mut d);
        assert_eq!(BlobRef::parse(&d).unwrap().total, 2);
        assert!(BlobRef::parse(&d[..11]).is_err());
        assert!(BlobRef::parse(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(), "zero pieces");
        let mut huge = vec![0u8; 12];
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(BlobRef::parse(&huge).is_err());
    }

    #[test]
    fn names_round_trip_and_are_safe() {
        assert_eq!(parse_blob_name(&blob_name(12)), Some(12));
        assert_eq!(parse_segment_name(&blob_name(12)), None);
        assert_eq!(parse_segment_name(&segment_name(12)), Some(12));
        assert_eq!(parse_checkpoint_name(&checkpoint_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("log-1.seg"), None);
        assert_eq!(parse_segment_name("log-0000000000000000001x.seg"), None);
        for n in [segment_name(u64::MAX), checkpoint_name(0)] {
            assert!(!n.contains('/') && !n.contains(".."));
        }
    }
}
