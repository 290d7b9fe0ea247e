//! The committed C header must match what cbindgen generates from the sources.
//! `MMSB_BLESS=1 cargo test -p mmsb-ffi --test header` rewrites it.

use std::path::PathBuf;

#[test]
fn c_header_is_up_to_date() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = crate_dir.join("include/mmsb.h");
    if std::env::var_os("MMSB_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/mmsb.h is stale: run `MMSB_BLESS=1 cargo test -p mmsb-ffi --test header` and commit the result"
    );
}
