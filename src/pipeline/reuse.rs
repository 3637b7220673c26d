//! Registration-aware reuse: finds, for one input T1w, a brain mask and a T1w → template transform
//! that existing derivatives (`--derivatives`, `BIDS_DIR/derivatives/*`, or BIDS_DIR itself when it
//! is an sMRIPrep/fMRIPrep dataset) already provide, and brings the mask onto the T1w grid.

use std::path::{Path, PathBuf};

use crate::bids::{BidsFile, Entity, Layout, Query, brain_mask_query};
use crate::preprocess::itk::WorldAffine;
use crate::preprocess::mask::{BrainMask, MaskSource};
use crate::preprocess::resample::{Grid, Interpolation, resample_mapped};
use crate::preprocess::t1w::KnownRegistration;
use crate::preprocess::template::SPACE;
use crate::volume::{Volume, VolumeError, read_nifti};

use super::Job;

/// What could be reused for one input.
#[derive(Debug, Default)]
pub struct Reuse {
    /// A brain mask on the T1w grid.
    pub mask: Option<BrainMask>,
    /// A registration.
    pub registration: Option<KnownRegistration>,
}

/// Why something offered for reuse cannot be used. Messages name the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ReuseError {
    /// A file could not be read.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// A transform file is unreadable or not an affine.
    #[error(
        "{path}: {reason}; remove it from --derivatives or replace it with an ITK affine (.txt)"
    )]
    Transform {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A mask does not fit this T1w.
    #[error("{path}: {reason}")]
    Mask {
        /// The mask.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
}

/// Derivative files of the same acquisition as `source`: same subject and session, and every
/// other identifying entity the derivative carries equal to the source's (sMRIPrep drops `run-`
/// and `acq-` when it merges T1w images, so absent entities match).
fn same_acquisition(candidate: &BidsFile, source: &BidsFile) -> bool {
    crate::bids::ANAT_ENTITIES
        .iter()
        .all(|&e| match (candidate.entity(e), source.entity(e)) {
            (Some(c), Some(s)) => c == s,
            (Some(_), None) => false,
            (None, Some(_)) => !matches!(e, Entity::Subject | Entity::Session),
            (None, None) => true,
        })
}

/// The datasets that may hold reusable derivatives: `--derivatives` and `BIDS_DIR/derivatives/*`,
/// and BIDS_DIR itself when it is a derivatives dataset.
fn datasets(layout: &Layout) -> Vec<&Layout> {
    let mut sets: Vec<&Layout> = layout.derivatives().iter().collect();
    if layout.is_derivative() {
        sets.insert(0, layout);
    }
    sets
}

/// Brain masks for `job`: native-space masks (no `space-`, or `space-T1w`) first, then the most
/// specific (sharing the most entities with the source). An input that is itself in a template
/// space only takes masks in that same space.
fn mask_candidates<'a>(layout: &'a Layout, job: &Job) -> Vec<(&'a Layout, &'a BidsFile)> {
    let query = brain_mask_query();
    let input_space = job.source.entity(Entity::Space);
    let mut found: Vec<(&Layout, &BidsFile)> = datasets(layout)
        .into_iter()
        .flat_map(|l| l.get(&query).into_iter().map(move |f| (l, f)))
        .filter(|(_, f)| same_acquisition(f, &job.source) && !f.is_dangling())
        .filter(|(_, f)| input_space.is_none() || f.entity(Entity::Space) == input_space)
        .collect();
    found.sort_by_key(|(_, f)| {
        let native = f.entity(Entity::Space).is_none_or(|s| s == "T1w");
        (!native, std::cmp::Reverse(f.entities().len()))
    });
    found
}

/// Transform files for `job`, found by listing the subject's `anat` folders directly: ITK text
/// transforms are commonly listed in a dataset's `.bidsignore` (BIDS does not name them yet, and
/// hcld's own output does this), which keeps them out of the index but not out of use.
fn transform_candidates(layout: &Layout, job: &Job, query: &Query) -> Vec<(PathBuf, String)> {
    let mut folder = PathBuf::from(format!("sub-{}", job.subject()));
    if let Some(s) = job.source.entity(Entity::Session) {
        folder.push(format!("ses-{s}"));
    }
    folder.push("anat");
    let mut found = Vec::new();
    for l in datasets(layout) {
        let Ok(entries) = std::fs::read_dir(l.root().join(&folder)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for name in names {
            let rel = format!("{}/{name}", folder.display());
            let file = BidsFile::from_rel(rel.clone(), false);
            if query.matches(&file) && same_acquisition(&file, &job.source) {
                found.push((l.root().join(&rel), display_rel(l, &rel)));
            }
        }
    }
    found
}

/// Looks for a transform and a brain mask for `job`; `t1w` is the canonical input image.
pub fn find_reusable(layout: &Layout, job: &Job, t1w: &Volume) -> Result<Reuse, ReuseError> {
    let mut reuse = Reuse::default();
    // Already in template space?
    if let Some(space) = job.source.entity(Entity::Space)
        && space.starts_with("MNI152")
    {
        reuse.registration = Some(KnownRegistration::InTemplateSpace {
            space: space.to_string(),
        });
    }
    let xfm_query = Query::new()
        .datatype("anat")
        .suffix("xfm")
        .entity(Entity::From, &["T1w"])
        .entity(Entity::To, &[SPACE])
        .entity(Entity::Mode, &["image"])
        .extensions(&[".txt"]);
    if reuse.registration.is_none()
        && let Some((path, shown)) = transform_candidates(layout, job, &xfm_query)
            .into_iter()
            .next()
    {
        let text =
            crate::input::read_regular_text(&path, crate::input::TEXT_LIMIT).map_err(|e| {
                ReuseError::Transform {
                    path: path.clone(),
                    reason: crate::input::reason(&e),
                }
            })?;
        let map = WorldAffine::from_itk_text(&text).map_err(|e| ReuseError::Transform {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        reuse.registration = Some(KnownRegistration::Transform {
            template_to_t1w: map,
            file: shown,
        });
    }
    if let Some((l, f)) = mask_candidates(layout, job).into_iter().next() {
        let path = l.path_of(f);
        let (mask, _) = read_nifti(&path)?;
        let space = f.entity(Entity::Space).filter(|s| *s != "T1w");
        let to_t1w = match (space, &reuse.registration) {
            // Native mask: same world (scanner) coordinates, possibly another grid.
            (None, _) => nalgebra::Matrix4::identity(),
            // Input and mask in the same template space.
            (Some(s), _) if job.source.entity(Entity::Space) == Some(s) => {
                nalgebra::Matrix4::identity()
            }
            (
                Some(s),
                Some(KnownRegistration::Transform {
                    template_to_t1w, ..
                }),
            ) if s == SPACE => {
                // T1w point → template point.
                template_to_t1w
                    .inverse()
                    .ok_or_else(|| ReuseError::Mask {
                        path: path.clone(),
                        reason: "the transform to the template is singular".into(),
                    })?
                    .0
            }
            (Some(s), _) => {
                return Err(ReuseError::Mask {
                    path,
                    reason: format!(
                        "this brain mask is in space '{s}' and no from-T1w_to-{s}_mode-image_xfm.txt transform was found to bring it onto the T1w grid; provide the native-space mask (no space- entity) or the transform"
                    ),
                });
            }
        };
        reuse.mask = Some(mask_on_grid(&mask, t1w, &to_t1w, &path, display(l, f))?);
    }
    Ok(reuse)
}

fn display(layout: &Layout, file: &BidsFile) -> String {
    display_rel(layout, file.rel_path())
}

/// `<dataset folder name>/<relative path>`, how sidecars name reused files.
fn display_rel(layout: &Layout, rel: &str) -> String {
    let name = layout
        .root()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new(&name).join(rel).display().to_string()
}

/// Resamples a mask onto the T1w grid (through `t1w_to_mask_world`) and checks that it lies on it:
/// at least 90 % of the mask's volume must land inside the T1w's field of view.
fn mask_on_grid(
    mask: &Volume,
    t1w: &Volume,
    t1w_to_mask_world: &nalgebra::Matrix4<f64>,
    path: &Path,
    file: String,
) -> Result<BrainMask, ReuseError> {
    let err = |reason: String| ReuseError::Mask {
        path: path.to_path_buf(),
        reason,
    };
    let vs = mask.voxel_sizes();
    let original_ml =
        mask.data().iter().filter(|&&v| v > 0.5).count() as f64 * vs[0] * vs[1] * vs[2] / 1000.0;
    if original_ml < 100.0 {
        return Err(err(format!(
            "the brain mask holds only {original_ml:.0} mL; check that it is a brain mask (values 0/1)"
        )));
    }
    let on_grid = resample_mapped(
        mask,
        &Grid::of(t1w),
        t1w_to_mask_world,
        Interpolation::Linear,
        0.0,
    )
    .map_err(|e| err(e.to_string()))?;
    let tv = t1w.voxel_sizes();
    let voxels: Vec<bool> = on_grid.data().iter().map(|&v| v > 0.5).collect();
    let landed = voxels.iter().filter(|&&b| b).count() as f64 * tv[0] * tv[1] * tv[2] / 1000.0;
    if landed < 0.9 * original_ml {
        return Err(err(format!(
            "only {landed:.0} of the mask's {original_ml:.0} mL fall inside this T1w's field of view: the mask belongs to another image or space; give the mask of this T1w (or its transform)"
        )));
    }
    Ok(BrainMask {
        voxels,
        source: MaskSource::Derivatives { file },
    })
}
