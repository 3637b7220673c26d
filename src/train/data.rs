//! What training reads: the [`TrainingSet`] interface (images on the model grid, in volume
//! memory order), its in-memory implementation, loading batches, the data order and noise as pure
//! functions of (seed, step), and why training stops ([`TrainingError`]).

use std::path::PathBuf;

use burn::prelude::*;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

use crate::model::storage::{StorageError, sha256_hex};

/// The images a model is trained on.
pub trait TrainingSet: Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A name for messages (e.g. the BIDS file).
    fn id(&self, i: usize) -> &str;
    /// The acquisition site of image `i`.
    fn site(&self, i: usize) -> &str;
    /// Image `i` on the model grid (x fastest), intensities normalised as the pipeline does.
    fn image(&self, i: usize) -> Result<Vec<f32>, TrainingError>;
    /// Brain mask of image `i` on the grid (1 inside), for the gradient-map loss; `None` = no
    /// mask (the whole grid counts).
    fn brain_mask(&self, _i: usize) -> Result<Option<Vec<f32>>, TrainingError> {
        Ok(None)
    }
}

/// A [`TrainingSet`] held in memory: (id, site, image) triples.
#[derive(Debug, Clone, Default)]
pub struct InMemoryTrainingSet {
    /// The images.
    pub items: Vec<(String, String, Vec<f32>)>,
}

impl TrainingSet for InMemoryTrainingSet {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn id(&self, i: usize) -> &str {
        &self.items[i].0
    }
    fn site(&self, i: usize) -> &str {
        &self.items[i].1
    }
    fn image(&self, i: usize) -> Result<Vec<f32>, TrainingError> {
        Ok(self.items[i].2.clone())
    }
}

/// Why training stopped without a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// An image could not be used.
    #[error("{id}: {message}")]
    Data {
        /// The image.
        id: String,
        /// What is wrong with it.
        message: String,
    },
    /// Too few images (or sites) for this stage.
    #[error("cannot train: {0}")]
    TooFew(String),
    /// A checkpoint or curve file that could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A checkpoint or curve file that could not be written (or would have landed outside the
    /// work directory).
    #[error(transparent)]
    Write(#[from] crate::derivatives::DerivativesError),
    /// A checkpoint exists but cannot be resumed.
    #[error(
        "{path}: {message}; delete the folder to start this stage again, or restore the \
         configuration it was made with"
    )]
    Checkpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// Why it cannot be used.
        message: String,
    },
    /// The stop flag was raised; the last checkpoint holds the progress.
    #[error("training interrupted at step {step} of {stage}; run again to resume")]
    Interrupted {
        /// Which stage.
        stage: &'static str,
        /// The forward passes completed and checkpointed.
        step: usize,
    },
}

pub(crate) fn scalar(t: Tensor<1>) -> f64 {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 data")[0]
}

/// The seed of the random numbers of one step of one stage (SplitMix64 finaliser, so nearby
/// steps get unrelated streams).
pub(crate) fn step_seed(seed: u64, stage: u64, step: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stage.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The images of forward pass `step`: epoch `step / steps_per_epoch` visits a seeded permutation
/// in batches (the last one smaller).
pub(crate) fn batch_indices(
    seed: u64,
    stage: u64,
    n: usize,
    batch: usize,
    step: usize,
) -> (usize, Vec<usize>) {
    let per_epoch = n.div_ceil(batch);
    let (epoch, k) = (step / per_epoch, step % per_epoch);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(step_seed(seed, stage + 100, epoch as u64));
    order.shuffle(&mut rng);
    (epoch, order[k * batch..((k + 1) * batch).min(n)].to_vec())
}

pub(crate) fn normal(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

pub(crate) fn load_images(
    set: &dyn TrainingSet,
    indices: &[usize],
    n: usize,
) -> Result<Vec<Vec<f32>>, TrainingError> {
    indices
        .iter()
        .map(|&i| {
            let im = set.image(i)?;
            if im.len() != n {
                return Err(TrainingError::Data {
                    id: set.id(i).into(),
                    message: format!(
                        "has {} voxels but the model grid has {n}; preprocess it onto the grid",
                        im.len()
                    ),
                });
            }
            if im.iter().any(|v| !v.is_finite()) {
                return Err(TrainingError::Data {
                    id: set.id(i).into(),
                    message: "contains NaN or infinite values; re-run preprocessing".into(),
                });
            }
            Ok(im)
        })
        .collect()
}

pub(crate) fn total_steps(
    config_epochs: usize,
    n: usize,
    batch: usize,
    max_steps: Option<usize>,
) -> usize {
    let per_epoch = n.div_ceil(batch);
    match max_steps {
        Some(m) => m,
        None => config_epochs * per_epoch,
    }
}

/// A digest of what the training set is (ids, sites, order), so a checkpoint of another set is
/// not resumed.
pub(crate) fn set_digest(set: &dyn TrainingSet) -> String {
    let mut s = String::new();
    for i in 0..set.len() {
        s.push_str(set.id(i));
        s.push('\t');
        s.push_str(set.site(i));
        s.push('\n');
    }
    sha256_hex(s.as_bytes())
}
