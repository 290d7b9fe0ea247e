//! Arbitrary call sequences through the C ABI (ids, offsets, lengths, masks, encodings): every
//! call returns a status code, none crashes, and the state always matches a reference model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmsb_ffi::delta::*;
use mmsb_ffi::page::*;
use mmsb_ffi::state::*;
use mmsb_ffi::MMSB_OK;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (h, t) = self.0.split_first().map_or((0, &[][..]), |(h, t)| (*h, t));
        self.0 = t;
        h
    }
    fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for _ in 0..8 {
            v = v << 8 | u64::from(self.u8());
        }
        v
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        h.to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mut st: *mut MmsbState = std::ptr::null_mut();
    // SAFETY: valid out-pointer; NULL config means defaults.
    assert_eq!(unsafe { mmsb_state_open(std::ptr::null(), &mut st) }, MMSB_OK);
    let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
    while !inp.0.is_empty() {
        let op = inp.u8() % 6;
        // Small ids/offsets most of the time, wild ones sometimes.
        let wild = inp.u8() < 16;
        let pick = |inp: &mut Input, n: usize| if wild { inp.u64() } else { inp.u8() as u64 % (n as u64 + 2) };
        match op {
            0 => {
                let size = if wild { inp.u64() } else { inp.u8() as u64 * 4 };
                let mut id = 0u64;
                // SAFETY: st is live; name NULL with length 0; out valid.
                let s = unsafe { mmsb_page_create(st, size, 0, std::ptr::null(), 0, &mut id) };
                if s == MMSB_OK && size > 1 << 16 {
                    // Huge pages only test allocation; modelling them would exhaust the fuzzer.
                    // SAFETY: st live; id just created.
                    assert_eq!(unsafe { mmsb_page_free(st, id) }, MMSB_OK);
                } else if s == MMSB_OK {
                    model.push((id, vec![0; size as usize]));
                }
            }
            1 | 2 => {
                let idx = pick(&mut inp, model.len());
                let id = model.get(idx as usize).map_or(idx, |m| m.0);
                let offset = pick(&mut inp, 1024);
                let len = inp.u8() as usize;
                let bytes = inp.bytes(len);
                let mut lsn = 0;
                // SAFETY: bytes valid for its length; st live.
                let s = unsafe {
                    if op == 1 {
                        mmsb_page_write(st, id, offset, bytes.as_ptr(), bytes.len(), u64::MAX, &mut lsn)
                    } else {
                        mmsb_page_update(st, id, offset, bytes.as_ptr(), bytes.len(), u64::MAX, &mut lsn)
                    }
                };
                if let Some(m) = model.iter_mut().find(|m| m.0 == id) {
                    let end = offset.checked_add(bytes.len() as u64);
                    let fits = end.is_some_and(|e| e <= m.1.len() as u64);
                    assert_eq!(s == MMSB_OK, fits, "status {s} for a write that fits={fits}");
                    if fits {
                        m.1[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
                    }
                } else {
                    assert_ne!(s, MMSB_OK);
                }
            }
            3 => {
                let n = inp.u8() as usize % 64;
                let enc = inp.bytes(n);
                let mut d: *mut MmsbDelta = std::ptr::null_mut();
                // SAFETY: enc valid; out valid.
                if unsafe { mmsb_delta_decode(enc.as_ptr(), enc.len(), &mut d) } == MMSB_OK {
                    let idx = pick(&mut inp, model.len());
                    if let Some(m) = model.get_mut(idx as usize) {
                        // SAFETY: st and d live.
                        let s = unsafe { mmsb_route_delta(st, m.0, d, u64::MAX, std::ptr::null_mut()) };
                        let (delta, _) = mmsb::Delta::decode(&enc).expect("decoded above");
                        assert_eq!(s == MMSB_OK, delta.apply(&mut m.1).is_ok());
                    }
                    // SAFETY: d came from mmsb_delta_decode.
                    unsafe { mmsb_delta_free(d) };
                }
            }
            4 => {
                let mask_len = inp.u8() as usize % 8;
                let mask = inp.bytes(mask_len);
                let len = inp.u8() as usize % 64;
                let data = inp.bytes(len);
                let idx = pick(&mut inp, model.len());
                let id = model.get(idx as usize).map_or(idx, |m| m.0);
                // SAFETY: buffers valid for their lengths.
                let s = unsafe {
                    mmsb_page_write_masked(
                        st,
                        id,
                        0,
                        mask.as_ptr(),
                        mask.len(),
                        data.as_ptr(),
                        data.len(),
                        u64::MAX,
                        std::ptr::null_mut(),
                    )
                };
                if s == MMSB_OK {
                    let m = model.iter_mut().find(|m| m.0 == id).expect("write succeeded on a known page");
                    mmsb::Delta::dense(0, &mask, &data).expect("accepted").apply(&mut m.1).expect("fits");
                }
            }
            _ => {
                if let Some((id, bytes)) = model.first() {
                    let mut out = vec![0u8; bytes.len()];
                    // SAFETY: out valid for its length.
                    let s = unsafe { mmsb_page_read(st, *id, 0, out.as_mut_ptr(), out.len()) };
                    assert_eq!(s, MMSB_OK);
                    assert_eq!(&out, bytes);
                }
            }
        }
    }
    // SAFETY: st from mmsb_state_open, freed once (the second free is detected and ignored).
    unsafe {
        mmsb_state_free(st);
        mmsb_state_free(st);
    }
});
