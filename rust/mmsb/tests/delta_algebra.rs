//! Property tests for the delta algebra: ⊕ is associative with the empty delta as identity,
//! applying a composition equals applying in sequence, `diff` inverts to `apply`, and the codec
//! round-trips every delta.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

use mmsb::Delta;
use proptest::prelude::*;

const PAGE: usize = 300;

/// Any delta that fits a page of `PAGE` bytes: single writes, multi-run sparse, and dense masks.
fn delta() -> impl Strategy<Value = Delta> {
    let write = (0..PAGE, prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(o, b)| {
        let len = b.len().min(PAGE - o);
        Delta::write(o as u64, &b[..len]).unwrap()
    });
    let sparse = prop::collection::vec((0..PAGE, prop::collection::vec(any::<u8>(), 1..20)), 0..6).prop_map(|runs| {
        let runs: Vec<(u64, Vec<u8>)> = runs
            .into_iter()
            .map(|(o, mut b)| {
                b.truncate(PAGE - o);
                (o as u64, b)
            })
            .collect();
        Delta::sparse(runs.iter().map(|(o, b)| (*o, b.as_slice()))).unwrap()
    });
    let dense = (0..PAGE, prop::collection::vec((any::<u8>(), any::<bool>()), 1..200)).prop_map(|(o, v)| {
        let len = v.len().min(PAGE - o);
        let data: Vec<u8> = v[..len].iter().map(|x| x.0).collect();
        let mask: Vec<u8> = v[..len].iter().map(|x| u8::from(x.1)).collect();
        Delta::dense_bytemask(o as u64, &mask, &data).unwrap()
    });
    prop_oneof![Just(Delta::empty()), write, sparse, dense]
}

fn page() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), PAGE)
}

fn applied(state: &[u8], d: &Delta) -> Vec<u8> {
    let mut s = state.to_vec();
    d.apply(&mut s).unwrap();
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn compose_is_associative(a in delta(), b in delta(), c in delta()) {
        prop_assert_eq!(a.compose(&b).compose(&c), a.compose(&b.compose(&c)));
    }

    #[test]
    fn empty_is_identity(a in delta()) {
        prop_assert_eq!(a.compose(&Delta::empty()), a.clone());
        prop_assert_eq!(Delta::empty().compose(&a), a);
    }

    #[test]
    fn apply_of_compose_is_sequential_apply(s in page(), a in delta(), b in delta()) {
        prop_assert_eq!(applied(&applied(&s, &a), &b), applied(&s, &a.compose(&b)));
    }

    #[test]
    fn diff_then_apply_gives_new(old in page(), new in page(), keep in prop::collection::vec(any::<bool>(), PAGE)) {
        // Mostly-equal buffers exercise run merging; fully random ones the dense path.
        let mixed: Vec<u8> = old.iter().zip(&new).zip(&keep).map(|((o, n), k)| if *k { *o } else { *n }).collect();
        for target in [&new, &mixed] {
            let d = Delta::diff(&old, target).unwrap();
            prop_assert_eq!(&applied(&old, &d), target);
            prop_assert!(d.written_bytes() as usize <= PAGE);
        }
        prop_assert!(Delta::diff(&old, &old).unwrap().is_empty());
    }

    #[test]
    fn codec_round_trips(a in delta()) {
        let mut buf = Vec::new();
        a.encode(&mut buf);
        prop_assert_eq!(buf.len(), a.encoded_len());
        let (back, used) = Delta::decode(&buf).unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(back, a);
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Delta::decode(&bytes);
    }

    #[test]
    fn representation_does_not_change_meaning(a in delta()) {
        // Equality is semantic: the same writes as explicit runs compare equal.
        let runs = a.to_runs();
        let rebuilt = Delta::sparse(runs.iter().map(|(o, b)| (*o, b.as_slice()))).unwrap();
        prop_assert_eq!(rebuilt, a);
    }
}
