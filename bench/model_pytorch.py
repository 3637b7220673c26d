#!/usr/bin/env python3
"""The PyTorch side of bench/model_vs_pytorch.sh: MONAI's AutoencoderKL and DiffusionModelUNet with
the arguments of the HCLD reference code (train_HCLD.py: use_flash_attention=True, which on the CPU
is torch's scaled_dot_product_attention), untrained, on the CPU. Same arguments and JSON line as
examples/model_bench.rs:

    model_pytorch.py --grid reference|cpu --op encode|decode|unet|harmonise|train-ae|train-ldm [--runs N] [--warmup N]

harmonise = 2 encodes + 30 inversion and 10 sampling UNet calls (DDIM, eta 0, over strided steps of
the T=1000 scaled-linear schedule, x0 clipped to ±1) + 1 decode; train-* = one Adam step on one
volume / latent pair with the losses hcld uses.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

GRIDS = {"reference": (192, 192, 64), "cpu": (96, 112, 96)}


def networks():
    ae = AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=(32, 64, 64),
        latent_channels=6,
        num_res_blocks=2,
        norm_num_groups=8,
        attention_levels=(False, False, True),
        use_flash_attention=True,
    )
    unet = DiffusionModelUNet(
        spatial_dims=3,
        in_channels=12,
        out_channels=6,
        num_res_blocks=1,
        channels=(32, 64, 64),
        attention_levels=(False, True, True),
        num_head_channels=(0, 64, 64),
        use_flash_attention=True,
    )
    return ae, unet


def alphas_cumprod():
    betas = torch.linspace(0.0015**0.5, 0.0195**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


def ddim_path(start, end, steps):
    """Positions from start to end (inclusive; -1 is the clean latent), evenly spaced."""
    return [round(start + (end - start) * i / steps) for i in range(steps + 1)]


def ddim_move(unet, x, cond, ab, t_from, t_to, t_model):
    eps = unet(torch.cat([x, cond], 1), timesteps=torch.tensor([t_model]))
    a_from = ab[t_from].item() if t_from >= 0 else 1.0
    a_to = ab[t_to].item() if t_to >= 0 else 1.0
    x0 = ((x - (1 - a_from) ** 0.5 * eps) / a_from**0.5).clamp(-1, 1)
    eps = (x - a_from**0.5 * x0) / (1 - a_from) ** 0.5 if a_from < 1 else eps
    return a_to**0.5 * x0 + (1 - a_to) ** 0.5 * eps


def adain(src, tar, eps=1e-6):
    dims = (2, 3, 4)
    ms, ss = src.mean(dims, keepdim=True), (src.var(dims, keepdim=True, unbiased=False) + eps).sqrt()
    mt, st = tar.mean(dims, keepdim=True), (tar.var(dims, keepdim=True, unbiased=False) + eps).sqrt()
    return (src - ms) / ss * st + mt


def instance_norm(z, eps=1e-6):
    dims = (2, 3, 4)
    return (z - z.mean(dims, keepdim=True)) / (z.var(dims, keepdim=True, unbiased=False) + eps).sqrt()


def gram(z):
    b, c = z.shape[:2]
    f = z.reshape(b, c, -1)
    return f @ f.transpose(1, 2) / z.numel()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--grid", default="cpu", choices=GRIDS)
    p.add_argument("--op", default="encode")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backend", default="pytorch")  # accepted for symmetry with model_bench
    a = p.parse_args()
    torch.manual_seed(0)
    sx, sy, sz = GRIDS[a.grid]
    image_shape = (1, 1, sz, sy, sx)
    latent_shape = (1, 6, sz // 4, sy // 4, sx // 4)
    ab = alphas_cumprod()
    t_k = round(0.6 * 999)
    inversion = ddim_path(-1, t_k, 30)
    sampling = ddim_path(t_k, -1, 10)
    times = []
    for run in range(a.runs + a.warmup):
        ae, unet = networks()
        if a.op in ("encode", "decode", "unet", "harmonise"):
            ae.eval()
            unet.eval()
            x = torch.rand(image_shape)
            z = torch.randn(latent_shape)
            with torch.no_grad():
                t0 = time.perf_counter()
                if a.op == "encode":
                    ae.encode(x)
                elif a.op == "decode":
                    ae.decode(z)
                elif a.op == "unet":
                    unet(torch.cat([z, z], 1), timesteps=torch.tensor([500]))
                else:
                    src = ae.encode(x)[0]
                    tar = ae.encode(x * 0.9)[0]
                    h = adain(src, tar)
                    for f, t in zip(inversion[:-1], inversion[1:]):
                        h = ddim_move(unet, h, tar, ab, f, t, t)
                    for f, t in zip(sampling[:-1], sampling[1:]):
                        h = ddim_move(unet, h, tar, ab, f, t, f)
                    ae.decode(h)
                elapsed = time.perf_counter() - t0
        elif a.op == "train-ae":
            opt = torch.optim.Adam(ae.parameters(), 1e-4)
            x = torch.rand(image_shape)
            t0 = time.perf_counter()
            rec, mu, sigma = ae(x)
            kl = 0.5 * torch.sum(mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1, dim=[1, 2, 3, 4]).mean()
            loss = F.l1_loss(rec, x) + 1e-6 * kl
            loss.backward()
            opt.step()
            elapsed = time.perf_counter() - t0
        elif a.op == "train-ldm":
            opt = torch.optim.Adam(unet.parameters(), 1e-4)
            src = torch.randn(latent_shape)
            tar = torch.randn(latent_shape) * 1.2 + 0.5
            noise = torch.randn(latent_shape)
            s_a, s_b = ab[500].item() ** 0.5, (1 - ab[500].item()) ** 0.5
            t0 = time.perf_counter()
            fused = adain(src, tar)
            noisy = s_a * fused + s_b * noise
            eps = unet(torch.cat([noisy, tar], 1), timesteps=torch.tensor([500]))
            x0 = (noisy - s_b * eps) / s_a
            loss = (
                F.mse_loss(eps, noise)
                + 10 * F.mse_loss(instance_norm(fused), instance_norm(x0))
                + 10 * F.mse_loss(gram(x0.clamp(-1, 1)), gram(tar))
            )
            loss.backward()
            opt.step()
            elapsed = time.perf_counter() - t0
        else:
            raise SystemExit(f"unknown --op {a.op}")
        if run >= a.warmup:
            times.append(elapsed)
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "grid": a.grid,
                "shape": list(GRIDS[a.grid]),
                "op": a.op,
                "runs": a.runs,
                "median_s": round(statistics.median(times), 4),
                "all_s": [round(t, 4) for t in times],
            }
        )
    )


if __name__ == "__main__":
    main()
