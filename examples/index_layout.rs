//! Benchmark helper: index a BIDS dataset with hcld's layout and print timings as one JSON line.
//!
//! `cargo run --release --example index_layout -- BIDS_DIR` (used by `bench/layout_vs_pybids.sh`).

use std::time::Instant;

use hcld::bids::{IndexOptions, Layout, t1w_query};

fn main() {
    let Some(root) = std::env::args_os().nth(1) else {
        eprintln!("usage: index_layout BIDS_DIR");
        std::process::exit(64);
    };
    let t0 = Instant::now();
    let layout = match Layout::index(
        std::path::Path::new(&root),
        &IndexOptions {
            strict: true,
            ..Default::default()
        },
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("index_layout: {e}");
            std::process::exit(65);
        }
    };
    let seconds_index = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let subjects = layout.subjects();
    let sessions = layout.sessions();
    let t1w = layout.get(&t1w_query(&layout));
    let seconds_query = t1.elapsed().as_secs_f64();
    // pybids reads every sidecar while indexing; this is hcld's equivalent work, done lazily:
    // the merged (inherited) metadata of every T1w.
    let t2 = Instant::now();
    let mut with_metadata = 0;
    for f in &t1w {
        if layout.metadata(f).is_ok_and(|m| !m.is_empty()) {
            with_metadata += 1;
        }
    }
    let seconds_metadata = t2.elapsed().as_secs_f64();
    println!(
        "{{\"seconds_index\": {seconds_index}, \"seconds_query\": {seconds_query}, \"n_subjects\": {}, \"n_sessions\": {}, \"n_t1w\": {}, \"n_files\": {}, \"seconds_metadata_t1w\": {seconds_metadata}, \"n_t1w_with_metadata\": {with_metadata}}}",
        subjects.len(),
        sessions.len(),
        t1w.len(),
        layout.files().len()
    );
}
