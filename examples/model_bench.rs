//! One timing of the HCLD networks for `bench/model_vs_pytorch.sh` (the PyTorch/MONAI side is
//! `bench/model_pytorch.py`, which takes the same arguments): the reference architecture,
//! untrained weights, one operation per process so that the caller's peak-RSS figure belongs to
//! that operation alone. Prints one JSON line: the median of `--runs` after `--warmup` (default 1)
//! uncounted runs.
//!
//! `cargo run --release [--features tch] --example model_bench -- --backend flex|tch
//!  --grid reference|cpu --op encode|decode|unet|harmonise|train-ae|train-ldm [--runs N]
//!  [--warmup N] [--checkpointing on|off]`
//!
//! - harmonise: 2 encodes (source and target), 30 inversion + 10 sampling UNet calls, 1 decode;
//! - train-ae: one Adam step of L1 + 1e-6·KL on one volume (forward, backward, update);
//! - train-ldm: one Adam step of ε-MSE + 10·content + 10·Gram style on one latent pair.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use hcld::model::config::HcldConfig;
use hcld::model::device::{Backend, ComputeDevice, DeviceKind};
use hcld::model::diffusion::translate;
use hcld::model::latent_ops::adain;
use hcld::model::losses;
use hcld::model::sampler::DdimSampler;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .map(|i| args[i + 1].clone())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend: Backend = arg(&args, "--backend", "flex").parse().expect("--backend");
    let grid = arg(&args, "--grid", "cpu");
    let op = arg(&args, "--op", "encode");
    let runs: usize = arg(&args, "--runs", "3").parse().expect("--runs N");
    let warmup: usize = arg(&args, "--warmup", "1").parse().expect("--warmup N");
    // Training as hcld trains: burn's gradient checkpointing (recompute memory-bound ops in the
    // backward pass) unless `--checkpointing off`.
    let checkpointing = arg(&args, "--checkpointing", "on") == "on";
    let autodiff = |d: &Device| {
        let ad = d.clone().autodiff();
        if checkpointing {
            ad.gradient_checkpointing()
        } else {
            ad
        }
    };
    let compute = ComputeDevice::select(Some(backend), DeviceKind::Cpu).expect("backend");
    let device = compute.device.clone();
    let config = HcldConfig::preset(&grid).expect("--grid reference|cpu");
    // Tensors are [b, c, z, y, x].
    let [sx, sy, sz] = config.grid.shape;
    let image_shape = [1, 1, sz, sy, sx];
    let [c, lx, ly, lz] = config.latent_shape();
    let latent_shape = [1, c, lz, ly, lx];
    let sync5 = |t: Tensor<5>| {
        let _ = t.into_data();
    };

    let mut times = Vec::new();
    for run in 0..runs + warmup {
        let elapsed = match op.as_str() {
            "encode" | "decode" | "unet" | "harmonise" => {
                let ae = ComputeDevice::init_seeded(&device, 0, |d| config.autoencoder.init(d));
                let mut unet_config = config.unet.clone();
                unet_config.zero_init_output = false;
                let unet = ComputeDevice::init_seeded(&device, 1, |d| unet_config.init(d));
                let x = Tensor::<5>::random(image_shape, Distribution::Uniform(0.0, 1.0), &device);
                let z = Tensor::<5>::random(latent_shape, Distribution::Normal(0.0, 1.0), &device);
                let sampler =
                    DdimSampler::new(config.schedule.build().unwrap(), config.ddim.clone())
                        .unwrap();
                let t = Instant::now();
                match op.as_str() {
                    "encode" => sync5(ae.encode(x).0),
                    "decode" => sync5(ae.decode(z)),
                    "unet" => sync5(unet.forward(Tensor::cat(vec![z.clone(), z], 1), &[500.0])),
                    _ => {
                        let y = x.clone().mul_scalar(0.9);
                        let src = ae.encode(x).0;
                        let tar = ae.encode(y).0;
                        sync5(ae.decode(translate(&unet, &sampler, src, tar)))
                    }
                }
                t.elapsed().as_secs_f64()
            }
            "train-ae" => {
                let ad = autodiff(&device);
                let ae = ComputeDevice::init_seeded(&ad, 0, |d| config.autoencoder.init(d));
                let mut optim = AdamConfig::new().init();
                let x = Tensor::<5>::random(image_shape, Distribution::Uniform(0.0, 1.0), &ad);
                let noise = Tensor::<5>::random(latent_shape, Distribution::Normal(0.0, 1.0), &ad);
                let t = Instant::now();
                let (mu, log_var) = ae.encode(x.clone());
                let z = mu.clone() + log_var.clone().mul_scalar(0.5).exp() * noise;
                let loss = losses::l1(ae.decode(z), x)
                    + losses::kl_divergence(mu, log_var).mul_scalar(1e-6);
                let grads = GradientsParams::from_grads(loss.backward(), &ae);
                let ae = optim.step(1e-4, ae, grads);
                let _ = ae.num_params();
                device.sync().ok();
                t.elapsed().as_secs_f64()
            }
            "train-ldm" => {
                let ad = autodiff(&device);
                let unet = ComputeDevice::init_seeded(&ad, 1, |d| config.unet.init(d));
                let mut optim = AdamConfig::new().init();
                let src = Tensor::<5>::random(latent_shape, Distribution::Normal(0.0, 1.0), &ad);
                let tar = Tensor::<5>::random(latent_shape, Distribution::Normal(0.5, 1.2), &ad);
                let noise = Tensor::<5>::random(latent_shape, Distribution::Normal(0.0, 1.0), &ad);
                let schedule = config.schedule.build().unwrap();
                let (a, s) = schedule.q_sample_coefficients(500);
                let t = Instant::now();
                let fused = adain(src, tar.clone(), 1e-6);
                let noisy = fused.clone().mul_scalar(a) + noise.clone().mul_scalar(s);
                let eps = unet.forward(Tensor::cat(vec![noisy.clone(), tar.clone()], 1), &[500.0]);
                let x0 = (noisy - eps.clone().mul_scalar(s)).div_scalar(a);
                let loss = losses::mse(eps, noise)
                    + losses::content(fused, x0.clone()).mul_scalar(10.0)
                    + losses::gram_style(x0.clamp(-1.0, 1.0), tar).mul_scalar(10.0);
                let grads = GradientsParams::from_grads(loss.backward(), &unet);
                let unet = optim.step(1e-4, unet, grads);
                let _ = unet.num_params();
                device.sync().ok();
                t.elapsed().as_secs_f64()
            }
            other => panic!("unknown --op {other}"),
        };
        // The first `warmup` runs are not counted.
        if run >= warmup {
            times.push(elapsed);
        }
    }
    println!(
        "{{\"impl\": \"hcld-{backend}\", \"grid\": \"{grid}\", \"shape\": {:?}, \"op\": \"{op}\", \"checkpointing\": {checkpointing}, \"runs\": {runs}, \"median_s\": {:.4}, \"all_s\": {times:?}}}",
        config.grid.shape,
        median(times.clone())
    );
}
