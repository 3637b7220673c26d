//! NIfTI-1/NIfTI-2 header and gzip header reading for the `nifti_header` and `gzip` expression
//! contexts. Only the first 540 bytes are read. Written by hand (a few offsets of the NIfTI
//! standard) so the validator crate stays independent of hcld's image code.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde_json::{Value, json};

fn read_prefix(r: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The gzip header of a `.gz` file: `{timestamp, filename, comment}` (`None` if not gzip).
pub fn gzip_header(path: &Path) -> Option<Value> {
    let mut f = BufReader::new(File::open(path).ok()?);
    let head = read_prefix(&mut f, 10).ok()?;
    if head.len() < 10 || head[0] != 0x1f || head[1] != 0x8b {
        return None;
    }
    let flags = head[3];
    let mtime = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let mut rest = read_prefix(&mut f, 4096).ok()?;
    let mut pos = 0;
    if flags & 0x04 != 0 && rest.len() >= 2 {
        pos += 2 + u16::from_le_bytes([rest[0], rest[1]]) as usize;
    }
    let mut take_cstr = |flag: u8| -> Value {
        if flags & flag == 0 || pos >= rest.len() {
            return Value::Null;
        }
        let end = rest[pos..]
            .iter()
            .position(|&b| b == 0)
            .map(|e| pos + e)
            .unwrap_or(rest.len());
        let s = String::from_utf8_lossy(&rest[pos..end]).into_owned();
        pos = end + 1;
        Value::String(s)
    };
    let filename = take_cstr(0x08);
    let comment = take_cstr(0x10);
    rest.clear();
    Some(json!({"timestamp": mtime, "filename": filename, "comment": comment}))
}

/// Parses the NIfTI header of `path` into the schema's `nifti_header` object; `Err` when it is
/// unreadable (empty, truncated, not NIfTI).
pub fn nifti_header(path: &Path) -> Result<Value, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let mut f = BufReader::new(f);
    let magic = read_prefix(&mut f, 2).map_err(|e| e.to_string())?;
    let chained = std::io::Cursor::new(magic.clone()).chain(f);
    let mut reader: Box<dyn Read> = if magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(chained))
    } else {
        Box::new(chained)
    };
    let b = read_prefix(&mut reader, 540).map_err(|e| e.to_string())?;
    if b.len() < 348 {
        return Err(format!("header has {} bytes", b.len()));
    }
    let le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (v2, big) = match (le, be) {
        (348, _) => (false, false),
        (_, 348) => (false, true),
        (540, _) => (true, false),
        (_, 540) => (true, true),
        _ => return Err("not a NIfTI header".into()),
    };
    if v2 && b.len() < 540 {
        return Err("NIfTI-2 header truncated".into());
    }
    let rd = |o: usize, n: usize| -> u64 {
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(&b[o..o + n]);
        if big {
            a[..n].reverse();
        }
        u64::from_le_bytes(a)
    };
    let i16_at = |o| rd(o, 2) as u16 as i16 as i64;
    let f32_at = |o| f32::from_bits(rd(o, 4) as u32) as f64;
    let f64_at = |o| f64::from_bits(rd(o, 8));
    let (dim, pixdim, xyzt, qform, sform, dim_info): (Vec<i64>, Vec<f64>, u64, i64, i64, u8) = if v2
    {
        (
            (0..8).map(|i| rd(16 + 8 * i, 8) as i64).collect(),
            (0..8).map(|i| f64_at(104 + 8 * i)).collect(),
            rd(500, 4),
            rd(344, 4) as u32 as i32 as i64,
            rd(348, 4) as u32 as i32 as i64,
            b[524],
        )
    } else {
        (
            (0..8).map(|i| i16_at(40 + 2 * i)).collect(),
            (0..8).map(|i| f32_at(76 + 4 * i)).collect(),
            b[123] as u64,
            i16_at(252),
            i16_at(254),
            b[39],
        )
    };
    let n = dim[0].clamp(0, 7) as usize;
    // Unit decoding and pixdim rounding exactly as the reference (nifti-reader based) does, so
    // the schema's unit and timing checks trip at the same values.
    let space = ["unknown", "meter", "mm", "um"][(xyzt & 0x03) as usize];
    let time = ["unknown", "sec", "msec", "usec"][((xyzt >> 3) & 0x03) as usize];
    let pixdim: Vec<f64> = pixdim
        .iter()
        .map(|p| (p * 1000.0).round() / 1000.0)
        .collect();
    Ok(json!({
        "dim_info": {"freq": dim_info & 3, "phase": (dim_info >> 2) & 3, "slice": (dim_info >> 4) & 3},
        "dim": dim,
        "pixdim": pixdim,
        "shape": dim[1..=n].to_vec(),
        "voxel_sizes": pixdim[1..=n].to_vec(),
        "xyzt_units": {"xyz": space, "t": time},
        "qform_code": qform,
        "sform_code": sform,
        "axis_codes": Value::Null,
    }))
}
