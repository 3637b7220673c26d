//! The sidecar reader (a JSON object or an error naming the file) and the dataset description
//! checks on arbitrary bytes.
#![no_main]

use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = hcld::bids::parse_json_object(Path::new("sub-01_T1w.json"), data);
});
