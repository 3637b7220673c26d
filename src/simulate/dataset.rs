//! Writes a [`Simulation`] as a BIDS dataset and reads its ground truth back.
//!
//! Layout (every file written to a hidden temporary name and renamed into place):
//! ```text
//! OUT/dataset_description.json, README, participants.tsv (+ .json: site, source, age, sex)
//! OUT/sub-<L>/anat/sub-<L>_T1w.nii.gz (+ .json)        the subject scanned at its own site
//! OUT/sourcedata/ground-truth/simulation.json          settings, sources, sites, subjects
//! OUT/sourcedata/ground-truth/sites.tsv                one row of parameters per site
//! OUT/sourcedata/ground-truth/sub-<L>/sub-<L>_site-<S>_T1w.nii.gz (+ .json: the parameters)
//! OUT/sourcedata/ground-truth/sub-<L>/sub-<L>_desc-anatomy_T1w.nii.gz, ..._desc-brain_mask.nii.gz
//! ```
//! `sourcedata/` is outside what BIDS validators and hcld index, so the ground truth rides along
//! without being processed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{SimulateError, Simulation, SimulationConfig, SiteParams, SourceInfo, SubjectParams};
use crate::derivatives::{write_atomic, write_atomic_with};
use crate::volume::{OutputDtype, Volume, XformCode, write_nifti};

/// Where the ground truth lives inside a simulated dataset.
pub const GROUND_TRUTH_DIR: &str = "sourcedata/ground-truth";
const MANIFEST: &str = "simulation.json";

/// A subject's row in the manifest: its parameters and what the deformation came out as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectRecord {
    /// The parameters.
    #[serde(flatten)]
    pub params: SubjectParams,
    /// Smallest Jacobian determinant of its deformation (> 0: diffeomorphic).
    pub min_jacobian: f64,
    /// Largest displacement of its deformation (mm).
    pub max_displacement_mm: f64,
}

/// `simulation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// hcld version that wrote it.
    pub hcld_version: String,
    /// Settings.
    pub config: SimulationConfig,
    /// Source brains.
    pub sources: Vec<SourceInfo>,
    /// Sites.
    pub sites: Vec<SiteParams>,
    /// Subjects.
    pub subjects: Vec<SubjectRecord>,
    /// Whether every source appears at every site at least once (at least sources × sites
    /// subjects; see [`super::balanced_site`]; every cell has the same count when the subjects
    /// are a multiple of sources × sites).
    #[serde(default)]
    pub balanced: bool,
}

fn werr(path: &Path, e: impl std::fmt::Display) -> SimulateError {
    SimulateError::Write {
        path: path.display().to_string(),
        reason: format!("{e}; check that the folder is writable and the disk has space"),
    }
}

// Through the crate's one atomic writer (a simulated dataset is not OUTPUT_DIR, so no
// containment check).
fn write_text(path: &Path, text: &str) -> Result<(), SimulateError> {
    write_atomic(path, text.as_bytes()).map_err(|e| werr(path, e))
}

fn write_image(
    path: &Path,
    v: &Volume,
    dtype: OutputDtype,
    what: &str,
) -> Result<(), SimulateError> {
    write_atomic_with(path, |tmp| {
        write_nifti(tmp, v, dtype, XformCode::AlignedAnat, what).map_err(|e| e.to_string())
    })
    .map_err(|e| werr(path, e))
}

/// The ground-truth image of subject `subject` (label) rendered at site `site` (label).
pub fn ground_truth_name(subject: &str, site: &str) -> String {
    format!("sub-{subject}_site-{site}_T1w.nii.gz")
}

/// Writes the whole dataset under `out` (created if missing; an existing non-empty folder must
/// be an earlier simulation, which is overwritten file by file). `progress` is told each subject.
// One piece: the files of one simulated dataset are written in an order (images, tables, the
// ground truth manifest last) that is easiest to check when it reads top to bottom.
pub fn write_dataset(
    sim: &Simulation,
    out: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Manifest, SimulateError> {
    let gt_root = out.join(GROUND_TRUTH_DIR);
    if out.exists() {
        let non_empty = std::fs::read_dir(out)
            .map_err(|e| werr(out, e))?
            .next()
            .is_some();
        if non_empty && !gt_root.join(MANIFEST).exists() {
            return Err(SimulateError::Settings(format!(
                "{} exists and is not an hcld simulation: give a new or empty folder",
                out.display()
            )));
        }
    }
    std::fs::create_dir_all(&gt_root).map_err(|e| werr(&gt_root, e))?;
    let records: Vec<SubjectRecord> = sim
        .subjects
        .par_iter()
        .enumerate()
        .map(|(i, s)| -> Result<SubjectRecord, SimulateError> {
            let (anatomy, deformation) = sim.anatomy(i)?;
            let sub_gt = gt_root.join(format!("sub-{}", s.label));
            let anat = out.join(format!("sub-{}", s.label)).join("anat");
            for d in [&sub_gt, &anat] {
                std::fs::create_dir_all(d).map_err(|e| werr(d, e))?;
            }
            let own_site = sim
                .sites
                .iter()
                .position(|k| k.label == s.site)
                .unwrap_or(0);
            let record = SubjectRecord {
                params: s.clone(),
                min_jacobian: deformation.min_jacobian,
                max_displacement_mm: deformation.max_displacement_mm,
            };
            for (k, site) in sim.sites.iter().enumerate() {
                let image = sim.render(&anatomy, i, k);
                let path = sub_gt.join(ground_truth_name(&s.label, &site.label));
                let params = json!({
                    "Description": format!("sub-{} rendered at simulated site {}", s.label, site.label),
                    "Seed": sim.config.seed,
                    "NoiseSeed": sim.noise_seed(i, k),
                    "Site": site,
                    "Subject": record,
                    "Source": sim.sources[s.source].path,
                });
                write_image(&path, &image, OutputDtype::Float32, "hcld-simulate")?;
                write_text(
                    &path.with_file_name(
                        ground_truth_name(&s.label, &site.label).replace(".nii.gz", ".json"),
                    ),
                    &(serde_json::to_string_pretty(&params).unwrap_or_default() + "\n"),
                )?;
                if k == own_site {
                    let bids = anat.join(format!("sub-{}_T1w.nii.gz", s.label));
                    write_image(&bids, &image, OutputDtype::Float32, "hcld-simulate")?;
                    let sidecar = json!({
                        "Manufacturer": "hcld-simulate",
                        "ManufacturersModelName": format!("simulated site {}", site.label),
                        "InstitutionName": format!("hcld simulated site {}", site.label),
                        "SkullStripped": true,
                    });
                    write_text(
                        &anat.join(format!("sub-{}_T1w.json", s.label)),
                        &(serde_json::to_string_pretty(&sidecar).unwrap_or_default() + "\n"),
                    )?;
                }
            }
            write_image(
                &sub_gt.join(format!("sub-{}_desc-anatomy_T1w.nii.gz", s.label)),
                &anatomy.image,
                OutputDtype::Float32,
                "hcld-simulate anatomy (noise- and site-free)",
            )?;
            let mask = anatomy
                .image
                .with_data(anatomy.mask.iter().map(|&b| b as u8 as f32).collect())
                .expect("same grid");
            write_image(
                &sub_gt.join(format!("sub-{}_desc-brain_mask.nii.gz", s.label)),
                &mask,
                OutputDtype::Uint8,
                "hcld-simulate brain mask",
            )?;
            progress(&s.label);
            Ok(record)
        })
        .collect::<Result<_, _>>()?;
    let manifest = Manifest {
        hcld_version: crate::VERSION.to_string(),
        config: sim.config.clone(),
        sources: sim
            .sources
            .iter()
            .map(|s| SourceInfo {
                path: s.path.clone(),
                tissue: s.tissue,
            })
            .collect(),
        sites: sim.sites.clone(),
        subjects: records,
        balanced: super::design_is_balanced(sim.subjects.len(), sim.sources.len(), sim.sites.len()),
    };
    // Dataset-level files last: a dataset with a manifest is complete.
    let description = json!({
        "Name": format!("hcld simulation: {} subjects x {} sites (seed {})", sim.config.subjects, sim.config.sites, sim.config.seed),
        "BIDSVersion": "1.10.0",
        "DatasetType": "raw",
        "License": "Derived from the source images: their licences apply (IXI images: CC BY-SA 3.0)",
        "GeneratedBy": [{"Name": "hcld-simulate", "Version": crate::VERSION, "CodeURL": crate::CODE_URL}],
    });
    write_text(
        &out.join("dataset_description.json"),
        &(serde_json::to_string_pretty(&description).unwrap_or_default() + "\n"),
    )?;
    let mut tsv = String::from("participant_id\tsite\tsource\tage\tsex\n");
    for s in &sim.subjects {
        tsv += &format!(
            "sub-{}\t{}\t{}\t{}\t{}\n",
            s.label,
            s.site,
            s.source + 1,
            s.age,
            s.sex
        );
    }
    write_text(&out.join("participants.tsv"), &tsv)?;
    let columns = json!({
        "site": {"Description": "Simulated acquisition site (parameters in sourcedata/ground-truth/sites.tsv)"},
        "source": {"Description": "The real scan this subject's anatomy is made from: its 1-based index in the sources of sourcedata/ground-truth/simulation.json. Subjects of one source share anatomy and texture, so the site classifier holds them out together (leave-one-source-out)."},
        "age": {"Description": "Age of the simulated subject", "Units": "year"},
        "sex": {"Description": "Sex (random: the simulation has no sex effect)", "Levels": {"M": "male", "F": "female"}},
    });
    write_text(
        &out.join("participants.json"),
        &(serde_json::to_string_pretty(&columns).unwrap_or_default() + "\n"),
    )?;
    let mut sites = String::from(
        "site\twm_gm_ratio\tcsf_gm_ratio\tgamma\tbias_amplitude\tnoise_fraction\tblur_x\tblur_y\tblur_z\tscale\n",
    );
    for k in &sim.sites {
        sites += &format!(
            "{}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{}\n",
            k.label,
            k.wm_gm_ratio,
            k.csf_gm_ratio,
            k.gamma,
            k.bias_amplitude,
            k.noise_fraction,
            k.blur_voxels[0],
            k.blur_voxels[1],
            k.blur_voxels[2],
            k.scale
        );
    }
    write_text(&gt_root.join("sites.tsv"), &sites)?;
    write_text(
        &out.join("README"),
        &format!(
            "Simulated multi-site T1w dataset with traveling subjects, written by hcld-simulate {}.\n\
             Each subject is scanned at the site in participants.tsv; {}/ holds every subject\n\
             rendered at every site (the ground truth), with the parameters beside each image and\n\
             in simulation.json. Regenerate with the same sources, settings and seed to get the\n\
             same bytes.\n",
            crate::VERSION,
            GROUND_TRUTH_DIR
        ),
    )?;
    write_text(
        &gt_root.join(MANIFEST),
        &(serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n"),
    )?;
    Ok(manifest)
}

/// A simulation's ground truth, read back for evaluation.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    root: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    by_subject: BTreeMap<String, usize>,
}

impl GroundTruth {
    /// The ground truth of a simulated BIDS dataset, if it has one.
    pub fn find(bids_dir: &Path) -> Option<PathBuf> {
        let dir = bids_dir.join(GROUND_TRUTH_DIR);
        dir.join(MANIFEST).is_file().then_some(dir)
    }

    /// Reads `dir/simulation.json`.
    pub fn open(dir: &Path) -> Result<GroundTruth, SimulateError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| SimulateError::Source {
            path: path.display().to_string(),
            reason: format!("{e}; give the ground-truth folder hcld-simulate wrote"),
        })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| SimulateError::Source {
                path: path.display().to_string(),
                reason: format!("not an hcld-simulate manifest: {e}"),
            })?;
        let by_subject = manifest
            .subjects
            .iter()
            .enumerate()
            .map(|(i, s)| (s.params.label.clone(), i))
            .collect();
        Ok(GroundTruth {
            root: dir.to_path_buf(),
            manifest,
            by_subject,
        })
    }

    /// Where the ground truth is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The subject's record, by label (without `sub-`).
    pub fn subject(&self, label: &str) -> Option<&SubjectRecord> {
        self.by_subject
            .get(label)
            .map(|&i| &self.manifest.subjects[i])
    }

    /// The image of subject `label` at site `site`, if both exist.
    pub fn image(&self, label: &str, site: &str) -> Option<PathBuf> {
        self.subject(label)?;
        self.manifest.sites.iter().find(|s| s.label == site)?;
        Some(
            self.root
                .join(format!("sub-{label}"))
                .join(ground_truth_name(label, site)),
        )
    }
}
