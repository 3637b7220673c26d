//! Tensor layout shared by training and inference: images on the model grid, in
//! [`crate::volume::Volume`] memory order (x fastest), as `[b, 1, z, y, x]` tensors and back, and
//! latents as `[b, c, z, y, x]` (the networks are symmetric in the axes, so the order only has to
//! be consistent).

use burn::prelude::*;

/// Images (x fastest, each `shape`) as a `[b, 1, z, y, x]` tensor.
pub fn grid_tensor(images: &[&[f32]], shape: [usize; 3], device: &Device) -> Tensor<5> {
    let n = shape[0] * shape[1] * shape[2];
    let mut data = Vec::with_capacity(n * images.len());
    for im in images {
        assert_eq!(im.len(), n, "image size does not match the grid");
        data.extend_from_slice(im);
    }
    Tensor::from_data(
        TensorData::new(data, [images.len(), 1, shape[2], shape[1], shape[0]]),
        device,
    )
}

/// The inverse of [`grid_tensor`] for any channel count: one `Vec` per batch item.
pub fn tensor_values(t: Tensor<5>) -> Vec<Vec<f32>> {
    let b = t.dims()[0];
    let all: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("f32 data");
    let per = all.len() / b.max(1);
    all.chunks(per.max(1)).map(|c| c.to_vec()).collect()
}

/// Latents `[c, z', y', x']` values (as [`tensor_values`] gives them) back to a tensor.
pub fn latent_tensor(latents: &[&[f32]], shape: [usize; 4], device: &Device) -> Tensor<5> {
    let mut data = Vec::new();
    for l in latents {
        data.extend_from_slice(l);
    }
    Tensor::from_data(
        TensorData::new(
            data,
            [latents.len(), shape[0], shape[3], shape[2], shape[1]],
        ),
        device,
    )
}
