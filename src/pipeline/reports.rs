//! Assembles the QC reports from what is on disk: `sub-<L>.html` from a subject's figures and
//! sidecars, and `group.html` from every method's template-space outputs (per-site intensity
//! distributions, a feature-space scatter by site, training curves, the metric table of
//! `../shared/design/evaluation.md` as far as real data allows). Rendering is `report`'s job,
//! the numbers are `metrics`', writing is `derivatives`'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bids::Layout;
use crate::derivatives::DerivativesDataset;
use crate::methods::{Method, MethodProvenance};
use crate::metrics::{
    SiteSample, gradient_correlation, histogram_features, index_labels, pca_2d, site_effect,
};
use crate::model::baselines::brain_values;
use crate::report::FigureError;
use crate::report::html::{Figure, Section, Table, page};
use crate::report::plots::{Panel, Series, density, line_panels, line_plot, scatter_plot};
use crate::settings::Settings;
use crate::volume::read_nifti;

use super::items::GroupItem;
use super::outputs::OutputNames;
use super::outputs::{figure_names, template_paths};
use super::{Job, PipelineError};

fn figure(out: &DerivativesDataset, subject: &str, file: &str, caption: &str) -> Option<Figure> {
    let path = out.figure_path(subject, file).ok()?;
    std::fs::read(path).ok().map(|png| Figure {
        caption: caption.to_string(),
        png,
    })
}

fn sidecar_field<'a>(
    sidecar: &'a Option<serde_json::Map<String, Value>>,
    path: &[&str],
) -> Option<&'a Value> {
    let mut v = sidecar.as_ref()?.get(path[0])?;
    for p in &path[1..] {
        v = v.get(p)?;
    }
    Some(v)
}

/// Writes `sub-<subject>.html` covering `jobs` (that subject's images).
pub fn subject(
    subject: &str,
    jobs: &[&Job],
    settings: &Settings,
    out: &DerivativesDataset,
) -> Result<PathBuf, PipelineError> {
    let mut sections = Vec::new();
    for job in jobs {
        let names = OutputNames::new(job, settings.preprocessing.output_resolution);
        let preproc = out.read_sidecar(&names.native_t1w);
        if preproc.is_none() {
            continue;
        }
        let mut s = Section {
            title: job.source.rel_path().to_string(),
            ..Section::default()
        };
        let report = sidecar_field(
            &preproc,
            &[crate::derivatives::PROVENANCE_KEY, "Preprocessing"],
        );
        if let Some(r) = report {
            let num = |k: &str, digits: usize| {
                r.get(k)
                    .and_then(Value::as_f64)
                    .map(|v| fmt(v, digits))
                    .unwrap_or_else(|| "n/a".into())
            };
            let text = |v: Option<&Value>| match v {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "n/a".into(),
                Some(v) => v.to_string(),
            };
            let warnings: Vec<String> = r
                .get("Warnings")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|w| text(Some(w))).collect())
                .unwrap_or_default();
            s.tables.push(Table {
                header: vec!["preprocessing".into(), "value".into()],
                rows: vec![
                    vec!["input".into(), text(r.get("InputKind"))],
                    vec![
                        "registration".into(),
                        text(r.get("Registration").and_then(|v| v.get("Source"))),
                    ],
                    vec![
                        "brain correlation with the template".into(),
                        num("BrainCorrelation", 3),
                    ],
                    vec![
                        "brain mask".into(),
                        text(r.get("BrainMask").and_then(|v| v.get("Source"))),
                    ],
                    vec!["brain volume (mL)".into(), num("BrainVolumeMl", 0)],
                    vec![
                        "brain-mask Dice with the template".into(),
                        num("BrainMaskDiceWithTemplate", 3),
                    ],
                    vec![
                        "QC warnings".into(),
                        if warnings.is_empty() {
                            "none".into()
                        } else {
                            warnings.join("; ")
                        },
                    ],
                ],
            });
        }
        s.figures.extend(figure(out, job.subject(), &names.registration_figure, "Registration: template brain (red) and white matter (yellow) edges over the registered head"));
        s.figures.extend(figure(
            out,
            job.subject(),
            &names.mask_figure,
            "Brain mask (green) over the native preprocessed T1w",
        ));
        for &method in Method::ALL {
            if method.is_identity() {
                continue;
            }
            let (fig, hist) = figure_names(job, method, settings.preprocessing.output_resolution);
            let provenance = MethodProvenance::read(
                out,
                &names
                    .native_t1w
                    .clone()
                    .with(crate::bids::Entity::Description, method.desc()),
            );
            let desc = method.report_label(provenance.as_ref());
            s.figures.extend(figure(out, job.subject(), &fig, &format!("{desc}: before (top), after (middle), difference after − before, each scaled by its brain 1st–99th percentiles (bottom; red brighter, blue darker); brain mask in green")));
            s.figures.extend(figure(out, job.subject(), &hist, &format!("{desc}: brain intensity densities of this image before and after, and of the target (dashed) under the same method")));
        }
        sections.push(s);
    }
    let html = page(
        &format!("hcld report: sub-{subject}"),
        &format!(
            "{} image(s); BIDS_DIR {}",
            sections.len(),
            settings.paths.bids_dir.display()
        ),
        &sections,
    );
    Ok(out.write_report(&format!("sub-{subject}.html"), &html)?)
}

/// Every ~`SUBSAMPLE`-th brain voxel is kept for distributions (150 000 voxels per 2 mm brain).
const SUBSAMPLE: usize = 5;

struct MethodData {
    method: Method,
    /// Per item with an output: (item index, subsampled brain values, gradient correlation).
    images: Vec<(usize, Vec<f32>, f64)>,
}

fn read_method(
    items: &[GroupItem],
    method: Method,
    settings: &Settings,
    out: &DerivativesDataset,
) -> MethodData {
    let mut images = Vec::new();
    for (k, item) in items.iter().enumerate() {
        let Ok((output, preproc, mask)) = template_paths(
            &item.job,
            method,
            settings.preprocessing.output_resolution,
            out,
        ) else {
            continue;
        };
        let path = output;
        let (Ok((image, _)), Ok((m, _))) = (read_nifti(&path), read_nifti(&mask)) else {
            continue;
        };
        let inside: Vec<bool> = m.data().iter().map(|&v| v > 0.5).collect();
        if inside.len() != image.data().len() {
            continue;
        }
        let grad = if method.is_identity() {
            1.0
        } else {
            match read_nifti(&preproc) {
                Ok((p, _)) if p.data().len() == inside.len() => {
                    gradient_correlation(&p, &image, &inside)
                }
                _ => f64::NAN,
            }
        };
        let values: Vec<f32> = brain_values(image.data(), &inside)
            .into_iter()
            .step_by(SUBSAMPLE)
            .collect();
        images.push((k, values, grad));
    }
    MethodData { method, images }
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".into()
    }
}

/// A figure of the group report that cannot be drawn: an output that cannot be created (73),
/// not a subject's failure.
fn fig_err(e: FigureError) -> PipelineError {
    PipelineError::Report(e.to_string())
}

/// The sites of the group: subjects and images per site, and where each label came from.
fn sites_section(items: &[GroupItem], layout: &Layout, sites: &[String]) -> Section {
    let summary = crate::bids::sites::site_summary(
        items
            .iter()
            .map(|i| (i.job.subject(), i.site.label.as_str())),
    );
    let mut site_table = Table {
        header: vec![
            "site".into(),
            "subjects".into(),
            "images".into(),
            "label from".into(),
        ],
        rows: Vec::new(),
    };
    for s in sites {
        let c = &summary[s];
        let from = items
            .iter()
            .find(|i| &i.site.label == s)
            .map(|i| i.site.source.clone())
            .unwrap_or_default();
        site_table.rows.push(vec![
            s.clone(),
            c.subjects.to_string(),
            c.images.to_string(),
            from,
        ]);
    }
    Section {
        title: "Sites".into(),
        paragraphs: vec![format!(
            "{} images of {} subjects from {} sites in {}.",
            items.len(),
            summary.values().map(|c| c.subjects).sum::<usize>(),
            sites.len(),
            layout.root().display()
        )],
        tables: vec![site_table],
        figures: Vec::new(),
    }
}

/// The table of `--evaluate`.
fn evaluation_section(t: &crate::metrics::MetricTable) -> Section {
    let truth = match (&t.ground_truth, &t.target_site) {
            (Some(g), Some(site)) => format!(
                "Ground truth: {g}; each image from another site is compared with the same subject rendered at target site {site}, preprocessed with the image's own registration and brain mask and put into the method's units."
            ),
            _ => "No traveling-subject ground truth (hcld-simulate writes one): SSIM, PSNR and tissue Dice are n/a.".into(),
        };
    Section {
        title: "Evaluation (group --evaluate)".into(),
        paragraphs: vec![
            truth,
            crate::metrics::table::COLUMNS
                .iter()
                .skip(3)
                .map(|(n, d)| format!("{n}: {d}"))
                .collect::<Vec<_>>()
                .join(" "),
            "Also written to evaluation/metrics.tsv and evaluation/evaluation.json.".into(),
        ],
        tables: vec![Table {
            header: crate::metrics::table::COLUMNS
                .iter()
                .map(|c| c.0.to_string())
                .collect(),
            rows: t.rows.iter().map(|r| r.cells()).collect(),
        }],
        figures: Vec::new(),
    }
}

/// Writes `group.html`.
// One piece: the metrics table and the two figure sets are built in one pass over each
// method's samples, and the page lists its sections in reading order.
pub fn group(
    items: &[GroupItem],
    layout: &Layout,
    settings: &Settings,
    out: &DerivativesDataset,
    evaluation: Option<&crate::metrics::MetricTable>,
) -> Result<PathBuf, PipelineError> {
    let _lock = out.lock_named("group-report")?;
    let site_labels: Vec<&str> = items.iter().map(|i| i.site.label.as_str()).collect();
    let (sites, site_of) = index_labels(&site_labels);
    // A simulation's sources are held out together, as `--evaluate` does; an unreadable ground
    // truth is `--evaluate`'s to report, the report then holds out subjects.
    let truth = super::evaluate::ground_truth(&settings.harmonisation, &settings.paths)
        .ok()
        .flatten();
    let (cv, group_of) = super::evaluate::cv_groups(items, truth.as_ref());
    let mut sections = Vec::new();

    sections.push(sites_section(items, layout, &sites));

    // Methods with outputs.
    let data: Vec<MethodData> = Method::ALL
        .iter()
        .map(|&m| read_method(items, m, settings, out))
        .filter(|d| !d.images.is_empty())
        .collect();
    let mut metric_rows = Vec::new();
    let mut density_figs = Vec::new();
    let mut scatter_figs = Vec::new();
    for d in &data {
        let samples: Vec<SiteSample<'_>> = d
            .images
            .iter()
            .map(|(k, v, _)| SiteSample {
                values: v,
                site: site_of[*k],
                group: group_of[*k],
            })
            .collect();
        // The report's light version of `--evaluate`: the same site figures on the 64-bin
        // histograms alone (no tissue segmentation, which costs ~1 s per image).
        let effect = site_effect(&samples, |v, lo, hi| histogram_features(v, lo, hi, 64));
        let (lo, hi) = effect.range;
        let span = (hi - lo).max(1e-9);
        let w1 = effect.mean_pairwise_w1;
        let accuracy = effect.site_accuracy;
        let features = effect.features;
        let labels: Vec<usize> = samples.iter().map(|s| s.site).collect();
        let grads: Vec<f64> = d
            .images
            .iter()
            .map(|(_, _, g)| *g)
            .filter(|g| g.is_finite())
            .collect();
        let grad = if grads.is_empty() {
            f64::NAN
        } else {
            grads.iter().sum::<f64>() / grads.len() as f64
        };
        metric_rows.push(vec![
            d.method.name().to_string(),
            d.images.len().to_string(),
            accuracy.map(|a| fmt(a, 3)).unwrap_or_else(|| "n/a".into()),
            fmt(1.0 / sites.len().max(1) as f64, 3),
            fmt(w1, 4),
            fmt(grad, 4),
            "needs ground truth (simulated data)".into(),
        ]);
        let margin = span * 0.1;
        let series: Vec<Series> = sites
            .iter()
            .enumerate()
            .filter_map(|(s, label)| {
                let raw: Vec<f32> = samples
                    .iter()
                    .filter(|x| x.site == s)
                    .flat_map(|x| x.values.iter().copied())
                    .collect();
                (!raw.is_empty()).then_some((s, label, raw))
            })
            .map(|(s, label, raw)| Series {
                label: label.clone(),
                colour: Some(s),
                dashed: false,
                points: density(&raw, lo - margin, hi + margin, 100),
            })
            .collect();
        density_figs.push(Figure {
            caption: format!(
                "{}: pooled brain intensities per site ({})",
                d.method,
                d.method.units()
            ),
            png: line_panels(
                &[Panel {
                    title: format!("{} by site", d.method),
                    x_label: "intensity".into(),
                    y_label: "density".into(),
                    series,
                }],
                false,
                (420, 280),
            )
            .map_err(fig_err)?,
        });
        let pcs = pca_2d(&features);
        let groups: Vec<(String, Vec<(f64, f64)>)> = sites
            .iter()
            .enumerate()
            .map(|(s, label)| {
                (
                    label.clone(),
                    pcs.iter()
                        .zip(&labels)
                        .filter(|(_, l)| **l == s)
                        .map(|(p, _)| *p)
                        .collect(),
                )
            })
            .collect();
        scatter_figs.push(Figure {
            caption: format!(
                "{}: each image's 64-bin brain histogram, first two principal components, by site",
                d.method
            ),
            png: scatter_plot(
                &format!("{} feature space", d.method),
                "PC 1",
                "PC 2",
                &groups,
                (380, 300),
            )
            .map_err(fig_err)?,
        });
    }
    sections.push(Section {
        title: "Harmonisation metrics".into(),
        paragraphs: vec![
            format!("Site predictability: leave-one-{}-out accuracy of a shrinkage linear discriminant predicting the site from each image's 64-bin brain histogram (lower is better; chance is 1/number of sites). Histogram distance: mean pairwise Wasserstein-1 distance between the sites' pooled brain intensities, in units of each method's pooled 1st–99th percentile range (lower is better). Anatomy kept: mean correlation of gradient-magnitude maps between the preprocessed and the harmonised image inside the brain (higher is better). SSIM, PSNR and tissue Dice against a traveling-subject target need a reference of the same brain at the target site (group --evaluate).", cv.name()),
            "none = the preprocessed images (the identity baseline).".into(),
        ],
        tables: vec![Table {
            header: vec!["method".into(), "images".into(), "site classifier accuracy".into(), "chance".into(), "mean pairwise W1".into(), "gradient correlation".into(), "SSIM / PSNR / Dice".into()],
            rows: metric_rows,
        }],
        figures: Vec::new(),
    });
    if let Some(t) = evaluation {
        sections.push(evaluation_section(t));
    }
    sections.push(Section {
        title: "Intensity distributions by site".into(),
        paragraphs: vec![
            "Before harmonisation is the 'none' panel; each other panel is one method's outputs."
                .into(),
        ],
        tables: Vec::new(),
        figures: density_figs,
    });
    sections.push(Section {
        title: "Feature space by site".into(),
        paragraphs: vec!["Images that cluster by site carry site information; after good harmonisation the sites overlap.".into()],
        tables: Vec::new(),
        figures: scatter_figs,
    });
    sections.push(training_section(out)?);
    let html = page(
        "hcld group report",
        &format!(
            "{} sites, {} images, methods with outputs: {}",
            sites.len(),
            items.len(),
            data.iter()
                .map(|d| d.method.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &sections,
    );
    let path = out.write_report("group.html", &html)?;
    tracing::info!("group report: {}", path.display());
    Ok(path)
}

/// Training curves and model summaries of every model under `models/`.
fn training_section(out: &DerivativesDataset) -> Result<Section, PipelineError> {
    let mut s = Section {
        title: "HCLD models and training curves".into(),
        ..Section::default()
    };
    let store = out.models();
    let dirs = store.artefacts();
    if dirs.is_empty() {
        s.paragraphs.push(
            "No HCLD model under models/ (train one with the group level and --method hcld)."
                .into(),
        );
    }
    let mut table = Table {
        header: vec![
            "model".into(),
            "config".into(),
            "grid".into(),
            "latent scale".into(),
            "images per site".into(),
            "autoencoder".into(),
            "latent diffusion".into(),
            "trained on".into(),
        ],
        rows: Vec::new(),
    };
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Ok(m) = crate::model::artefact::read_manifest(dir) {
            let stage = |r: &Option<crate::model::artefact::StageReport>| {
                r.as_ref()
                    .map(|r| {
                        format!(
                            "{} steps ({:.1} epochs), loss {:.4} → {:.4}, {:.0} s",
                            r.steps, r.epochs, r.first_loss, r.last_loss, r.seconds
                        )
                    })
                    .unwrap_or_else(|| "n/a".into())
            };
            table.rows.push(vec![
                name.clone(),
                m.config.name.clone(),
                format!(
                    "{:?} at {} mm",
                    m.config.grid.shape, m.config.grid.voxel_size_mm
                ),
                fmt(m.latent_scale, 4),
                m.training
                    .images_per_site
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                stage(&m.training.autoencoder),
                stage(&m.training.diffusion),
                m.training.backend.clone(),
            ]);
        }
        for stage in ["autoencoder", "diffusion"] {
            if let Some(fig) =
                loss_figure(&store.loss_curve(dir, stage), &format!("{name} {stage}"))?
            {
                s.figures.push(fig);
            }
        }
    }
    if !table.rows.is_empty() {
        s.tables.push(table);
    }
    Ok(s)
}

/// A loss curve figure from a `loss.csv` (first column: step; loss columns from the third on).
fn loss_figure(path: &Path, title: &str) -> Result<Option<Figure>, PipelineError> {
    let Ok(mut reader) = csv::Reader::from_path(path) else {
        return Ok(None);
    };
    let header: Vec<String> = reader
        .headers()
        .map(|h| h.iter().map(str::to_string).collect())
        .unwrap_or_default();
    let mut columns: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    for rec in reader.records().flatten() {
        let v: Vec<f64> = rec.iter().map(|x| x.parse().unwrap_or(f64::NAN)).collect();
        for (j, y) in v.iter().enumerate().skip(2) {
            columns.entry(j).or_default().push((v[0], *y));
        }
    }
    if columns.is_empty() {
        return Ok(None);
    }
    let series: Vec<Series> = columns
        .into_iter()
        .filter(|(_, p)| p.iter().any(|q| q.1 > 0.0))
        .enumerate()
        .map(|(i, (j, points))| Series {
            label: header.get(j).cloned().unwrap_or_default(),
            colour: Some(i),
            dashed: false,
            points,
        })
        .collect();
    let png = line_plot(title, "step", "loss (log)", &series, true, (520, 300)).map_err(fig_err)?;
    Ok(Some(Figure {
        caption: format!("{title} loss per step ({})", path.display()),
        png,
    }))
}
