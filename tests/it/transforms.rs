//! ITK transform files written by hcld load in SimpleITK and map points identically. Needs a Python
//! with SimpleITK in `HCLD_SIMPLEITK_PYTHON`; skipped without it unless `HCLD_REQUIRE_SIMPLEITK=1`
//! (set by `.ci/run`).

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
