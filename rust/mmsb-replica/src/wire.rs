//! The message format of a replicated stream: one message per log record (or term record),
//! a fixed header with the state's id, the term, the LSNs and a CRC32C over header and body.
//!
//! ```text
//! 0  magic "MMSBRPL1"   8  state id (u128 LE)   24 term (u64)   32 lsn (u64)   40 count (u64)
//! 48 kind (u8)   49 reserved (7 zero bytes)   56 body length (u32)   60 crc32c (u32)   64 body
//! ```
//! `kind` is a log record type (`mmsb::runtime::tlog::record::RecordType`: the body is that
//! record's), [`KIND_RECORDS`] (the body is consecutive records, each `lsn u64, count u64,
//! kind u8, length u32, body`, together covering `lsn..lsn + count`) or [`KIND_TERM`].

use mmsb::Lsn;

/// Identifies the format (and its version).
pub const MAGIC: [u8; 8] = *b"MMSBRPL1";
/// Bytes before the body.
pub const HEADER_LEN: usize = 64;
/// A term record: a new primary took over at LSN `lsn` (no LSN of its own, `count` 0).
pub const KIND_TERM: u8 = 0xF0;
/// Several consecutive log records in one message (what one group commit made durable).
pub const KIND_RECORDS: u8 = 0xF1;
/// Bytes before each record's body in a [`KIND_RECORDS`] body.
pub const SUB_HEADER_LEN: usize = 21;

/// One log record of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub<'a> {
    /// First LSN.
    pub lsn: Lsn,
    /// LSNs covered (at least 1).
    pub count: u64,
    /// Record type byte.
    pub kind: u8,
    /// Record body.
    pub body: &'a [u8],
}

impl Sub<'_> {
    /// Last LSN covered.
    pub fn last_lsn(&self) -> Lsn {
        self.lsn + self.count - 1
    }
}

/// Appends one record to a [`KIND_RECORDS`] body.
pub fn push_sub(out: &mut Vec<u8>, s: &Sub<'_>) {
    out.extend_from_slice(&s.lsn.to_le_bytes());
    out.extend_from_slice(&s.count.to_le_bytes());
    out.push(s.kind);
    out.extend_from_slice(&body_len(s.body).to_le_bytes());
    out.extend_from_slice(s.body);
}

/// One decoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The replicated state (random, fixed when the stream is created).
    pub state_id: u128,
    /// The primary's term; a term record raises it.
    pub term: u64,
    /// First LSN of the record (a term record: the LSN the new primary starts after).
    pub lsn: Lsn,
    /// LSNs covered (0 for a term record).
    pub count: u64,
    /// Record type byte, or [`KIND_TERM`].
    pub kind: u8,
    /// The log record body.
    pub body: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// The last LSN the message covers (`lsn` for a term record).
    pub fn last_lsn(&self) -> Lsn {
        if self.count == 0 {
            self.lsn
        } else {
            self.lsn + self.count - 1
        }
    }

    /// True for a term record.
    pub fn is_term(&self) -> bool {
        self.kind == KIND_TERM
    }

    /// The log records the message carries, in LSN order (none for a term record); an error
    /// says why the body does not hold consecutive records covering `lsn..lsn + count`.
    pub fn records(&self) -> Result<Vec<Sub<'a>>, String> {
        match self.kind {
            KIND_TERM => Ok(Vec::new()),
            KIND_RECORDS => {
                let mut out = Vec::new();
                let mut at = self.lsn;
                let mut rest: &'a [u8] = self.body;
                while !rest.is_empty() {
                    let h = rest.get(..SUB_HEADER_LEN).ok_or("a record header is cut off")?;
                    let len = u32::from_le_bytes(h[17..21].try_into().expect("4 bytes")) as usize;
                    let body = rest.get(SUB_HEADER_LEN..SUB_HEADER_LEN + len).ok_or("a record body is cut off")?;
                    let sub = Sub { lsn: le64(&h[0..8]), count: le64(&h[8..16]), kind: h[16], body };
                    if sub.lsn != at || sub.count == 0 || sub.kind >= KIND_TERM {
                        return Err(format!(
                            "record at LSN {} (count {}, kind {}) where LSN {at} was due",
                            sub.lsn, sub.count, sub.kind
                        ));
                    }
                    at = sub.lsn.checked_add(sub.count).ok_or("LSN range overflows")?;
                    out.push(sub);
                    rest = &rest[SUB_HEADER_LEN + len..];
                }
                if at != self.lsn + self.count {
                    return Err(format!("records end before LSN {} (the message covers {} LSNs)", at, self.count));
                }
                Ok(out)
            }
            k if k < KIND_TERM => Ok(vec![Sub { lsn: self.lsn, count: self.count, kind: k, body: self.body }]),
            k => Err(format!("unknown message kind {k}")),
        }
    }

    /// The message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.state_id.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        out.extend_from_slice(&self.lsn.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.push(self.kind);
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(&body_len(self.body).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out), self.body);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(self.body);
        out
    }

    /// The JetStream message id: the state and the LSN (or the term), so the duplicate window
    /// drops a re-send of the same record and never a different one.
    pub fn message_id(&self) -> String {
        if self.is_term() {
            format!("{:032x}-t{}", self.state_id, self.term)
        } else {
            format!("{:032x}-{}", self.state_id, self.lsn)
        }
    }
}

/// A body's length field. Log records are below 4 GiB (the log refuses larger ones) and a
/// message of several records stays below 256 KiB, so every body fits.
fn body_len(body: &[u8]) -> u32 {
    u32::try_from(body.len()).expect("replicated bodies are below 4 GiB")
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// Decodes and verifies a message; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, String> {
    let h = bytes.get(..HEADER_LEN).ok_or_else(|| format!("{} bytes, shorter than the header", bytes.len()))?;
    if h[0..8] != MAGIC {
        return Err("not an MMSB replication message (bad magic)".into());
    }
    let body_len = u32::from_le_bytes(h[56..60].try_into().expect("4 bytes")) as usize;
    let body = &bytes[HEADER_LEN..];
    if body.len() != body_len {
        return Err(format!("body is {} bytes, header says {body_len}", body.len()));
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..60]), body);
    if crc != u32::from_le_bytes(h[60..64].try_into().expect("4 bytes")) {
        return Err("checksum mismatch".into());
    }
    let e = Envelope {
        state_id: u128::from_le_bytes(h[8..24].try_into().expect("16 bytes")),
        term: le64(&h[24..32]),
        lsn: le64(&h[32..40]),
        count: le64(&h[40..48]),
        kind: h[48],
        body,
    };
    if e.is_term() != (e.count == 0) || (!e.is_term() && e.lsn == 0) {
        return Err(format!("kind {} with LSN {} and count {} is inconsistent", e.kind, e.lsn, e.count));
    }
    e.lsn.checked_add(e.count).ok_or("LSN range overflows")?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_bit_is_refused() {
        let e = Envelope { state_id: 7 << 100 | 3, term: 2, lsn: 10, count: 3, kind: 3, body: b"body bytes" };
        let bytes = e.encode();
        assert_eq!(decode(&bytes).unwrap(), e);
        assert_eq!(e.last_lsn(), 12);
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode(&b).is_err(), "bit {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&bytes[..10]).is_err());
        let t = Envelope { state_id: 1, term: 3, lsn: 12, count: 0, kind: KIND_TERM, body: b"" };
        assert!(decode(&t.encode()).unwrap().is_term());
        assert_ne!(t.message_id(), e.message_id());
    }

    #[test]
    fn several_records_in_one_message() {
        let subs = [
            Sub { lsn: 5, count: 1, kind: 1, body: b"create" },
            Sub { lsn: 6, count: 3, kind: 3, body: b"batch" },
            Sub { lsn: 9, count: 1, kind: 5, body: b"" },
        ];
        let mut body = Vec::new();
        subs.iter().for_each(|s| push_sub(&mut body, s));
        let e = Envelope { state_id: 9, term: 1, lsn: 5, count: 5, kind: KIND_RECORDS, body: &body };
        let bytes = e.encode();
        assert_eq!(decode(&bytes).unwrap().records().unwrap(), subs);
        assert_eq!(e.last_lsn(), 9);
        // Wrong totals, a gap inside, a cut body: refused.
        assert!(Envelope { count: 6, ..e }.records().is_err());
        assert!(Envelope { lsn: 4, ..e }.records().is_err());
        assert!(Envelope { body: &body[..body.len() - 3], ..e }.records().is_err());
        let mut gap = Vec::new();
        push_sub(&mut gap, &subs[0]);
        push_sub(&mut gap, &subs[2]);
        assert!(Envelope { count: 2, body: &gap, ..e }.records().is_err());
    }
}
