//! Nyúl–Udupa piecewise-linear histogram standardisation: the group level fits a standard scale
//! over every image (`models/nyul.json`); each image is then mapped onto it by its own landmarks.

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::model::baselines::{NyulLandmarks, brain_values};
use crate::volume::read_nifti;

use super::intensity::MapHarmoniser;
use super::{
    GroupContext, Harmoniser, Method, MethodError, MethodSpec, ReferenceUnits, RunContext,
};

/// The Nyúl baseline.
#[derive(Debug)]
pub(super) struct Nyul;

/// Nyúl landmarks read from their file.
#[derive(Debug, Clone)]
struct NyulFile {
    landmarks: NyulLandmarks,
    sha256: String,
    path: PathBuf,
}

/// `--nyul-landmarks`, else the store's.
fn landmarks_path(ctx: &RunContext) -> PathBuf {
    ctx.settings
        .harmonisation
        .nyul_landmarks
        .clone()
        .unwrap_or_else(|| ctx.out.models().nyul_landmarks())
}

fn read_nyul(path: &Path) -> Result<NyulFile, MethodError> {
    let bytes = crate::input::read_regular(path, crate::input::TEXT_LIMIT).map_err(|e| {
        let e = crate::input::reason(&e);
        MethodError::Missing(format!(
                "{}: cannot read Nyúl landmarks ({e}); fit them with the group level and --method nyul, or pass --nyul-landmarks FILE",
                path.display()
            ),
        )
    })?;
    let landmarks: NyulLandmarks = serde_json::from_slice(&bytes).map_err(|e| {
        MethodError::BadData(format!(
            "{}: not a Nyúl landmarks file ({e}); fit it again with the group level",
            path.display()
        ))
    })?;
    landmarks
        .validate()
        .map_err(|e| MethodError::BadData(format!("{}: {e}", path.display())))?;
    Ok(NyulFile {
        landmarks,
        sha256: format!("{:x}", Sha256::digest(&bytes)),
        path: path.to_path_buf(),
    })
}

impl MethodSpec for Nyul {
    fn name(&self) -> &'static str {
        "nyul"
    }

    fn desc(&self) -> &'static str {
        "nyul"
    }

    fn units(&self) -> &'static str {
        "Nyúl standard scale: percentile 1 → 0, percentile 99 → 1 on the fitted standard histogram"
    }

    fn fit_group(&self, ctx: &GroupContext) -> Result<(), MethodError> {
        let bad = |m: String| MethodError::BadData(m);
        let mut brains = Vec::with_capacity(ctx.images.len());
        for i in ctx.images {
            let read = |p: &PathBuf| read_nifti(p).map(|v| v.0).map_err(|e| bad(e.to_string()));
            let (image, mask) = (read(&i.template)?, read(&i.mask)?);
            let m: Vec<bool> = mask.data().iter().map(|&v| v > 0.5).collect();
            brains.push(brain_values(image.data(), &m));
        }
        let landmarks = NyulLandmarks::fit(brains.iter().map(Vec::as_slice))
            .map_err(|e| bad(format!("Nyúl landmarks: {e}")))?;
        let path = landmarks_path(&ctx.run);
        if ctx.run.settings.harmonisation.nyul_landmarks.is_some() {
            tracing::info!(
                "Nyúl landmarks given with --nyul-landmarks ({}); not refitted",
                path.display()
            );
            return Ok(());
        }
        let text = serde_json::to_string_pretty(&json!({
            "Percentiles": landmarks.percentiles,
            "StandardScale": landmarks.standard,
            "Images": landmarks.images,
            "FittedOn": ctx.images.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
            "hcldVersion": crate::VERSION,
        }))
        .unwrap_or_default();
        // Group runs at once fit the same landmarks; the lock lets one remove what a killed run
        // left half-written.
        let _lock = ctx.run.out.lock_named("nyul-landmarks")?;
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            ctx.run
                .out
                .models()
                .remove_temporaries(dir, &name.to_string_lossy());
        }
        ctx.run.out.write_text_if_changed(&path, &(text + "\n"))?;
        tracing::info!(
            "Nyúl standard scale over {} images: {:?} → {}",
            landmarks.images,
            landmarks
                .standard
                .iter()
                .map(|v| (v * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            path.display()
        );
        Ok(())
    }

    fn prepare(&self, ctx: &RunContext) -> Result<Option<Box<dyn Harmoniser>>, MethodError> {
        let file = read_nyul(&landmarks_path(ctx))?;
        let parameters = json!({
            "Landmarks": file.landmarks,
            "LandmarksFile": ctx.out.models().shown_path(&file.path),
            "LandmarksSHA256": file.sha256,
        });
        // Where the file sits is provenance, not content (its digest is in). Removed, not
        // rebuilt, so that fingerprints stay those earlier versions recorded.
        let mut content = parameters.clone();
        if let Some(m) = content.as_object_mut() {
            m.remove("LandmarksFile");
        }
        let landmarks = file.landmarks;
        Ok(Some(Box::new(MapHarmoniser {
            method: Method(&Nyul),
            parameters,
            content_parameters: content,
            description: "standardised with Nyúl–Udupa piecewise-linear histogram landmarks fitted at group level",
            fit: Box::new(move |brain| {
                let m = landmarks.map_for(brain)?;
                Ok((m.clone(), json!({ "Map": m })))
            }),
        })))
    }

    fn reference_units(&self, ctx: &RunContext) -> ReferenceUnits {
        let path = landmarks_path(ctx);
        match read_nyul(&path) {
            Ok(file) => {
                ReferenceUnits::Map(Box::new(move |brain| file.landmarks.map_for(brain).ok()))
            }
            Err(_) => ReferenceUnits::Unavailable(format!("{}: no Nyúl landmarks", path.display())),
        }
    }
}
