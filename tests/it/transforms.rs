//! ITK transform files written by hcld load in SimpleITK and ANTsPy, map points identically, and
//! resample a real registered scan exactly as hcld does. Needs Pythons with SimpleITK
//! (`HCLD_SIMPLEITK_PYTHON`) and antspyx (`HCLD_ANTSPY_PYTHON`); each test is skipped without its
//! Python unless `HCLD_REQUIRE_<TOOL>=1` (set by `.ci/run`).

use hcld::preprocess::itk::WorldAffine;
use nalgebra::Matrix4;

#[test]
fn simpleitk_maps_points_like_hcld() {
    let Some(python) = super::util::optional_python("SIMPLEITK") else {
        return;
    };
    let r = nalgebra::Rotation3::from_euler_angles(0.2, 0.1, -0.25);
    let mut m = Matrix4::identity();
    m.fixed_view_mut::<3, 3>(0, 0).copy_from(
        &(r.matrix() * nalgebra::Matrix3::from_diagonal(&nalgebra::Vector3::new(1.1, 0.9, 1.05))),
    );
    m[(0, 3)] = 12.5;
    m[(1, 3)] = -7.0;
    m[(2, 3)] = 3.25;
    let affine = WorldAffine(m);
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt");
    std::fs::write(&path, affine.to_itk_text()).unwrap();
    let points = [[0.0, 0.0, 0.0], [-40.5, 22.0, 61.0], [70.0, -100.0, -20.0]];
    // SimpleITK works in LPS: flip x and y on the way in and out.
    let mut expected = Vec::new();
    for p in points {
        let y = affine.apply(p);
        expected
            .push(serde_json::json!({"lps": [-p[0], -p[1], p[2]], "want": [-y[0], -y[1], y[2]]}));
    }
    let spec = dir.path().join("points.json");
    std::fs::write(&spec, serde_json::to_string(&expected).unwrap()).unwrap();
    let script = r#"
import json, sys
import SimpleITK as sitk
t = sitk.ReadTransform(sys.argv[1])
for e in json.load(open(sys.argv[2])):
    got = t.TransformPoint(e["lps"])
    assert all(abs(g - w) < 1e-6 for g, w in zip(got, e["want"])), (got, e["want"])
print("SimpleITK agrees")
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SimpleITK disagrees: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Registers a real scan with hcld and writes: the scan, hcld's transform file, the reference grid
/// (the 2 mm template grid) and hcld's own resampling of the scan onto it.
fn registered_scan(dir: &std::path::Path) -> [std::path::PathBuf; 4] {
    use hcld::preprocess::resample::{Grid, Interpolation, resample_mapped};
    use hcld::preprocess::template::{TemplateImage, template_grid};
    use hcld::preprocess::template_registration::{InputKind, register_to_template};
    use hcld::volume::{OutputDtype, XformCode, read_nifti, to_closest_canonical, write_nifti};
    let scan = super::util::data()
        .join("t1w")
        .join("philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm.nii.gz");
    let volume = to_closest_canonical(&read_nifti(&scan).unwrap().0);
    let fit = register_to_template(&volume, InputKind::FullHead, None).unwrap();
    let xfm = dir.join("sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt");
    std::fs::write(&xfm, fit.template_to_t1w.to_itk_text()).unwrap();
    let head = TemplateImage::HeadT1w.load().unwrap();
    let grid = template_grid(&TemplateImage::T1w.load().unwrap(), 2.0);
    assert_eq!(Grid::of(&head), grid);
    let reference = dir.join("reference.nii.gz");
    write_nifti(
        &reference,
        &head,
        OutputDtype::Float32,
        XformCode::Mni152,
        "",
    )
    .unwrap();
    let moved = resample_mapped(
        &volume,
        &grid,
        &fit.template_to_t1w.0,
        Interpolation::Linear,
        0.0,
    )
    .unwrap();
    let hcld = dir.join("hcld.nii.gz");
    write_nifti(&hcld, &moved, OutputDtype::Float32, XformCode::Mni152, "").unwrap();
    [scan, xfm, reference, hcld]
}

fn run_python(python: std::ffi::OsString, script: &str, args: &[std::path::PathBuf]) {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn simpleitk_resamples_with_hclds_transform_like_hcld() {
    let Some(python) = super::util::optional_python("SIMPLEITK") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = registered_scan(dir.path());
    let script = r#"
import sys
import numpy as np
import SimpleITK as sitk
scan, xfm, ref, hcld = sys.argv[1:5]
moving = sitk.ReadImage(scan, sitk.sitkFloat32)
reference = sitk.ReadImage(ref, sitk.sitkFloat32)
out = sitk.Resample(moving, reference, sitk.ReadTransform(xfm), sitk.sitkLinear, 0.0)
a = sitk.GetArrayFromImage(out).ravel()
b = sitk.GetArrayFromImage(sitk.ReadImage(hcld, sitk.sitkFloat32)).ravel()
inside = (a > 0) & (b > 0)
r = np.corrcoef(a[inside], b[inside])[0, 1]
assert inside.sum() > 100000 and r > 0.9999, (inside.sum(), r)
print("SimpleITK resampling agrees, r =", r)
"#;
    run_python(python, script, &files);
}

#[test]
fn antspy_resamples_with_hclds_transform_like_hcld() {
    let Some(python) = super::util::optional_python("ANTSPY") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = registered_scan(dir.path());
    let script = r#"
import sys
import numpy as np
import ants
scan, xfm, ref, hcld = sys.argv[1:5]
out = ants.apply_transforms(fixed=ants.image_read(ref), moving=ants.image_read(scan),
                            transformlist=[xfm], interpolator="linear").numpy().ravel()
b = ants.image_read(hcld).numpy().ravel()
inside = (out > 0) & (b > 0)
r = np.corrcoef(out[inside], b[inside])[0, 1]
assert inside.sum() > 100000 and r > 0.9999, (inside.sum(), r)
# Points: ANTs maps template (fixed) points to T1w points with the file as written (LPS).
import json, pandas as pd
pairs = json.load(open(sys.argv[5]))
pts = pd.DataFrame([p["lps"] for p in pairs], columns=["x", "y", "z"])
got = ants.apply_transforms_to_points(3, pts, [xfm]).to_numpy()
want = np.array([p["want"] for p in pairs])
assert np.abs(got - want).max() < 1e-4, (got, want)
print("ANTsPy resampling agrees, r =", r, "and maps points like hcld")
"#;
    let fit = hcld::preprocess::itk::WorldAffine::from_itk_text(
        &std::fs::read_to_string(&files[1]).unwrap(),
    )
    .unwrap();
    let pairs: Vec<serde_json::Value> =
        [[0.0, 0.0, 0.0], [-40.5, 22.0, 61.0], [60.0, -90.0, -20.0]]
            .iter()
            .map(|p| {
                let y = fit.apply(*p);
                serde_json::json!({"lps": [-p[0], -p[1], p[2]], "want": [-y[0], -y[1], y[2]]})
            })
            .collect();
    let points = dir.path().join("points.json");
    std::fs::write(&points, serde_json::to_string(&pairs).unwrap()).unwrap();
    let mut args = files.to_vec();
    args.push(points);
    run_python(python, script, &args);
}
