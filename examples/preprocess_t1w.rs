//! Benchmark helper: runs hcld's whole T1w preprocessing (registration, bias correction, mask,
//! scaling, model-grid resampling) on each image given, printing one JSON line per image with wall
//! times and the report. `bench/preprocess_memory.sh` runs it under `/usr/bin/time -v`.
//!
//! `cargo run --release --example preprocess_t1w -- [--no-bias-correction] T1w.nii.gz...`

use std::time::Instant;

use anyhow::Result;
use hcld::preprocess::t1w::{T1wOptions, preprocess_t1w};
use hcld::volume::{read_nifti, to_closest_canonical};

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = T1wOptions::default();
    if let Some(i) = args.iter().position(|a| a == "--no-bias-correction") {
        args.remove(i);
        options.bias_correction = false;
    }
    for input in &args {
        let t0 = Instant::now();
        let (v, _) = read_nifti(std::path::Path::new(input))?;
        let v = to_closest_canonical(&v);
        let read = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let out = preprocess_t1w(&v, None, None, &options);
        let seconds = t1.elapsed().as_secs_f64();
        let name = std::path::Path::new(input)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        match out {
            Ok(p) => println!(
                "{}",
                serde_json::json!({"file": name, "read_seconds": read, "seconds": seconds, "report": p.report})
            ),
            Err(e) => println!(
                "{}",
                serde_json::json!({"file": name, "error": e.to_string()})
            ),
        }
    }
    Ok(())
}
