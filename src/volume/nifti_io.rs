//! NIfTI-1/NIfTI-2 reading and NIfTI-1 writing.
//!
//! NIfTI-1 headers are parsed and images written with the `nifti` crate. Three things are done
//! here by hand, each because the crate does not do it in a way user data can rely on:
//! - NIfTI-2 headers (540 bytes): nifti-rs 0.18 reads only NIfTI-1.
//! - The affine: the crate's `qform_affine` panics on negative pixdims or a bad `qfac`, and its
//!   fallback differs from nibabel's. We follow the standard's order (sform if `sform_code > 0`, else
//!   qform if `qform_code > 0`, else pixdim scaling) with nibabel's numerics, so results match what
//!   users see in nibabel, FSL and ANTs, and no header can panic the program.
//! - Voxel conversion: values are scaled in `f64` as `raw * scl_slope + scl_inter` (nibabel's
//!   `get_fdata`), with nibabel's rule that a zero or non-finite slope means "no scaling".
//!
//! Every read checks sizes before allocating, so a hostile or truncated header yields an error,
//! never an abort.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use nalgebra::Matrix4;
use nifti::writer::WriterOptions;
use nifti::{NiftiHeader, NiftiType, XForm};
use serde::Serialize;

use super::nifti_header::{RawType, check_dims, convert, data_offset, parse_header, scaling};
use super::{Volume, VolumeError};

/// Largest dimension NIfTI-1 can store (dims are signed 16-bit).
const MAX_NIFTI1_DIM: usize = i16::MAX as usize;

/// Header facts kept after reading, for provenance and sanity checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HeaderSummary {
    /// 1 for NIfTI-1, 2 for NIfTI-2.
    #[serde(rename = "NIfTIVersion")]
    pub nifti_version: u8,
    /// On-disk datatype name (`uint8`, `int16`, `float32`, ...).
    pub datatype: &'static str,
    /// True when the file is big-endian.
    pub big_endian: bool,
    /// The on-disk shape (3 entries, or 4 for a `x × y × z × 1` file).
    pub shape: Vec<usize>,
    /// `scl_slope` and `scl_inter` when they scale the data, `None` when unscaled.
    pub scaling: Option<(f64, f64)>,
    /// `qform_code` as stored.
    pub qform_code: i32,
    /// `sform_code` as stored.
    pub sform_code: i32,
    /// Which transform the affine came from: `sform`, `qform` or `pixdim`.
    pub affine_source: &'static str,
    /// Byte offset of the voxel data (> header size when extensions are present).
    pub vox_offset: u64,
}

impl HeaderSummary {
    /// The NIfTI transform code of the transform the affine came from (what to write back).
    pub fn xform_code(&self) -> XformCode {
        let code = match self.affine_source {
            "sform" => self.sform_code,
            "qform" => self.qform_code,
            _ => 0,
        };
        XformCode::from_code(code)
    }
}

/// The NIfTI `qform_code`/`sform_code` meaning of an affine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum XformCode {
    /// Arbitrary coordinates.
    Unknown,
    /// Scanner-based anatomical coordinates (native space).
    ScannerAnat,
    /// Aligned to another image.
    AlignedAnat,
    /// Talairach space.
    Talairach,
    /// MNI152 space (our template space).
    Mni152,
    /// Another template space.
    TemplateOther,
}

impl XformCode {
    fn from_code(code: i32) -> Self {
        match code {
            1 => XformCode::ScannerAnat,
            2 => XformCode::AlignedAnat,
            3 => XformCode::Talairach,
            4 => XformCode::Mni152,
            5 => XformCode::TemplateOther,
            _ => XformCode::Unknown,
        }
    }

    fn to_nifti(self) -> XForm {
        match self {
            XformCode::Unknown => XForm::Unknown,
            XformCode::ScannerAnat => XForm::ScannerAnat,
            XformCode::AlignedAnat => XForm::AlignedAnat,
            XformCode::Talairach => XForm::Talairach,
            XformCode::Mni152 => XForm::Mni152,
            XformCode::TemplateOther => XForm::TemplateOther,
        }
    }
}

/// On-disk type of a written image (BIDS derivatives conventions: images float32, masks uint8,
/// segmentations int16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OutputDtype {
    /// 32-bit float, bit-exact.
    Float32,
    /// Unsigned 8-bit, values rounded and clamped to 0..=255.
    Uint8,
    /// Signed 16-bit, values rounded and clamped.
    Int16,
}

/// Reads a `.nii` or `.nii.gz` file (gzip is detected from the content, not the name) into a
/// [`Volume`], applying `scl_slope`/`scl_inter`. The image must be 3D (a trailing singleton 4th
/// dimension is accepted).
pub fn read_nifti(path: &Path) -> Result<(Volume, HeaderSummary), VolumeError> {
    let (file, len) = open_input(path)?;
    if len == 0 {
        return Err(VolumeError::Empty {
            path: path.to_path_buf(),
        });
    }
    decode(path, BufReader::with_capacity(1 << 16, file), len)
}

/// Opens an image file for reading: a regular file (a FIFO or device is refused before it is
/// opened: the one would block, the other never end), with errors that say what the path is.
pub fn open_input(path: &Path) -> Result<(File, u64), VolumeError> {
    use crate::input::InputError;
    let p = || path.to_path_buf();
    crate::input::open_regular(path).map_err(|e| match e {
        InputError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            let is_link = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if is_link {
                VolumeError::DanglingSymlink { path: p() }
            } else {
                VolumeError::Read { path: p(), source }
            }
        }
        InputError::Io { source, .. } => VolumeError::Read { path: p(), source },
        InputError::NotRegular { kind, .. } => VolumeError::NotNifti {
            path: p(),
            reason: if kind == "a folder" {
                "it is a directory".into()
            } else {
                format!("it is {kind}, not a regular file")
            },
        },
        // open_regular sets no limit; kept total for the compiler.
        e @ InputError::TooLarge { .. } => VolumeError::Read {
            path: p(),
            source: std::io::Error::other(e.to_string()),
        },
    })
}

/// Reads a NIfTI image held in memory (e.g. embedded in the binary); `label` names it in errors.
pub fn read_nifti_bytes(
    label: &Path,
    bytes: &[u8],
) -> Result<(Volume, HeaderSummary), VolumeError> {
    if bytes.is_empty() {
        return Err(VolumeError::Empty {
            path: label.to_path_buf(),
        });
    }
    decode(label, bytes, bytes.len() as u64)
}

/// Decodes a NIfTI stream of `file_len` bytes (compressed or not).
fn decode(
    path: &Path,
    mut file: impl Read,
    file_len: u64,
) -> Result<(Volume, HeaderSummary), VolumeError> {
    let p = || path.to_path_buf();
    let mut magic = [0u8; 2];
    let got = read_full(&mut file, &mut magic).map_err(|e| io_err(path, e))?;
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let gz = got == 2 && magic == [0x1f, 0x8b];
    let mut reader: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(head.chain(file)))
    } else {
        Box::new(head.chain(file))
    };

    let mut hbuf = vec![0u8; 540];
    let n = read_full(&mut reader, &mut hbuf).map_err(|e| io_err(path, e))?;
    hbuf.truncate(n);
    let header = parse_header(path, &hbuf)?;
    let (dims, shape) = check_dims(path, &header)?;
    let raw_type = RawType::from_code(header.datatype)
        .map_err(|reason| VolumeError::BadHeader { path: p(), reason })?;
    let scaling = scaling(path, &header)?;

    // Position the stream at the voxel data: skip the extender and any extensions.
    let vox_offset = data_offset(path, &header)?;
    let n_voxels = dims.iter().product::<usize>();
    let n_bytes = n_voxels as u64 * raw_type.size() as u64;
    if !gz && vox_offset + n_bytes > file_len {
        return Err(VolumeError::Truncated {
            path: p(),
            reason: format!(
                "header promises {n_bytes} bytes of voxel data from offset {vox_offset}, the file has {} bytes",
                file_len
            ),
        });
    }
    let consumed = header.header_size.min(n as u64);
    let skip = vox_offset.saturating_sub(consumed);
    // The first `n` bytes read may already include extension or voxel bytes (NIfTI-1 reads 540).
    let mut already: Vec<u8> = hbuf[(header.header_size as usize).min(n)..].to_vec();
    let to_skip_in_buf = (skip as usize).min(already.len());
    already.drain(..to_skip_in_buf);
    let remaining_skip = skip - to_skip_in_buf as u64;
    let skipped = std::io::copy(
        &mut (&mut reader).take(remaining_skip),
        &mut std::io::sink(),
    )
    .map_err(|e| io_err(path, e))?;
    if skipped < remaining_skip {
        return Err(VolumeError::Truncated {
            path: p(),
            reason: format!("file ends inside the header extensions (vox_offset {vox_offset})"),
        });
    }
    let mut raw = Vec::new();
    // Reserve no more than is plausible up front; a lying header on a gz stream cannot make us
    // allocate more than the stream actually holds.
    let _ = raw.try_reserve_exact((n_bytes as usize).min(256 << 20));
    raw.extend_from_slice(&already[..already.len().min(n_bytes as usize)]);
    let want_more = n_bytes - raw.len() as u64;
    (&mut reader)
        .take(want_more)
        .read_to_end(&mut raw)
        .map_err(|e| io_err(path, e))?;
    if (raw.len() as u64) < n_bytes {
        return Err(VolumeError::Truncated {
            path: p(),
            reason: format!(
                "expected {n_bytes} bytes of voxel data ({} × {}), found {}",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" × "),
                raw_type.name(),
                raw.len()
            ),
        });
    }
    let data = convert(&raw, raw_type, header.big_endian, scaling);
    let (affine, affine_source) = header.affine().map_err(|reason| VolumeError::BadHeader {
        path: p(),
        reason: format!(
            "{reason}; fix the header (e.g. with nibabel or fslorient) or re-export the image"
        ),
    })?;
    let volume = Volume::new(dims, affine, data).map_err(|reason| VolumeError::BadHeader {
        path: p(),
        reason: format!(
            "{reason} ({affine_source}); fix the header (e.g. with nibabel or fslorient)"
        ),
    })?;
    let summary = HeaderSummary {
        nifti_version: header.version,
        datatype: raw_type.name(),
        big_endian: header.big_endian,
        shape,
        scaling,
        qform_code: header.qform_code,
        sform_code: header.sform_code,
        affine_source,
        vox_offset,
    };
    Ok((volume, summary))
}

/// Maps an I/O error during decoding to the user-facing error: a broken gzip stream or an early
/// end of file is a truncated download, anything else an OS error.
fn io_err(path: &Path, e: std::io::Error) -> VolumeError {
    use std::io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | InvalidData | InvalidInput => VolumeError::Truncated {
            path: path.to_path_buf(),
            reason: format!("the compressed stream is cut short or corrupt ({e})"),
        },
        _ => VolumeError::Read {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// Reads until `buf` is full or the stream ends; returns the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes `volume` as a gzip-compressed NIfTI-1 file at `path` (which must end in `.nii.gz`), with
/// both qform and sform set to the volume's affine under `code`, so nibabel, FSL and ITK read back
/// the same affine. Writes in place: callers wanting atomicity write to a temporary name and rename
/// (the `derivatives` module does).
pub fn write_nifti(
    path: &Path,
    volume: &Volume,
    dtype: OutputDtype,
    code: XformCode,
    description: &str,
) -> Result<(), VolumeError> {
    let werr = |reason: String| VolumeError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.ends_with(".nii.gz") {
        return Err(werr("output names must end in .nii.gz".into()));
    }
    let [nx, ny, nz] = volume.dims();
    if volume.dims().iter().any(|&d| d > MAX_NIFTI1_DIM) {
        return Err(werr(format!(
            "dimensions {:?} exceed NIfTI-1's limit of {MAX_NIFTI1_DIM} voxels per axis",
            volume.dims()
        )));
    }
    let mut header = NiftiHeader::default();
    let vs = volume.voxel_sizes();
    header.pixdim = [
        1.0,
        vs[0] as f32,
        vs[1] as f32,
        vs[2] as f32,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    header.xyzt_units = 2; // millimetres
    let affine: Matrix4<f64> = *volume.affine();
    header.set_sform(&affine, code.to_nifti());
    header.set_qform(&affine, code.to_nifti());
    let finite = volume.data().iter().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
        (a.min(v), b.max(v))
    });
    let mut descrip = description.as_bytes().to_vec();
    descrip.truncate(79);
    descrip.resize(80, 0);
    header.descrip = descrip;
    if dtype == OutputDtype::Float32 && lo <= hi {
        // Display range for viewers (FSLeyes, Mango); integer outputs use their full range.
        header.cal_min = lo;
        header.cal_max = hi;
    }
    let options = WriterOptions::new(path)
        .reference_header(&header)
        .compress(true);
    let shape = ndarray::ShapeBuilder::f((nx, ny, nz));
    let result = match dtype {
        OutputDtype::Float32 => {
            let view = ndarray::ArrayView3::from_shape(shape, volume.data())
                .map_err(|e| werr(e.to_string()))?;
            options.write_nifti_with_type(&view, NiftiType::Float32)
        }
        OutputDtype::Uint8 => {
            let v: Vec<u8> = volume
                .data()
                .iter()
                .map(|&x| x.round().clamp(0.0, 255.0) as u8)
                .collect();
            let view =
                ndarray::ArrayView3::from_shape(shape, &v[..]).map_err(|e| werr(e.to_string()))?;
            options.write_nifti_with_type(&view, NiftiType::Uint8)
        }
        OutputDtype::Int16 => {
            let v: Vec<i16> = volume
                .data()
                .iter()
                .map(|&x| x.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16)
                .collect();
            let view =
                ndarray::ArrayView3::from_shape(shape, &v[..]).map_err(|e| werr(e.to_string()))?;
            options.write_nifti_with_type(&view, NiftiType::Int16)
        }
    };
    result.map_err(|e| {
        werr(match e {
            // The crate's Io variant has no message of its own (it would print as Debug).
            nifti::NiftiError::Io(io) => crate::os_error::describe_write(&io),
            other => format!("{other}; check permissions and free disk space"),
        })
    })
}
