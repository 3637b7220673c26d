//! Wall time of the HCLD networks on the default burn backend (flex unless built with
//! `--features tch`), reference configuration, untrained weights: one encode, one decode and one
//! UNet call at the given grid (default: the 2 mm model grid 96×112×96). Medians of `--runs`
//! (default 3) after one warm-up. The PyTorch side of the comparison is the HCLD-model issue's
//! benchmark script.
//!
//! `cargo run --release --example model_timing -- [D H W] [--runs N]`

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use hcld::model::autoencoder::AutoencoderConfig;
use hcld::model::unet::UnetConfig;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    let _ = f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let _ = f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let runs = match args.iter().position(|a| a == "--runs") {
        Some(i) => {
            let n = args[i + 1].parse().expect("--runs N");
            args.drain(i..=i + 1);
            n
        }
        None => 3,
    };
    let grid: Vec<usize> = if args.len() == 3 {
        args.iter()
            .map(|a| a.parse().expect("grid sizes"))
            .collect()
    } else {
        vec![96, 112, 96]
    };
    let device = Device::default();
    let ae = AutoencoderConfig::new().init(&device);
    let unet = UnetConfig::new().init(&device);
    let (d, h, w) = (grid[0], grid[1], grid[2]);
    let x = Tensor::<5>::random([1, 1, d, h, w], Distribution::Uniform(0.0, 1.0), &device);
    let sync = |t: Tensor<5>| t.into_data();
    let encode = time(runs, || sync(ae.encode(x.clone()).0));
    let z = ae.encode(x.clone()).0;
    let decode = time(runs, || sync(ae.decode(z.clone())));
    let zz = Tensor::cat(vec![z.clone(), z.clone()], 1);
    let unet_call = time(runs, || sync(unet.forward(zz.clone(), &[500.0])));
    println!(
        "{{\"backend\": \"{device:?}\", \"grid\": [{d}, {h}, {w}], \"latent\": {:?}, \"encode_s\": {encode:.3}, \"decode_s\": {decode:.3}, \"unet_call_s\": {unet_call:.3}, \"harmonisation_estimate_s\": {:.2}}}",
        z.dims(),
        // 2 encodes (source and target), 30 + 10 UNet calls, 1 decode.
        2.0 * encode + 40.0 * unet_call + decode
    );
}
