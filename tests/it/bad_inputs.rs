//! The bad-input corpus (issue 9): broken images, broken datasets and bad command lines, generated
//! here from the example dataset (no checked-in broken binaries). Every case runs the real binary
//! and must give its documented exit code (`docs/reliability.md`) and one error line that names
//! the file and says what to do; BIDS_DIR must be byte-for-byte unchanged and OUTPUT_DIR must hold
//! no partial file and nothing for the bad input. The image cases then run together in one
//! dataset past validation: each bad subject fails (or warns) on its own line and the good
//! subjects complete.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::util::{
    assert_valid_bids, copy_tree, data, example, files_under, no_temporaries, run, tree_state,
};
use crate::args;

/// Words of a fix: every error line must tell the user what to do.
const FIX_WORDS: [&str; 15] = [
    "run ", "replace", "fetch", "fix", "convert", "check", "pass ", "give ", "use ", "remove",
    "list it", "choose", "add ", "export", "split",
];

/// Whether an error line tells the user what to do: one of [`FIX_WORDS`] as words of the line
/// ("use" in "because" does not count).
fn says_what_to_do(line: &str) -> bool {
    let words: String = line
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let words = format!(" {words} ");
    FIX_WORDS
        .iter()
        .any(|w| words.contains(&format!(" {} ", w.trim())))
}

/// The example subject whose image the NIfTI cases replace.
const BAD_T1W: &str = "sub-02/anat/sub-02_T1w.nii.gz";

/// The uncompressed bytes of a real scan (uint8, 120 × 120 × 90, 2 mm, NIfTI-1).
fn good_nifti() -> Vec<u8> {
    use std::io::Read;
    let gz = std::fs::read(example().join(BAD_T1W)).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    raw
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

fn set_i16(h: &mut [u8], offset: usize, v: i16) {
    h[offset..offset + 2].copy_from_slice(&v.to_le_bytes());
}

fn set_f32(h: &mut [u8], offset: usize, v: f32) {
    h[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
}

/// NIfTI-1 header offsets.
const DIM: usize = 40;
const DATATYPE: usize = 70;
const BITPIX: usize = 72;
const PIXDIM: usize = 76;
const VOX_OFFSET: usize = 108;
const SCL_SLOPE: usize = 112;
const QFORM_CODE: usize = 252;
const SFORM_CODE: usize = 254;
const SROW_X: usize = 280;
const MAGIC: usize = 344;
const DATA: usize = 352;

/// A header edit of the real scan, gzipped.
fn edited(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut raw = good_nifti();
    edit(&mut raw);
    gzip(&raw)
}

/// The real scan with voxels of `mm` (pixdim and sform; qform off).
fn with_voxels(mm: f32) -> Vec<u8> {
    edited(|h| {
        for i in 1..=3 {
            set_f32(h, PIXDIM + 4 * i, mm);
        }
        set_i16(h, QFORM_CODE, 0);
        set_i16(h, SFORM_CODE, 1);
        for r in 0..3 {
            for c in 0..4 {
                let v = match c {
                    3 => -60.0 * mm,
                    _ if c == r => mm,
                    _ => 0.0,
                };
                set_f32(h, SROW_X + 16 * r + 4 * c, v);
            }
        }
    })
}

/// The real scan as float32 with `patch` applied to its voxels.
fn float32_with(patch: impl Fn(usize, f32) -> f32) -> Vec<u8> {
    let raw = good_nifti();
    let mut out = raw[..DATA].to_vec();
    set_i16(&mut out, DATATYPE, 16);
    set_i16(&mut out, BITPIX, 32);
    set_f32(&mut out, SCL_SLOPE, 1.0);
    set_f32(&mut out, SCL_SLOPE + 4, 0.0);
    for (i, &v) in raw[DATA..].iter().enumerate() {
        out.extend_from_slice(&patch(i, f32::from(v)).to_le_bytes());
    }
    gzip(&out)
}

/// What a case writes into a copy of the example dataset, relative to its root.
enum Make {
    /// Replace (or create) a file with these bytes.
    File(&'static str, Vec<u8>),
    /// Remove a file.
    Remove(&'static str),
    /// Replace a file with a symlink to this target.
    Symlink(&'static str, &'static str),
    /// Replace a file with a named pipe (FIFO): opening it would block forever.
    Fifo(&'static str),
    /// Replace a file with a folder of the same name.
    Dir(&'static str),
}

struct Case {
    /// Short name, also used in the batch dataset's subject label.
    name: &'static str,
    make: Vec<Make>,
    /// The file the error must name (relative to the dataset; "" for CLI cases).
    names: &'static str,
    /// Exit code of `hcld BIDS OUT participant --participant-label 02` (validation on).
    code: i32,
    /// Text the error (or warning) line contains.
    needle: &'static str,
    /// In the batch run past validation: does the subject fail (true) or complete (false), and
    /// the text of its failure or warning line. `None`: not an image case.
    batch: Option<(bool, &'static str)>,
}

/// An image the subject's own processing refuses (`code` 1: the subject failed) or accepts
/// (`code` 0), the same with and without validation.
fn image_case(name: &'static str, bytes: Vec<u8>, code: i32, needle: &'static str) -> Case {
    Case {
        name,
        make: vec![Make::File(BAD_T1W, bytes)],
        names: BAD_T1W,
        code,
        needle,
        batch: Some((code != 0, needle)),
    }
}

/// An image the validator already refuses (exit 16, its issue code); past validation the
/// subject fails on its own with `batch_needle`.
fn validated_image_case(
    name: &'static str,
    bytes: Vec<u8>,
    validator_code: &'static str,
    batch_needle: &'static str,
) -> Case {
    Case {
        name,
        make: vec![Make::File(BAD_T1W, bytes)],
        names: BAD_T1W,
        code: 16,
        needle: validator_code,
        batch: Some((true, batch_needle)),
    }
}

/// The real scan with its header fields byte-swapped (a big-endian file), cut in half.
fn truncated_big_endian() -> Vec<u8> {
    let mut b = good_nifti();
    let mut swap = |offset: usize, width: usize, count: usize| {
        for k in 0..count {
            let o = offset + k * width;
            b[o..o + width].reverse();
        }
    };
    swap(0, 4, 1); // sizeof_hdr
    swap(DIM, 2, 8);
    swap(DATATYPE, 2, 2); // datatype, bitpix
    swap(PIXDIM, 4, 8);
    swap(VOX_OFFSET, 4, 3); // vox_offset, scl_slope, scl_inter
    swap(QFORM_CODE, 2, 2);
    swap(256, 4, 6); // quatern_b..qoffset_z
    swap(SROW_X, 4, 12);
    let half = b.len() / 2;
    b.truncate(half);
    b
}

fn image_cases() -> Vec<Case> {
    let good = good_nifti();
    let good_gz = std::fs::read(example().join(BAD_T1W)).unwrap();
    let not_nifti = "NIFTI_HEADER_UNREADABLE";
    vec![
        image_case(
            "truncgz",
            good_gz[..good_gz.len() * 2 / 3].to_vec(),
            1,
            "truncated",
        ),
        image_case("truncraw", gzip(&good[..good.len() - 1000]), 1, "truncated"),
        image_case(
            "magic",
            edited(|h| h[MAGIC..MAGIC + 4].copy_from_slice(b"xyz\0")),
            1,
            "NIfTI",
        ),
        validated_image_case(
            "sizeofhdr",
            edited(|h| h[0..4].copy_from_slice(&0i32.to_le_bytes())),
            not_nifti,
            "not a NIfTI image",
        ),
        image_case(
            "voxoffset",
            edited(|h| set_f32(h, VOX_OFFSET, 1.0e9)),
            1,
            "offset",
        ),
        image_case(
            "negoffset",
            edited(|h| set_f32(h, VOX_OFFSET, -352.0)),
            1,
            "offset",
        ),
        validated_image_case(
            "dimzero",
            edited(|h| set_i16(h, DIM, 0)),
            "T1W_FILE_WITH_TOO_MANY_DIMENSIONS",
            "dim",
        ),
        image_case(
            "xzero",
            edited(|h| set_i16(h, DIM + 2, 0)),
            1,
            "dimension is 0",
        ),
        image_case(
            "huge",
            edited(|h| {
                for k in 1..4 {
                    set_i16(h, DIM + 2 * k, i16::MAX);
                }
            }),
            1,
            "implausible",
        ),
        validated_image_case(
            "fourd",
            std::fs::read(data().join("nifti-variants/4d-int16.nii.gz")).unwrap(),
            "T1W_FILE_WITH_TOO_MANY_DIMENSIONS",
            "4D image",
        ),
        validated_image_case(
            "twod",
            edited(|h| {
                set_i16(h, DIM, 2);
                set_i16(h, DIM + 6, 1);
            }),
            "T1W_FILE_WITH_TOO_MANY_DIMENSIONS",
            "2D",
        ),
        image_case(
            "nanpatch",
            float32_with(|i, v| if i % 97 == 0 { f32::NAN } else { v }),
            0,
            "NaN/Inf voxels set to 0",
        ),
        image_case(
            "infpatch",
            float32_with(|i, v| if i % 89 == 0 { f32::INFINITY } else { v }),
            0,
            "NaN/Inf voxels set to 0",
        ),
        image_case("allnan", float32_with(|_, _| f32::NAN), 1, "blank"),
        image_case("allzero", float32_with(|_, _| 0.0), 1, "blank"),
        image_case(
            "zerovoxel",
            edited(|h| {
                set_i16(h, QFORM_CODE, 1);
                set_i16(h, SFORM_CODE, 0);
                set_f32(h, PIXDIM + 4, 0.0);
            }),
            1,
            "singular",
        ),
        image_case(
            "singular",
            edited(|h| {
                set_i16(h, QFORM_CODE, 0);
                set_i16(h, SFORM_CODE, 1);
                for k in 0..12 {
                    set_f32(h, SROW_X + 4 * k, 0.0);
                }
            }),
            1,
            "singular",
        ),
        image_case(
            "datatype",
            edited(|h| set_i16(h, DATATYPE, 999)),
            1,
            "datatype",
        ),
        image_case(
            "complex",
            edited(|h| {
                set_i16(h, DATATYPE, 32);
                set_i16(h, BITPIX, 64);
            }),
            1,
            "complex",
        ),
        // As nibabel: the datatype decides, a contradicting bitpix is ignored.
        image_case("bitpix", edited(|h| set_i16(h, BITPIX, 16)), 0, "wrote"),
        // As nibabel: a non-finite scl_slope means "no scaling".
        image_case(
            "slope",
            edited(|h| set_f32(h, SCL_SLOPE, f32::INFINITY)),
            0,
            "wrote",
        ),
        image_case("bigendian", gzip(&truncated_big_endian()), 1, "truncated"),
        validated_image_case("empty", Vec::new(), "EMPTY_FILE", "file is empty"),
        validated_image_case(
            "annex",
            b"/annex/objects/MD5E-s1298912--0123456789abcdef0123456789abcdef.nii.gz".to_vec(),
            not_nifti,
            "datalad get",
        ),
        validated_image_case(
            "text",
            b"this is not an image\n".to_vec(),
            not_nifti,
            "not a NIfTI image",
        ),
        validated_image_case(
            "garbage",
            gzip(&[0x5a; 4096]),
            not_nifti,
            "not a NIfTI image",
        ),
        Case {
            name: "dangling",
            make: vec![Make::Symlink(
                BAD_T1W,
                "../../.git/annex/objects/XX/YY/MD5E-s1--00.nii.gz",
            )],
            names: BAD_T1W,
            code: 1,
            needle: "datalad get",
            batch: Some((true, "datalad get")),
        },
        // Headers no head scan has (issue 20): refused per subject before the registration
        // allocates grids that scale with them (1000 mm voxels asked for 648 TB).
        image_case("voxels1000mm", with_voxels(1000.0), 1, "voxel size"),
        image_case("voxels20mm", with_voxels(20.0), 1, "voxel size"),
        image_case("voxels1e20mm", with_voxels(1e20), 1, "voxel size"),
        image_case(
            "twovoxels",
            edited(|h| {
                for i in 1..=3 {
                    set_i16(h, DIM + 2 * i, 2);
                }
                let offset = f32::from_le_bytes(h[VOX_OFFSET..VOX_OFFSET + 4].try_into().unwrap());
                h.truncate(offset as usize + 8);
            }),
            1,
            "field of view",
        ),
        // A qform quaternion with b² + c² + d² > 1, which nibabel refuses (accepted as a 180°
        // turn, before).
        image_case(
            "quaternion",
            edited(|h| {
                set_i16(h, QFORM_CODE, 1);
                set_i16(h, SFORM_CODE, 0);
                for i in 0..3 {
                    set_f32(h, 256 + 4 * i, 0.9);
                }
            }),
            1,
            "not a rotation",
        ),
        image_case(
            "sloverflow",
            edited(|h| set_f32(h, SCL_SLOPE, 1e38)),
            1,
            "infinite",
        ),
        // Not regular files (issue 20): the validator reports them, and past validation the
        // subject fails naming what the path is, instead of reading /dev/zero forever or
        // blocking on the FIFO.
        Case {
            name: "devzero",
            make: vec![Make::Symlink(BAD_T1W, "/dev/zero")],
            names: BAD_T1W,
            code: 16,
            needle: "not a regular file",
            batch: Some((true, "character device")),
        },
        Case {
            name: "fifo",
            make: vec![Make::Fifo(BAD_T1W)],
            names: BAD_T1W,
            code: 16,
            needle: "not a regular file",
            batch: Some((true, "named pipe")),
        },
        Case {
            name: "folder",
            make: vec![Make::Dir(BAD_T1W)],
            names: BAD_T1W,
            code: 16,
            needle: "not a regular file",
            batch: Some((true, "directory")),
        },
    ]
}

fn dataset_cases() -> Vec<Case> {
    let json = |name, rel, bytes: &[u8], code, needle| Case {
        name,
        make: vec![Make::File(rel, bytes.to_vec())],
        names: rel,
        code,
        needle,
        batch: None,
    };
    // 20 MB of valid JSON in a sidecar.
    let mut huge = b"{\"Padding\": \"".to_vec();
    huge.resize(20 << 20, b'x');
    huge.extend_from_slice(b"\"}");
    vec![
        json(
            "badname",
            "sub-02/anat/sub-02_fancy_T1w.nii.gz",
            &std::fs::read(example().join(BAD_T1W)).unwrap(),
            16,
            "",
        ),
        Case {
            name: "nodescription",
            make: vec![Make::Remove("dataset_description.json")],
            names: "dataset_description.json",
            code: 16,
            needle: "",
            batch: None,
        },
        json("descarray", "dataset_description.json", b"[1, 2]", 16, ""),
        json(
            "brokenjson",
            "sub-02/anat/sub-02_T1w.json",
            b"{\"MagneticFieldStrength\": 3,",
            16,
            "",
        ),
        json(
            "jsonarray",
            "sub-02/anat/sub-02_T1w.json",
            b"[3, 1.5]",
            16,
            "",
        ),
        json(
            "hugejson",
            "sub-02/anat/sub-02_T1w.json",
            &huge,
            1,
            "too large",
        ),
        json(
            "participants",
            "participants.tsv",
            b"subject\tsite\nsub-01\tHH\n",
            16,
            "participants.tsv",
        ),
        json(
            "ragged",
            "participants.tsv",
            b"participant_id\tsite\nsub-01\tHH\tEXTRA\nsub-02\tGuys\n",
            16,
            "participants.tsv",
        ),
        Case {
            name: "loop",
            make: vec![Make::Symlink("sub-02/anat/loop", "..")],
            names: "sub-02/anat/loop",
            code: 0,
            needle: "loop",
            batch: None,
        },
        // Special files and links out of the dataset (issue 20).
        Case {
            name: "sidecarfifo",
            make: vec![Make::Fifo("sub-02/anat/sub-02_T1w.json")],
            names: "sub-02/anat/sub-02_T1w.json",
            code: 16,
            needle: "not a regular file",
            batch: None,
        },
        Case {
            name: "descdevzero",
            make: vec![Make::Symlink("dataset_description.json", "/dev/zero")],
            names: "dataset_description.json",
            code: 16,
            needle: "not a regular file",
            batch: None,
        },
        Case {
            name: "participantsdevzero",
            make: vec![Make::Symlink("participants.tsv", "/dev/zero")],
            names: "participants.tsv",
            code: 16,
            needle: "not a regular file",
            batch: None,
        },
        Case {
            name: "linkout",
            make: vec![Make::Symlink("sub-05", "/")],
            names: "sub-05",
            code: 0,
            needle: "outside the dataset",
            batch: None,
        },
    ]
}

/// Applies a case to a fresh copy of the example dataset under `dir`.
fn dataset_for(dir: &Path, make: &[Make], prefix: Option<&str>) -> PathBuf {
    let bids = dir.join("bids");
    if !bids.exists() {
        copy_tree(&example(), &bids);
    }
    for m in make {
        let rel = |r: &str| match prefix {
            Some(label) => r.replace("sub-02", &format!("sub-{label}")),
            None => r.to_string(),
        };
        match m {
            Make::File(r, bytes) => {
                let p = bids.join(rel(r));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, bytes).unwrap();
            }
            Make::Remove(r) => std::fs::remove_file(bids.join(rel(r))).unwrap(),
            Make::Symlink(r, target) => {
                let p = bids.join(rel(r));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let _ = std::fs::remove_file(&p);
                std::os::unix::fs::symlink(target, p).unwrap();
            }
            Make::Fifo(r) => {
                let p = bids.join(rel(r));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let _ = std::fs::remove_file(&p);
                let made = std::process::Command::new("mkfifo")
                    .arg(&p)
                    .status()
                    .unwrap();
                assert!(made.success(), "mkfifo {}", p.display());
            }
            Make::Dir(r) => {
                let p = bids.join(rel(r));
                let _ = std::fs::remove_file(&p);
                std::fs::create_dir_all(&p).unwrap();
            }
        }
    }
    bids
}

/// The line of `stderr` that names `file` and contains `needle` (any line with `file` when
/// `needle` is empty).
fn error_line<'a>(stderr: &'a str, file: &str, needle: &str) -> Option<&'a str> {
    let name = Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    stderr
        .lines()
        .find(|l| l.contains(&name) && l.contains(needle))
}

/// Everything an unattended run must guarantee after any bad input.
fn check_guarantees(
    problems: &mut Vec<String>,
    case: &str,
    bids: &Path,
    before: &BTreeMap<PathBuf, String>,
    out: &Path,
) {
    if tree_state(bids) != *before {
        problems.push(format!("{case}: BIDS_DIR changed"));
    }
    if out.exists() {
        let left: Vec<String> = files_under(out)
            .into_iter()
            .filter(|f| f.contains(".hcldtmp-"))
            .collect();
        if !left.is_empty() {
            problems.push(format!("{case}: partial files left: {left:?}"));
        }
    }
}

fn mode(bits: u32) -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(bits)
}

#[test]
fn every_bad_input_gets_its_exit_code_and_a_message_naming_the_file_and_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let cases: Vec<Case> = image_cases().into_iter().chain(dataset_cases()).collect();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let dir = d.path().join(format!("case{i}"));
        let bids = dataset_for(&dir, &case.make, None);
        let before = tree_state(&bids);
        let out = dir.join("out");
        let (code, stderr) = run(args![bids, out, "participant", "--participant-label", "02"]);
        let label = format!("{} (exit {code})", case.name);
        if code != case.code {
            problems.push(format!(
                "{}: exit {code}, documented {}; stderr:\n{stderr}",
                case.name, case.code
            ));
            continue;
        }
        match error_line(&stderr, case.names, case.needle) {
            None => problems.push(format!(
                "{label}: no line names {} with '{}':\n{stderr}",
                case.names, case.needle
            )),
            Some(line) if code != 0 && !says_what_to_do(line) => {
                problems.push(format!("{label}: the error says no fix: {line}"))
            }
            Some(_) => {}
        }
        check_guarantees(&mut problems, &label, &bids, &before, &out);
        // A failed image writes nothing for that image.
        if code != 0 && out.exists() {
            let written: Vec<String> = files_under(&out)
                .into_iter()
                .filter(|f| f.starts_with("sub-02/") && !f.contains("figures"))
                .collect();
            if !written.is_empty() {
                problems.push(format!("{label}: outputs for the bad image: {written:?}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n---\n")
    );
}

#[test]
fn bad_images_fail_alone_and_the_good_subjects_complete() {
    let d = tempfile::tempdir().unwrap();
    let cases = image_cases();
    // One dataset: the three good example subjects plus one subject per bad image.
    let mut bids = PathBuf::new();
    for (i, case) in cases.iter().enumerate() {
        bids = dataset_for(d.path(), &case.make, Some(&format!("bad{i:02}")));
    }
    let before = tree_state(&bids);
    let out = d.path().join("out");
    let (code, stderr) = run(args![
        bids,
        out,
        "participant",
        "--skip-bids-validation",
        "--nprocs",
        "2"
    ]);
    assert_eq!(code, 1, "{stderr}");
    let mut problems = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let subject = format!("sub-bad{i:02}");
        let file = case.names.replace("sub-02", &subject);
        let failed = stderr
            .lines()
            .find(|l| l.contains(&format!("failed: {subject}")));
        match (case.batch, failed) {
            (Some((true, _)), None) => {
                problems.push(format!("{}: {subject} did not fail", case.name))
            }
            (Some((true, needle)), Some(line)) => {
                if !line.contains(&file) || !line.contains(needle) || !says_what_to_do(line) {
                    problems.push(format!("{}: {line}", case.name));
                }
            }
            (Some((false, _)), Some(line)) => {
                problems.push(format!("{}: failed: {line}", case.name))
            }
            (Some((false, needle)), None) => {
                if error_line(&stderr, &file, needle).is_none() {
                    problems.push(format!(
                        "{}: no line naming {file} with '{needle}'",
                        case.name
                    ));
                }
                let outputs = files_under(&out.join(&subject));
                if !outputs
                    .iter()
                    .any(|f| f.ends_with("desc-preproc_T1w.nii.gz"))
                {
                    problems.push(format!("{}: {subject} incomplete: {outputs:?}", case.name));
                }
            }
            (None, _) => unreachable!(),
        }
    }
    assert!(problems.is_empty(), "{}\n{stderr}", problems.join("\n"));
    // The good subjects are complete, nothing is partial, BIDS_DIR is untouched, and what was
    // written is valid BIDS.
    let all = files_under(&out);
    for image in [
        "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
        "sub-02/anat/sub-02_desc-preproc_T1w.nii.gz",
        "sub-03/ses-1/anat/sub-03_ses-1_desc-preproc_T1w.nii.gz",
        "sub-03/ses-2/anat/sub-03_ses-2_desc-preproc_T1w.nii.gz",
    ] {
        assert!(all.iter().any(|f| f == image), "{image} missing: {all:?}");
    }
    no_temporaries(&out);
    assert_eq!(tree_state(&bids), before);
    assert_valid_bids(&out);
}

#[test]
fn bad_command_lines_and_unwritable_outputs() {
    let d = tempfile::tempdir().unwrap();
    let bids = d.path().join("bids");
    copy_tree(&example(), &bids);
    let before = tree_state(&bids);
    let file = d.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    // A model configuration with a field the networks would panic on (issue 20).
    let zero_chunk = d.path().join("zero-chunk.json");
    let mut config = hcld::model::config::HcldConfig::preset("tiny").unwrap();
    config.autoencoder.attention_query_chunk = 0;
    std::fs::write(&zero_chunk, serde_json::to_string(&config).unwrap()).unwrap();
    // A 4096³ grid without --mem (SIGABRT allocating, before): refused from the memory this
    // process may have (issue 20).
    let huge_grid = d.path().join("huge-grid.json");
    let mut config = hcld::model::config::HcldConfig::preset("tiny").unwrap();
    config.grid.shape = [4096, 4096, 4096];
    std::fs::write(&huge_grid, serde_json::to_string(&config).unwrap()).unwrap();
    // (name, args after BIDS_DIR, exit code, text of the one error line)
    let cases: Vec<(&str, Vec<std::ffi::OsString>, i32, &str)> = vec![
        (
            "unknown label",
            args![
                d.path().join("o1"),
                "participant",
                "--participant-label",
                "99"
            ],
            18,
            "sub-99",
        ),
        (
            "label ../x",
            args![
                d.path().join("o2"),
                "participant",
                "--participant-label",
                "../x"
            ],
            64,
            "../x",
        ),
        (
            "session label with a slash",
            args![d.path().join("o3"), "participant", "--session-label", "1/2"],
            64,
            "1/2",
        ),
        (
            "OUTPUT_DIR inside BIDS_DIR",
            args![bids.join("sub-01").join("hcld-out"), "participant"],
            64,
            "inside",
        ),
        (
            "OUTPUT_DIR under a file",
            args![file.join("out"), "participant"],
            73,
            "a-file",
        ),
        (
            "OUTPUT_DIR where nobody may write",
            args!["/proc/hcld-out", "participant"],
            73,
            "/proc/hcld-out",
        ),
        (
            "work dir inside BIDS_DIR",
            args![d.path().join("o4"), "participant", "-w", bids.join("work")],
            64,
            "work",
        ),
        (
            "unknown level",
            args![d.path().join("o5"), "subject"],
            17,
            "subject",
        ),
        (
            "work dir = OUTPUT_DIR",
            args![
                d.path().join("o-same"),
                "participant",
                "-w",
                d.path().join("o-same")
            ],
            64,
            "-w is OUTPUT_DIR",
        ),
        (
            "attention chunk 0 in --config",
            args![d.path().join("o-config"), "group", "--config", zero_chunk],
            64,
            "attention_query_chunk 0",
        ),
        (
            "--derivatives BIDS_DIR (a raw dataset)",
            args![d.path().join("o-raw"), "participant", "--derivatives", bids],
            16,
            "a raw BIDS dataset",
        ),
        (
            "a 4096^3 grid without --mem",
            args![d.path().join("o-huge"), "group", "--config", huge_grid],
            64,
            "needs about",
        ),
        (
            "config is a device",
            args![d.path().join("o-dev"), "group", "--config", "/dev/zero"],
            64,
            "character device",
        ),
    ];
    let mut problems = Vec::new();
    for (name, rest, want, needle) in cases {
        let mut a = args![bids];
        a.extend(rest);
        let (code, stderr) = run(a);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
        if code != want {
            problems.push(format!("{name}: exit {code}, documented {want}:\n{stderr}"));
        } else if errors.len() != 1 || !errors[0].contains(needle) {
            problems.push(format!(
                "{name}: expected one error line with '{needle}':\n{stderr}"
            ));
        } else if !says_what_to_do(errors[0]) {
            problems.push(format!("{name}: the error says no fix: {}", errors[0]));
        }
    }
    // BIDS_DIR missing.
    let (code, stderr) = run(args![
        d.path().join("nope"),
        d.path().join("o6"),
        "participant"
    ]);
    if code != 66 || !stderr.contains("nope") {
        problems.push(format!("missing BIDS_DIR: exit {code}:\n{stderr}"));
    }
    // An unreadable image: only meaningful for a user the permissions apply to (not root).
    let t1w = bids.join(BAD_T1W);
    std::fs::set_permissions(&t1w, mode(0o000)).unwrap();
    if std::fs::read(&t1w).is_err() {
        let (code, stderr) = run(args![
            bids,
            d.path().join("o7"),
            "participant",
            "--participant-label",
            "02",
            "--skip-bids-validation"
        ]);
        if code != 1 || !stderr.contains("readable") {
            problems.push(format!("unreadable image: exit {code}:\n{stderr}"));
        }
    } else {
        eprintln!("SKIPPED: unreadable-image case (running as root, permissions do not apply)");
    }
    std::fs::set_permissions(&t1w, mode(0o644)).unwrap();
    assert!(problems.is_empty(), "{}", problems.join("\n---\n"));
    assert_eq!(tree_state(&bids), before);
}
