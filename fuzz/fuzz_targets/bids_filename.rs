//! The BIDS filename/entity parser and the label grammar on arbitrary strings.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        let parsed = hcld::bids::parse_filename(name);
        let _ = format!("{parsed:?}");
        let _ = hcld::bids::is_label(name);
    }
});
