//! NIfTI reading agrees with nibabel on every real T1w fixture and every generated variant
//! (expected values from `scripts/nibabel_expected.py`), and float32 writes round-trip bit-exactly.

use hcld::volume::{
    OutputDtype, VolumeError, XformCode, axcodes, read_nifti, to_closest_canonical, write_nifti,
};
use serde_json::Value;

use super::util::data;

fn expected() -> Vec<Value> {
    let text = std::fs::read_to_string(data().join("nibabel_expected.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["files"].as_array().unwrap().clone()
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * a.abs().max(b.abs())
}

fn check_affine(what: &str, got: &nalgebra::Matrix4<f64>, want: &Value) {
    for r in 0..4 {
        for c in 0..4 {
            let w = want[r][c].as_f64().unwrap();
            assert!(
                close(got[(r, c)], w, 1e-6, 2e-5),
                "{what}: affine[{r}][{c}] = {} vs nibabel {w}",
                got[(r, c)]
            );
        }
    }
}

fn sum(v: &hcld::volume::Volume) -> f64 {
    v.data().iter().map(|&x| x as f64).sum()
}

fn check_samples(what: &str, vol: &hcld::volume::Volume, samples: &Value) {
    for s in samples.as_array().unwrap() {
        let idx: Vec<usize> = s["index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as usize)
            .collect();
        let want = s["value"].as_f64().unwrap();
        let got = vol.get(idx[0], idx[1], idx[2]) as f64;
        assert!(
            close(got, want, 1e-6, 1e-6),
            "{what}: voxel {idx:?} = {got} vs nibabel {want}"
        );
    }
}

#[test]
fn every_fixture_matches_nibabel() {
    let cases = expected();
    assert!(
        cases.len() >= 30,
        "expected values for the fixtures are missing"
    );
    let mut checked = 0;
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let path = data().join(file);
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let result = read_nifti(&path);
        if shape.len() == 4 && shape[3] > 1 {
            let err = result.expect_err(file);
            assert!(
                matches!(err, VolumeError::NotThreeD { .. }),
                "{file}: {err}"
            );
            assert!(err.to_string().contains("4D image with 2 volumes"), "{err}");
            continue;
        }
        let (vol, header) = result.unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(vol.dims().to_vec(), shape[..3].to_vec(), "{file}: shape");
        assert_eq!(header.shape, shape, "{file}: on-disk shape");
        assert_eq!(
            header.datatype,
            case["header"]["dtype"].as_str().unwrap(),
            "{file}: datatype"
        );
        check_affine(file, vol.affine(), &case["affine"]);
        let want_sum = case["sum_exact"].as_f64().unwrap();
        assert!(
            close(sum(&vol), want_sum, 1e-6, 1e-3),
            "{file}: sum {} vs nibabel {want_sum}",
            sum(&vol)
        );
        check_samples(file, &vol, &case["samples"]);
        let codes: String = axcodes(vol.affine()).iter().collect();
        let want_codes: String = case["axcodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(codes, want_codes, "{file}: axcodes");

        let canonical = to_closest_canonical(&vol);
        let cshape: Vec<usize> = case["canonical"]["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            canonical.dims().to_vec(),
            cshape[..3].to_vec(),
            "{file}: canonical shape"
        );
        check_affine(
            &format!("{file} canonical"),
            canonical.affine(),
            &case["canonical"]["affine"],
        );
        let want_csum = case["canonical"]["sum_exact"].as_f64().unwrap();
        assert!(
            close(sum(&canonical), want_csum, 1e-6, 1e-3),
            "{file}: canonical sum"
        );
        check_samples(
            &format!("{file} canonical"),
            &canonical,
            &case["canonical"]["samples"],
        );
        assert_eq!(axcodes(canonical.affine()), ['R', 'A', 'S']);
        checked += 1;
    }
    assert!(checked >= 28);
}

#[test]
fn float32_round_trips_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "t1w/philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm.nii.gz",
        "t1w/siemens-prismafit3T_iu-xa30_mprage2mm_noprescannorm.nii.gz",
        "nifti-variants/orient-LPS.nii.gz",
    ] {
        let (mut vol, _) = read_nifti(&data().join(file)).unwrap();
        // Make the values non-trivial floats (not integers), including negatives and tiny values.
        for (i, v) in vol.data_mut().iter_mut().enumerate() {
            *v = *v * 0.123_456_79 - (i % 7) as f32 * 1e-7;
        }
        let out = dir.path().join("x.nii.gz");
        write_nifti(
            &out,
            &vol,
            OutputDtype::Float32,
            XformCode::ScannerAnat,
            "test",
        )
        .unwrap();
        let (back, h) = read_nifti(&out).unwrap();
        assert_eq!(h.datatype, "float32");
        assert_eq!((h.qform_code, h.sform_code), (1, 1));
        assert_eq!(back.dims(), vol.dims());
        let same_bits = back
            .data()
            .iter()
            .zip(vol.data())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_bits, "{file}: values changed in the round trip");
        // The sform stores float32: the affine survives to float32 precision.
        for (a, b) in back.affine().iter().zip(vol.affine().iter()) {
            assert!(close(*a, *b, 1e-6, 1e-5), "{file}: affine {a} vs {b}");
        }
    }
}

#[test]
fn integer_outputs_round_and_clamp() {
    let dir = tempfile::tempdir().unwrap();
    let vol = hcld::volume::Volume::new(
        [2, 2, 2],
        nalgebra::Matrix4::identity(),
        vec![-3.0, 0.4, 0.6, 1.0, 254.6, 300.0, 40000.0, -40000.0],
    )
    .unwrap();
    let p = dir.path().join("m.nii.gz");
    write_nifti(&p, &vol, OutputDtype::Uint8, XformCode::Mni152, "mask").unwrap();
    let (back, h) = read_nifti(&p).unwrap();
    assert_eq!((h.datatype, h.sform_code), ("uint8", 4));
    assert_eq!(back.data(), &[0.0, 0.0, 1.0, 1.0, 255.0, 255.0, 255.0, 0.0]);
    write_nifti(&p, &vol, OutputDtype::Int16, XformCode::Mni152, "seg").unwrap();
    let (back, _) = read_nifti(&p).unwrap();
    assert_eq!(
        back.data(),
        &[-3.0, 0.0, 1.0, 1.0, 255.0, 300.0, 32767.0, -32768.0]
    );
}

#[test]
fn broken_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        std::fs::read(data().join("t1w/philips-intera3T_ixi-hh_IXI132-HH-1415_t1w2mm.nii.gz"))
            .unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.nii.gz", vec![], "empty (0 bytes)"),
        (
            "truncated.nii.gz",
            good[..good.len() / 2].to_vec(),
            "truncated",
        ),
        ("header-only.nii.gz", good[..200].to_vec(), "truncated"),
        (
            "text.nii",
            b"hello, this is not an image at all".to_vec(),
            "not a NIfTI image",
        ),
        (
            "annex.nii.gz",
            b"/annex/objects/SHA256E-s123--abc.nii.gz\n".to_vec(),
            "datalad get",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = read_nifti(&p).expect_err(name).to_string();
        assert!(e.contains(want) && e.contains(name), "{name}: {e}");
    }
    let link = dir.path().join("dangling.nii.gz");
    std::os::unix::fs::symlink(dir.path().join(".git/annex/objects/xx"), &link).unwrap();
    let e = read_nifti(&link).unwrap_err().to_string();
    assert!(
        e.contains("annexed content not present") && e.contains("datalad get"),
        "{e}"
    );
}

/// nibabel reads hcld's outputs with the same affine (from both qform and sform), codes, dtype and
/// values. Needs a Python with nibabel in `HCLD_NIBABEL_PYTHON`; skipped without it unless
/// `HCLD_REQUIRE_NIBABEL=1` (set by `.ci/run`).
#[test]
fn written_files_read_back_identically_in_nibabel() {
    let Some(python) = super::util::optional_python("NIBABEL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for (i, (file, dtype, code, sform_code)) in [
        (
            "t1w/philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm.nii.gz",
            OutputDtype::Float32,
            XformCode::ScannerAnat,
            1,
        ),
        (
            "nifti-variants/orient-ASL.nii.gz",
            OutputDtype::Uint8,
            XformCode::Mni152,
            4,
        ),
        (
            "nifti-variants/qform-only-qfac-neg.nii.gz",
            OutputDtype::Int16,
            XformCode::AlignedAnat,
            2,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (vol, _) = read_nifti(&data().join(file)).unwrap();
        let vol = to_closest_canonical(&vol);
        let out = dir.path().join(format!("out{i}.nii.gz"));
        write_nifti(&out, &vol, dtype, code, "nibabel check").unwrap();
        let (back, _) = read_nifti(&out).unwrap();
        let affine: Vec<Vec<f64>> = (0..4)
            .map(|r| (0..4).map(|c| vol.affine()[(r, c)]).collect())
            .collect();
        expected.push(serde_json::json!({
            "path": out,
            "affine": affine,
            "code": sform_code,
            "dtype": match dtype { OutputDtype::Float32 => "float32", OutputDtype::Uint8 => "uint8", OutputDtype::Int16 => "int16" },
            "sum": sum(&back),
            "shape": vol.dims(),
        }));
    }
    let spec = dir.path().join("expected.json");
    std::fs::write(&spec, serde_json::to_string(&expected).unwrap()).unwrap();
    let script = r#"
import json, sys
import nibabel as nib, numpy as np
for e in json.load(open(sys.argv[1])):
    img = nib.load(e["path"])
    want = np.array(e["affine"])
    assert list(img.shape) == e["shape"], (e["path"], img.shape)
    assert str(img.get_data_dtype()) == e["dtype"], img.get_data_dtype()
    assert int(img.header["sform_code"]) == e["code"] and int(img.header["qform_code"]) == e["code"]
    for name, aff in [("affine", img.affine), ("sform", img.get_sform()), ("qform", img.get_qform())]:
        assert np.allclose(aff, want, atol=1e-4), (e["path"], name, aff, want)
    s = float(np.sum(img.get_fdata(dtype=np.float64)))
    assert abs(s - e["sum"]) <= 1e-6 * max(1.0, abs(s)), (s, e["sum"])
print("nibabel agrees on", len(json.load(open(sys.argv[1]))), "files")
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nibabel disagrees: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A NIfTI-2 header (540 bytes, little-endian) with the given dims, uint8, no transform codes.
fn nifti2_header(dims: [i64; 3]) -> Vec<u8> {
    let mut h = vec![0u8; 544];
    h[0..4].copy_from_slice(&540i32.to_le_bytes());
    h[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    h[12..14].copy_from_slice(&2i16.to_le_bytes()); // uint8
    h[14..16].copy_from_slice(&8i16.to_le_bytes());
    h[16..24].copy_from_slice(&3i64.to_le_bytes());
    for (i, d) in dims.iter().enumerate() {
        h[24 + 8 * i..32 + 8 * i].copy_from_slice(&d.to_le_bytes());
    }
    for i in 0..4 {
        h[104 + 8 * i..112 + 8 * i].copy_from_slice(&1f64.to_le_bytes());
    }
    h[168..176].copy_from_slice(&544i64.to_le_bytes());
    h
}

#[test]
fn hostile_headers_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // Dims whose product wraps to 0 in 64 bits.
    let p = dir.path().join("wrap.nii");
    std::fs::write(&p, nifti2_header([1 << 32, 1 << 32, 1])).unwrap();
    let e = read_nifti(&p).unwrap_err().to_string();
    assert!(e.contains("wrap.nii") && e.contains("implausible"), "{e}");
    // A small gzip whose header promises 2^30 voxels.
    let p = dir.path().join("huge.nii.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &nifti2_header([1024, 1024, 1024])).unwrap();
    std::fs::write(&p, enc.finish().unwrap()).unwrap();
    let e = read_nifti(&p).unwrap_err().to_string();
    assert!(e.contains("implausible"), "{e}");
    // A sane NIfTI-2 header with too little data is a truncation.
    let p = dir.path().join("short.nii");
    let mut bytes = nifti2_header([4, 4, 4]);
    bytes.extend([7u8; 10]);
    std::fs::write(&p, bytes).unwrap();
    let e = read_nifti(&p).unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("64 bytes"), "{e}");
    // And with all of its data, it reads (pixdim affine, LAS like nibabel).
    let p = dir.path().join("ok.nii");
    let mut bytes = nifti2_header([4, 4, 4]);
    bytes.extend((0..64).map(|v| v as u8));
    std::fs::write(&p, bytes).unwrap();
    let (v, h) = read_nifti(&p).unwrap();
    assert_eq!((h.nifti_version, v.dims()), (2, [4, 4, 4]));
    assert_eq!(axcodes(v.affine()), ['L', 'A', 'S']);
    assert_eq!(v.get(1, 2, 3), (1 + 4 * 2 + 16 * 3) as f32);
}
