//! Parsing NIfTI-1 and NIfTI-2 headers by hand (nifti-rs 0.18 reads only NIfTI-1, and its
//! affine code can panic on user headers): the fields hcld uses widened to 64 bits
//! ([`RawHeader`]), the checks that keep a lying header from making us allocate or panic
//! (dimensions, scaling, data offset), the affine with nibabel's numerics, and the conversion of
//! on-disk voxels to `f32`.

use std::path::Path;

use nalgebra::{Matrix3, Matrix4, Vector3};
use nifti::NiftiHeader;

use super::VolumeError;

/// Largest image we accept, in voxels (2^28: 1 GiB as `f32`, a 0.5 mm 512³ volume fits). T1w
/// scans are < 2^25. This bounds what a lying header on a small `.nii.gz` can make us allocate.
pub(super) const MAX_VOXELS: u64 = 1 << 28;

/// Numeric layout of on-disk voxels.
#[derive(Debug, Clone, Copy)]
pub(super) enum RawType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl RawType {
    pub(super) fn from_code(code: i16) -> Result<Self, String> {
        Ok(match code {
            2 => RawType::U8,
            4 => RawType::I16,
            8 => RawType::I32,
            16 => RawType::F32,
            64 => RawType::F64,
            256 => RawType::I8,
            512 => RawType::U16,
            768 => RawType::U32,
            1024 => RawType::I64,
            1280 => RawType::U64,
            32 | 1792 | 2048 => {
                return Err(format!(
                    "datatype {code} is complex-valued; a T1w image must be real, export the magnitude image"
                ));
            }
            128 | 2304 => {
                return Err(format!(
                    "datatype {code} is RGB colour; a T1w image must be a scalar greyscale volume"
                ));
            }
            1536 => {
                return Err("datatype 1536 (float128) is not supported; convert to float32".into());
            }
            other => {
                return Err(format!(
                    "unknown datatype code {other}: the header is damaged; re-export the image (e.g. dcm2niix)"
                ));
            }
        })
    }

    pub(super) fn size(self) -> usize {
        match self {
            RawType::U8 | RawType::I8 => 1,
            RawType::I16 | RawType::U16 => 2,
            RawType::I32 | RawType::U32 | RawType::F32 => 4,
            RawType::I64 | RawType::U64 | RawType::F64 => 8,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            RawType::U8 => "uint8",
            RawType::I8 => "int8",
            RawType::I16 => "int16",
            RawType::U16 => "uint16",
            RawType::I32 => "int32",
            RawType::U32 => "uint32",
            RawType::I64 => "int64",
            RawType::U64 => "uint64",
            RawType::F32 => "float32",
            RawType::F64 => "float64",
        }
    }
}

/// The header fields we use, common to NIfTI-1 and NIfTI-2, widened to 64 bits.
#[derive(Debug, Clone)]
pub(super) struct RawHeader {
    pub(super) version: u8,
    pub(super) header_size: u64,
    pub(super) big_endian: bool,
    pub(super) dim: [i64; 8],
    pub(super) datatype: i16,
    pub(super) pixdim: [f64; 8],
    pub(super) vox_offset: f64,
    pub(super) scl_slope: f64,
    pub(super) scl_inter: f64,
    pub(super) qform_code: i32,
    pub(super) sform_code: i32,
    pub(super) quatern: [f64; 3],
    pub(super) qoffset: [f64; 3],
    pub(super) srow: [[f64; 4]; 3],
}

impl RawHeader {
    pub(super) fn from_nifti1(h: &NiftiHeader) -> Self {
        let mut dim = [0i64; 8];
        for (d, s) in dim.iter_mut().zip(h.dim.iter()) {
            // NIfTI-1 stores dims as signed 16-bit; the crate reads them unsigned.
            *d = *s as i16 as i64;
        }
        let widen4 = |r: [f32; 4]| r.map(|v| v as f64);
        RawHeader {
            version: 1,
            header_size: 348,
            big_endian: h.endianness == nifti::Endianness::Big,
            dim,
            datatype: h.datatype,
            pixdim: h.pixdim.map(|v| v as f64),
            vox_offset: h.vox_offset as f64,
            scl_slope: h.scl_slope as f64,
            scl_inter: h.scl_inter as f64,
            qform_code: h.qform_code as i32,
            sform_code: h.sform_code as i32,
            quatern: [h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64],
            qoffset: [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
            srow: [widen4(h.srow_x), widen4(h.srow_y), widen4(h.srow_z)],
        }
    }

    /// Parses a 540-byte NIfTI-2 header (layout from the NIfTI-2 standard, `nifti2.h`).
    pub(super) fn from_nifti2(b: &[u8], big_endian: bool) -> Result<Self, String> {
        if b.len() < 540 {
            return Err(format!(
                "NIfTI-2 header needs 540 bytes, file has {}",
                b.len()
            ));
        }
        let magic = &b[4..12];
        if magic == b"ni2\0\r\n\x1a\n" {
            return Err(
                "this is the header of a NIfTI-2 .hdr/.img pair; BIDS needs single-file .nii[.gz]"
                    .into(),
            );
        }
        if magic != b"n+2\0\r\n\x1a\n" {
            return Err("NIfTI-2 magic string is missing or damaged; re-export the image".into());
        }
        let rd = |o: usize, n: usize| -> [u8; 8] {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(&b[o..o + n]);
            if big_endian {
                a[..n].reverse();
            }
            a
        };
        let i16_at = |o| i16::from_le_bytes(rd(o, 2)[..2].try_into().unwrap_or([0; 2]));
        let i32_at = |o| i32::from_le_bytes(rd(o, 4)[..4].try_into().unwrap_or([0; 4]));
        let i64_at = |o| i64::from_le_bytes(rd(o, 8));
        let f64_at = |o| f64::from_le_bytes(rd(o, 8));
        let mut dim = [0i64; 8];
        let mut pixdim = [0f64; 8];
        for i in 0..8 {
            dim[i] = i64_at(16 + 8 * i);
            pixdim[i] = f64_at(104 + 8 * i);
        }
        let mut srow = [[0f64; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f64_at(400 + 32 * r + 8 * c);
            }
        }
        Ok(RawHeader {
            version: 2,
            header_size: 540,
            big_endian,
            dim,
            datatype: i16_at(12),
            pixdim,
            vox_offset: i64_at(168) as f64,
            scl_slope: f64_at(176),
            scl_inter: f64_at(184),
            qform_code: i32_at(344),
            sform_code: i32_at(348),
            quatern: [f64_at(352), f64_at(360), f64_at(368)],
            qoffset: [f64_at(376), f64_at(384), f64_at(392)],
            srow,
        })
    }

    /// The voxel-to-world affine, chosen as the NIfTI standard orders the methods.
    pub(super) fn affine(&self) -> Result<(Matrix4<f64>, &'static str), String> {
        // As nibabel: only the defined codes 1..=5 mark a usable transform.
        let valid = |code: i32| (1..=5).contains(&code);
        if valid(self.sform_code) {
            let s = &self.srow;
            #[rustfmt::skip]
            let m = Matrix4::new(
                s[0][0], s[0][1], s[0][2], s[0][3],
                s[1][0], s[1][1], s[1][2], s[1][3],
                s[2][0], s[2][1], s[2][2], s[2][3],
                0.0, 0.0, 0.0, 1.0,
            );
            Ok((m, "sform"))
        } else if valid(self.qform_code) {
            Ok((self.qform_affine()?, "qform"))
        } else {
            Ok((self.pixdim_affine(), "pixdim"))
        }
    }

    /// NIfTI "method 2": rotation from the quaternion (b, c, d), zooms from pixdim, `qfac` from
    /// pixdim[0] (anything but -1 counts as +1, as in nibabel and the reference C library).
    pub(super) fn qform_affine(&self) -> Result<Matrix4<f64>, String> {
        let [b, c, d] = self.quatern;
        let w2 = 1.0 - (b * b + c * c + d * d);
        // As nibabel: |w²| below 3 ε of the header's float type means a 180° rotation (a = 0);
        // a clearly negative w² is no rotation at all, and nibabel refuses the image (it was
        // accepted as a 180° turn before, placing the brain wherever the numbers fell).
        let eps = if self.version == 1 {
            f32::EPSILON as f64
        } else {
            f64::EPSILON
        };
        if w2 < -3.0 * eps {
            return Err(format!(
                "the qform quaternion (b, c, d) = ({b}, {c}, {d}) is not a rotation (b² + c² + d² = {:.6} > 1)",
                1.0 - w2
            ));
        }
        let a = if w2.abs() < 3.0 * eps || w2 < 0.0 {
            0.0
        } else {
            w2.sqrt()
        };
        let n = a * a + b * b + c * c + d * d;
        let r = if n < f64::EPSILON {
            Matrix3::identity()
        } else {
            let s = 2.0 / n;
            let (x, y, z) = (b * s, c * s, d * s);
            let (wx, wy, wz) = (a * x, a * y, a * z);
            let (xx, xy, xz) = (b * x, b * y, b * z);
            let (yy, yz, zz) = (c * y, c * z, d * z);
            Matrix3::new(
                1.0 - (yy + zz),
                xy - wz,
                xz + wy,
                xy + wz,
                1.0 - (xx + zz),
                yz - wx,
                xz - wy,
                yz + wx,
                1.0 - (xx + yy),
            )
        };
        let qfac = if self.pixdim[0] == -1.0 { -1.0 } else { 1.0 };
        let zooms = Vector3::new(
            self.pixdim[1].abs(),
            self.pixdim[2].abs(),
            self.pixdim[3].abs() * qfac,
        );
        let m = r * Matrix3::from_diagonal(&zooms);
        let mut out = Matrix4::identity();
        out.fixed_view_mut::<3, 3>(0, 0).copy_from(&m);
        out[(0, 3)] = self.qoffset[0];
        out[(1, 3)] = self.qoffset[1];
        out[(2, 3)] = self.qoffset[2];
        Ok(out)
    }

    /// NIfTI "method 1" (no transform codes): nibabel's Analyze-compatible base affine, i.e.
    /// radiological x flip and the origin at the volume centre, so hcld and nibabel agree.
    pub(super) fn pixdim_affine(&self) -> Matrix4<f64> {
        let mut out = Matrix4::identity();
        for ax in 0..3 {
            let n = self.dim[ax + 1].max(1) as f64;
            let z = if self.pixdim[ax + 1] == 0.0 {
                1.0
            } else {
                self.pixdim[ax + 1].abs()
            };
            let z = if ax == 0 { -z } else { z };
            out[(ax, ax)] = z;
            out[(ax, 3)] = -((n - 1.0) / 2.0) * z;
        }
        out
    }
}

pub(super) fn parse_header(path: &Path, b: &[u8]) -> Result<RawHeader, VolumeError> {
    let p = || path.to_path_buf();
    if b.starts_with(b"/annex/objects/") || b.windows(19).any(|w| w == b".git/annex/objects/") {
        return Err(VolumeError::AnnexPlaceholder { path: p() });
    }
    if b.len() < 4 {
        return Err(VolumeError::NotNifti {
            path: p(),
            reason: format!("only {} bytes", b.len()),
        });
    }
    let le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    match (le, be) {
        (348, _) | (_, 348) => {
            if b.len() < 348 {
                return Err(VolumeError::Truncated {
                    path: p(),
                    reason: format!("the 348-byte NIfTI-1 header is cut at {} bytes", b.len()),
                });
            }
            let magic = &b[344..348];
            if magic != b"n+1\0" && magic != b"ni1\0" {
                return Err(VolumeError::NotNifti {
                    path: p(),
                    reason:
                        "sizeof_hdr is 348 but the magic string is not 'n+1' (an ANALYZE 7.5 file?)"
                            .into(),
                });
            }
            if magic == b"ni1\0" {
                return Err(VolumeError::NotNifti {
                    path: p(),
                    reason:
                        "this is the header of a .hdr/.img pair; BIDS needs single-file .nii[.gz]"
                            .into(),
                });
            }
            let h = NiftiHeader::from_reader(&b[..348]).map_err(|e| VolumeError::BadHeader {
                path: p(),
                reason: e.to_string(),
            })?;
            Ok(RawHeader::from_nifti1(&h))
        }
        (540, _) | (_, 540) => RawHeader::from_nifti2(b, le != 540)
            .map_err(|reason| VolumeError::BadHeader { path: p(), reason }),
        _ => Err(VolumeError::NotNifti {
            path: p(),
            reason: format!(
                "first 4 bytes give header size {le}, expected 348 (NIfTI-1) or 540 (NIfTI-2)"
            ),
        }),
    }
}

/// Checks the dimensions: 3D, or 4D+ with singleton trailing axes; all positive; plausible size.
pub(super) fn check_dims(
    path: &Path,
    h: &RawHeader,
) -> Result<([usize; 3], Vec<usize>), VolumeError> {
    let p = || path.to_path_buf();
    let ndim = h.dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(VolumeError::BadHeader {
            path: p(),
            reason: format!(
                "dim[0] = {ndim} (must be 1..7): the header is damaged; re-export the image (e.g. dcm2niix)"
            ),
        });
    }
    let ndim = ndim as usize;
    let shape: Vec<i64> = h.dim[1..=ndim].to_vec();
    if let Some(bad) = shape.iter().find(|&&d| d < 1) {
        return Err(VolumeError::BadHeader {
            path: p(),
            reason: format!(
                "a dimension is {bad} (dims {shape:?}); every dimension must be ≥ 1: the header is damaged, re-export the image (e.g. dcm2niix)"
            ),
        });
    }
    // Checked products: NIfTI-2 dims are 64-bit, and a wrapped product must not pass as small.
    let total = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let total = match total {
        Some(t) if t <= MAX_VOXELS => t,
        _ => {
            return Err(VolumeError::BadHeader {
                path: p(),
                reason: format!(
                    "dims {shape:?} describe more than {MAX_VOXELS} voxels, implausible for a T1w; the header is damaged: re-export the image or fetch it again"
                ),
            });
        }
    };
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    if ndim < 3 {
        return Err(VolumeError::NotThreeD {
            path: p(),
            reason: format!(
                "a {ndim}D image (dims {shape:?}), a T1w must be a 3D volume: replace it with the 3D scan (a single slice or a localiser is not one)"
            ),
        });
    }
    let extra: u64 = shape[3..].iter().map(|&d| d as u64).product();
    if extra > 1 {
        return Err(VolumeError::NotThreeD {
            path: p(),
            reason: format!(
                "a 4D image with {extra} volumes (dims {shape:?}) given as T1w; split it (fslsplit, mrconvert) and keep one 3D volume per file (use run- to number them)"
            ),
        });
    }
    debug_assert!(total <= MAX_VOXELS);
    Ok(([shape[0], shape[1], shape[2]], shape))
}

/// nibabel's rule: slope 0 or non-finite means unscaled; a valid slope needs a finite intercept.
pub(super) fn scaling(path: &Path, h: &RawHeader) -> Result<Option<(f64, f64)>, VolumeError> {
    if h.scl_slope == 0.0 || !h.scl_slope.is_finite() {
        return Ok(None);
    }
    if !h.scl_inter.is_finite() {
        return Err(VolumeError::BadHeader {
            path: path.to_path_buf(),
            reason: format!(
                "scl_slope {} with a non-finite scl_inter {}",
                h.scl_slope, h.scl_inter
            ),
        });
    }
    if h.scl_slope == 1.0 && h.scl_inter == 0.0 {
        return Ok(None);
    }
    Ok(Some((h.scl_slope, h.scl_inter)))
}

pub(super) fn data_offset(path: &Path, h: &RawHeader) -> Result<u64, VolumeError> {
    let v = h.vox_offset;
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 || v > (1u64 << 40) as f64 {
        return Err(VolumeError::BadHeader {
            path: path.to_path_buf(),
            reason: format!(
                "vox_offset {v} is not a valid byte offset: the header is damaged, re-export the image (e.g. dcm2niix)"
            ),
        });
    }
    // Single-file NIfTI keeps the 4-byte extender after the header; an offset inside the header
    // (written by some old tools as 0) means "right after it".
    Ok((v as u64).max(h.header_size + 4))
}

pub(super) fn convert(
    raw: &[u8],
    t: RawType,
    big_endian: bool,
    scaling: Option<(f64, f64)>,
) -> Vec<f32> {
    macro_rules! conv {
        ($ty:ty, $n:expr) => {{
            raw.chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().unwrap_or([0; $n]);
                    let v = if big_endian {
                        <$ty>::from_be_bytes(a)
                    } else {
                        <$ty>::from_le_bytes(a)
                    };
                    v as f64
                })
                .map(|v| match scaling {
                    Some((s, i)) => (v * s + i) as f32,
                    None => v as f32,
                })
                .collect()
        }};
    }
    match t {
        RawType::U8 => conv!(u8, 1),
        RawType::I8 => conv!(i8, 1),
        RawType::I16 => conv!(i16, 2),
        RawType::U16 => conv!(u16, 2),
        RawType::I32 => conv!(i32, 4),
        RawType::U32 => conv!(u32, 4),
        RawType::I64 => conv!(i64, 8),
        RawType::U64 => conv!(u64, 8),
        RawType::F32 => conv!(f32, 4),
        RawType::F64 => conv!(f64, 8),
    }
}
