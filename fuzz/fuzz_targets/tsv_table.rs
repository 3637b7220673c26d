//! The TSV reader (participants.tsv, sessions.tsv) on arbitrary bytes.
#![no_main]

use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(table) =
        hcld::bids::Table::parse(Path::new("participants.tsv"), data, "participant_id")
    {
        let _ = format!("{table:?}");
    }
});
