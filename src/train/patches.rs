//! Random brain-centred patches of whole-grid images as a [`TrainingSet`], for training a fully
//! convolutional (attention-free) autoencoder on far more, far cheaper steps than whole volumes
//! allow on a CPU (an autoencoder step on the 2 mm grid takes minutes; one on a 32³ patch about a
//! second), with a random intensity augmentation per patch so the network sees more contrasts than
//! the training scans have.
//!
//! Item `i` is a pure function of (seed, i): image `i mod n`, a patch centred on one of its brain
//! voxels (value above [`BRAIN_THRESHOLD`]) and clamped into the grid, and a random gamma. So the
//! stage's data order and checkpoints resume exactly as for whole volumes.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::data::{TrainingError, TrainingSet, step_seed};

/// Intensities above this count as brain when choosing patch centres (preprocessed images are
/// skull-stripped and scaled so that the brain spans [0, 1]).
pub const BRAIN_THRESHOLD: f32 = 0.05;

/// Patches of a set of whole-grid images (see the module docs).
pub struct PatchSet<'a> {
    volumes: &'a dyn TrainingSet,
    grid: [usize; 3],
    patch: [usize; 3],
    len: usize,
    seed: u64,
    /// Gammas are drawn log-uniformly from [1/gamma_range, gamma_range] (1 = no augmentation).
    gamma_range: f64,
    ids: Vec<String>,
    /// Per image, the voxels patches may be centred on.
    centres: Vec<Vec<u32>>,
}

impl std::fmt::Debug for PatchSet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchSet")
            .field("images", &self.volumes.len())
            .field("patch", &self.patch)
            .field("len", &self.len)
            .finish()
    }
}

impl<'a> PatchSet<'a> {
    /// `len` patches of shape `patch` from `volumes` (images on `grid`), augmented with gammas in
    /// [1/`gamma_range`, `gamma_range`]. Fails when an image has the wrong size or no brain, or
    /// the patch does not fit in the grid.
    pub fn new(
        volumes: &'a dyn TrainingSet,
        grid: [usize; 3],
        patch: [usize; 3],
        len: usize,
        seed: u64,
        gamma_range: f64,
    ) -> Result<PatchSet<'a>, TrainingError> {
        if patch.iter().zip(&grid).any(|(p, g)| *p == 0 || p > g) {
            return Err(TrainingError::TooFew(format!(
                "patch {patch:?} does not fit in the grid {grid:?}"
            )));
        }
        if volumes.is_empty() {
            return Err(TrainingError::TooFew(
                "no images to cut patches from".into(),
            ));
        }
        let voxels: usize = grid.iter().product();
        let mut centres = Vec::with_capacity(volumes.len());
        for i in 0..volumes.len() {
            let im = volumes.image(i)?;
            if im.len() != voxels {
                return Err(TrainingError::Data {
                    id: volumes.id(i).into(),
                    message: format!("has {} voxels, the grid {grid:?} {voxels}", im.len()),
                });
            }
            let brain: Vec<u32> = (0..voxels as u32)
                .filter(|&v| im[v as usize] > BRAIN_THRESHOLD)
                .collect();
            if brain.is_empty() {
                return Err(TrainingError::Data {
                    id: volumes.id(i).into(),
                    message: "has no brain voxels to centre patches on".into(),
                });
            }
            centres.push(brain);
        }
        let ids = (0..len)
            .map(|i| format!("{} patch {i}", volumes.id(i % volumes.len())))
            .collect();
        Ok(PatchSet {
            volumes,
            grid,
            patch,
            len,
            seed,
            gamma_range: gamma_range.max(1.0),
            ids,
            centres,
        })
    }

    /// Where item `i` is cut (its lowest corner) and its gamma.
    fn draw(&self, i: usize) -> ([usize; 3], f64) {
        let n = self.volumes.len();
        let mut rng = ChaCha8Rng::seed_from_u64(step_seed(self.seed, 7, i as u64));
        let brain = &self.centres[i % n];
        let c = brain[rng.random_range(0..brain.len())] as usize;
        let [gx, gy, _] = self.grid;
        let centre = [c % gx, (c / gx) % gy, c / (gx * gy)];
        let corner = std::array::from_fn(|a| {
            (centre[a].saturating_sub(self.patch[a] / 2)).min(self.grid[a] - self.patch[a])
        });
        let log_range = self.gamma_range.ln();
        let gamma = (rng.random_range(-1.0..=1.0) * log_range).exp();
        (corner, gamma)
    }
}

impl TrainingSet for PatchSet<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    fn site(&self, i: usize) -> &str {
        self.volumes.site(i % self.volumes.len())
    }

    fn image(&self, i: usize) -> Result<Vec<f32>, TrainingError> {
        let volume = self.volumes.image(i % self.volumes.len())?;
        let (corner, gamma) = self.draw(i);
        let [gx, gy, _] = self.grid;
        let [px, py, pz] = self.patch;
        let mut out = Vec::with_capacity(px * py * pz);
        for z in 0..pz {
            for y in 0..py {
                let row = ((corner[2] + z) * gy + corner[1] + y) * gx + corner[0];
                out.extend(volume[row..row + px].iter().map(|&v| {
                    // Gamma on the positive part: brain contrasts change, zero background stays.
                    if v > 0.0 { v.powf(gamma as f32) } else { v }
                }));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::InMemoryTrainingSet;

    fn set() -> InMemoryTrainingSet {
        // A 10×8×6 grid whose voxel value encodes its position; "brain" only at x ≥ 5.
        let grid = [10usize, 8, 6];
        let image: Vec<f32> = (0..grid.iter().product::<usize>())
            .map(|v| {
                if v % 10 >= 5 {
                    0.1 + v as f32 / 1000.0
                } else {
                    0.0
                }
            })
            .collect();
        InMemoryTrainingSet {
            items: vec![
                ("a".into(), "s1".into(), image.clone()),
                ("b".into(), "s2".into(), image),
            ],
        }
    }

    #[test]
    fn patches_are_cut_around_the_brain_reproducibly() {
        let volumes = set();
        let patches = PatchSet::new(&volumes, [10, 8, 6], [4, 4, 4], 50, 3, 1.0).unwrap();
        assert_eq!(patches.len(), 50);
        assert_eq!(patches.site(3), "s2");
        assert_eq!(patches.id(2), "a patch 2");
        for i in 0..50 {
            let p = patches.image(i).unwrap();
            assert_eq!(p.len(), 64);
            // Centred on a brain voxel (x ≥ 5), the 4-wide patch starts at x ≥ 3: it holds brain.
            assert!(
                p.iter().any(|&v| v > BRAIN_THRESHOLD),
                "patch {i} misses the brain"
            );
            // Contiguous rows of the source: consecutive x differ by 1/1000 inside the brain.
            assert!(
                p.windows(2)
                    .take(3)
                    .all(|w| w[0] == 0.0 || (w[1] - w[0] - 0.001).abs() < 1e-6)
            );
            assert_eq!(p, patches.image(i).unwrap(), "item {i} is not reproducible");
        }
        let other = PatchSet::new(&volumes, [10, 8, 6], [4, 4, 4], 50, 4, 1.0).unwrap();
        assert!((0..50).any(|i| other.image(i).unwrap() != patches.image(i).unwrap()));
    }

    #[test]
    fn gamma_augmentation_changes_contrast_within_its_range_and_keeps_zero() {
        let volumes = set();
        let plain = PatchSet::new(&volumes, [10, 8, 6], [4, 4, 4], 20, 1, 1.0).unwrap();
        let aug = PatchSet::new(&volumes, [10, 8, 6], [4, 4, 4], 20, 1, 1.5).unwrap();
        let mut changed = 0;
        for i in 0..20 {
            let (a, b) = (plain.image(i).unwrap(), aug.image(i).unwrap());
            for (x, y) in a.iter().zip(&b) {
                if *x == 0.0 {
                    assert_eq!(*y, 0.0);
                } else {
                    // x^γ with γ ∈ [1/1.5, 1.5] lies between x^1.5 and x^(1/1.5).
                    assert!(*y >= x.powf(1.5) - 1e-6 && *y <= x.powf(1.0 / 1.5) + 1e-6);
                }
            }
            changed += usize::from(a != b);
        }
        assert!(changed > 15, "{changed} of 20 patches augmented");
    }

    #[test]
    fn patches_that_do_not_fit_or_images_without_brain_are_refused() {
        let volumes = set();
        assert!(PatchSet::new(&volumes, [10, 8, 6], [12, 4, 4], 5, 0, 1.0).is_err());
        let empty = InMemoryTrainingSet {
            items: vec![("z".into(), "s".into(), vec![0.0; 480])],
        };
        let e = PatchSet::new(&empty, [10, 8, 6], [4, 4, 4], 5, 0, 1.0).unwrap_err();
        assert!(e.to_string().contains("no brain"), "{e}");
    }
}
