#!/usr/bin/env python3
"""Generate tiny NIfTI variant files and nibabel ground truth for hcld's NIfTI reader tests.

What it does
------------
1. Writes small synthetic NIfTI files into ``tests/data/nifti-variants/``
   (shape 7x8x9, a few KB each). Each file name says which feature it
   exercises: every NIfTI-1 datatype nibabel can write, scl_slope/scl_inter
   scaling, uncompressed ``.nii``, big-endian, the sform/qform code
   combinations, a header extension, non-RAS orientations, 4D files and
   NIfTI-2. Voxel contents are a pure arithmetic pattern (no RNG): for most
   files the value of voxel (i, j, k[, t]) is its Fortran-order linear index
   ``i + 7*j + 56*k (+ 504*t)``, so a reader's axis handling can be checked
   voxel by voxel. Affines use exact rational rotations (Pythagorean triples,
   ~11.4 deg about z then ~10.4 deg about x), voxel size 2 x 3 x 2.5 mm and a
   non-trivial offset.
2. Writes ``tests/data/nibabel_expected.json`` with what nibabel reports for
   every ``tests/data/t1w/*.nii.gz`` (real scans) and every variant file:
   on-disk header facts, ``img.affine``, shape, sums/min/max of
   ``get_fdata()``, sample voxels, and the same after
   ``nib.as_closest_canonical``. Floats are written with Python's
   shortest round-trip repr (full float64 precision); NaN becomes null.

How to run
----------
From the repository root, with nibabel + numpy installed (any venv)::

    python3 scripts/nibabel_expected.py

e.g. ``python3 -m venv /tmp/nib && /tmp/nib/bin/pip install nibabel numpy &&
/tmp/nib/bin/python scripts/nibabel_expected.py``. The outputs were last
generated with the versions recorded in the JSON (``nibabel_version``,
``numpy_version``) and in ``tests/data/README.md``.

The script is deterministic: no randomness, no timestamps (nibabel writes gzip
members with mtime 0 and no file name), entries sorted by path. Re-running
it with the same nibabel/numpy/zlib gives byte-identical files.

JSON schema (per entry in ``files``)
------------------------------------
file, description, nibabel_version,
header: {nifti_version, sizeof_hdr, endianness, dtype, dtype_str, datatype,
         bitpix, dim, pixdim, vox_offset, scl_slope, scl_inter, qform_code,
         sform_code, quatern_bcd, qoffset_xyz, qfac, srow, xyzt_units,
         extensions: [{ecode, esize}]}   -- raw on-disk values (check=False)
effective_slope, effective_inter      -- scaling nibabel actually applies
qform_affine, sform_affine            -- header.get_qform()/get_sform(), 4x4
affine, axcodes, shape, zooms,
sum, sum_exact, sum_abs, min, max,
samples: [{index, value}],
canonical: {shape, affine, axcodes, sum, sum_exact, samples}

Sample indices: all zeros; each dim // 2; and axis a -> min(a + 1, dim_a - 1)
(i.e. (1, 2, 3) clipped, extended to 4D as (1, 2, 3, 4) clipped). The same
rule is applied to the canonical array's own shape.
"""

from __future__ import annotations

import json
import math
import os
import sys
from fractions import Fraction
from pathlib import Path

try:
    import nibabel as nib
    import numpy as np
    from nibabel.nifti1 import Nifti1Extension
except ImportError as exc:  # pragma: no cover
    sys.exit(f"{exc}: this script needs nibabel and numpy (pip install nibabel numpy)")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
VARIANTS = DATA / "nifti-variants"
OUT_JSON = DATA / "nibabel_expected.json"

SHAPE = (7, 8, 9)
ZOOMS = (Fraction(2), Fraction(3), Fraction(5, 2))
OFFSET = (Fraction(-70, 1) + Fraction(1, 4), Fraction(-95, 1) - Fraction(1, 2), Fraction(-60, 1) + Fraction(3, 8))


# ---------------------------------------------------------------------------
# Exact affine construction (Fractions -> float, so no libm/BLAS dependence)
# ---------------------------------------------------------------------------

def _matmul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))]
            for i in range(len(a))]


# ~11.42 deg about z: (cos, sin) = (99/101, 20/101)
ROT_Z = [[Fraction(99, 101), Fraction(-20, 101), 0],
         [Fraction(20, 101), Fraction(99, 101), 0],
         [0, 0, 1]]
# ~10.39 deg about x: (cos, sin) = (60/61, 11/61)
ROT_X = [[1, 0, 0],
         [0, Fraction(60, 61), Fraction(-11, 61)],
         [0, Fraction(11, 61), Fraction(60, 61)]]
ROT = _matmul(ROT_X, ROT_Z)
IDENT = [[Fraction(int(i == j)) for j in range(3)] for i in range(3)]

_AXIS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


def make_affine(axcodes="RAS", rot=ROT, zooms=ZOOMS, offset=OFFSET):
    """affine = [rot @ perm_flip(axcodes) @ diag(zooms) | offset], exactly."""
    perm = [[Fraction(0)] * 3 for _ in range(3)]
    for vox_axis, code in enumerate(axcodes):
        world_axis, sign = _AXIS[code]
        perm[world_axis][vox_axis] = Fraction(sign)
    m = _matmul(rot, perm)
    m = [[m[i][j] * zooms[j] for j in range(3)] for i in range(3)]
    aff = np.eye(4)
    for i in range(3):
        for j in range(3):
            aff[i, j] = float(m[i][j])
        aff[i, 3] = float(offset[i])
    return aff


AFF_RAS = make_affine("RAS")


# ---------------------------------------------------------------------------
# Arithmetic voxel patterns
# ---------------------------------------------------------------------------

def linear_index(shape=SHAPE):
    """int64 array whose value at (i,j,k,...) is its Fortran-order linear index."""
    n = int(np.prod(shape))
    return np.arange(n, dtype=np.int64).reshape(shape, order="F")


LIN = linear_index()  # 0..503
MID = int(LIN.size // 2)  # 252

# dtype -> array (exact integers, or exactly-rounded float ops only)
DTYPE_DATA = {
    "uint8": (LIN % 256).astype(np.uint8),                       # 0..255
    "int8": ((LIN % 256) - 128).astype(np.int8),                 # -128..127
    "int16": ((LIN - MID) * 130).astype(np.int16),               # -32760..32630
    "uint16": (LIN * 130).astype(np.uint16),                     # 0..65390 (> i16 max)
    "int32": ((LIN - MID) * 8_000_000).astype(np.int32),         # +-2.0e9
    "uint32": (LIN * 8_500_000).astype(np.uint32),               # up to 4.28e9 (> i32 max)
    "int64": ((LIN - MID) * 10**15).astype(np.int64),            # +-2.5e17 (> 2^53, exact in f64)
    "uint64": (LIN.astype(np.uint64) * np.uint64(3 * 10**16)),   # up to 1.5e19 (> i64 max)
    "float32": (LIN.astype(np.float64) * 0.1 - 25.0).astype(np.float32),
    "float64": (LIN.astype(np.float64) - MID) / 3.0,
}


# ---------------------------------------------------------------------------
# Variant generation
# ---------------------------------------------------------------------------

VARIANT_DESCRIPTIONS: dict[str, str] = {}


def _save(img, name, description):
    path = VARIANTS / name
    nib.save(img, str(path))
    VARIANT_DESCRIPTIONS[name] = description
    return path


def _img(data, affine=AFF_RAS, dtype=None, klass=nib.Nifti1Image, header=None):
    dtype = np.dtype(dtype or data.dtype)
    img = klass(data, affine, header=header, dtype=dtype if header is None else None)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    # default nibabel codes for a fresh image: sform 2 (aligned), qform 0;
    # make both explicit and equal so files are self-consistent
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return img


def generate_variants():
    VARIANTS.mkdir(parents=True, exist_ok=True)
    for old in VARIANTS.iterdir():
        if old.name.endswith((".nii", ".nii.gz")):
            old.unlink()

    # every NIfTI-1 datatype nibabel writes (real-valued)
    for name, data in DTYPE_DATA.items():
        _save(_img(data, dtype=name), f"dtype-{name}.nii.gz",
              f"datatype {name}; sform=qform (codes 1), RAS rotated ~15.4 deg, 2x3x2.5 mm, offset (-69.75,-95.5,-59.625)")

    # scaled int16: raw stored values are the linear index minus 252, scaled by 2.5, -10
    raw = (LIN - MID).astype(np.int16)
    img = _img(raw)
    img.header.set_slope_inter(2.5, -10.0)
    _save(img, "scaled-int16.nii.gz",
          "int16 with scl_slope=2.5, scl_inter=-10 (value = 2.5*raw - 10; raw = linear index - 252)")

    # scl_slope = 0 -> NIfTI says 'no scaling'; inter must be ignored too
    img = _img(LIN.astype(np.int16))
    img.header["scl_slope"] = 0.0
    img.header["scl_inter"] = 5.0
    _save(img, "scaled-zero-slope-int16.nii.gz",
          "int16 with raw scl_slope=0, scl_inter=5: scaling must be ignored entirely")

    # uncompressed
    _save(_img(DTYPE_DATA["float32"]), "plain-float32.nii",
          "uncompressed .nii, float32")

    # big-endian
    be_hdr = nib.Nifti1Header(endianness=">")
    img = _img(LIN.astype(np.int16), header=be_hdr)
    _save(img, "bigendian-int16.nii.gz", "big-endian header and data, int16 = linear index")

    base = LIN.astype(np.int16)

    # sform only
    img = _img(base)
    img.set_qform(None, code=0)
    _save(img, "sform-only.nii.gz", "sform_code 1, qform_code 0 (qform params still present)")

    # qform only, proper rotation (qfac = +1)
    img = _img(base)
    img.set_sform(None, code=0)
    _save(img, "qform-only-rot.nii.gz",
          "sform_code 0, qform_code 1 with rotation (quaternion path), qfac=+1")

    # qform only, improper (det < 0) -> qfac = -1 stored in pixdim[0]
    aff_las = make_affine("LAS")
    img = _img(base, affine=aff_las)
    img.set_sform(None, code=0)
    _save(img, "qform-only-qfac-neg.nii.gz",
          "sform_code 0, qform_code 1, rotated LAS-like affine (det<0) -> pixdim[0] = qfac = -1")

    # neither: nibabel falls back to get_base_affine (x-flipped, centred pixdim scaling)
    img = _img(base)
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    _save(img, "no-qform-no-sform.nii.gz",
          "sform_code 0 and qform_code 0: nibabel uses pixdim fallback (Analyze-style x flip, centred)")

    # sform 2 and qform 1 that disagree: sform wins
    img = _img(base)
    q_aff = make_affine("RAS", rot=IDENT, offset=(Fraction(10), Fraction(20), Fraction(30)))
    img.set_qform(q_aff, code=1)
    img.set_sform(AFF_RAS, code=2)
    _save(img, "sform2-qform1-disagree.nii.gz",
          "sform_code 2 (rotated) and qform_code 1 (unrotated, different offset): sform wins")

    # header extension -> vox_offset > 352
    img = _img(base)
    comment = b"hcld test extension: NIFTI_ECODE_COMMENT (6). Readers must skip this.\x00"
    img.header.extensions.append(Nifti1Extension(6, comment))
    _save(img, "extension-comment.nii.gz",
          "one header extension (ecode 6, comment) so vox_offset > 352")

    # non-RAS orientations (with the same rotation applied on top)
    for ax in ("LPS", "PSR", "LAS", "ASL"):
        _save(_img(base, affine=make_affine(ax)), f"orient-{ax}.nii.gz",
              f"closest axcodes {ax} (rotated), int16 = linear index; exercises reorientation")

    # 4D
    data4 = linear_index(SHAPE + (2,)).astype(np.int16)
    img = _img(data4)
    img.header.set_zooms((2.0, 3.0, 2.5, 1.5))
    _save(img, "4d-int16.nii.gz", "4D 7x8x9x2, int16 = linear index, TR pixdim[4]=1.5 s")

    data41 = linear_index(SHAPE + (1,)).astype(np.int16)
    img = _img(data41)
    img.header.set_zooms((2.0, 3.0, 2.5, 1.5))
    _save(img, "4d-singleton-int16.nii.gz", "4D with last dim 1 (dim[0]=4, 7x8x9x1)")

    # NIfTI-2
    _save(_img(DTYPE_DATA["float32"], klass=nib.Nifti2Image), "nifti2-float32.nii.gz",
          "NIfTI-2 (540-byte header, vox_offset 544), float32")


# ---------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------

def f(x):
    """float -> JSON float (NaN/inf -> None)."""
    x = float(x)
    return x if math.isfinite(x) else None


def mat(a):
    return [[f(v) for v in row] for row in np.asarray(a)]


def sample_indices(shape):
    zero = tuple(0 for _ in shape)
    centre = tuple(d // 2 for d in shape)
    third = tuple(min(a + 1, d - 1) for a, d in enumerate(shape))
    return [zero, centre, third]


def samples(arr):
    return [{"index": list(idx), "value": f(arr[idx])} for idx in sample_indices(arr.shape)]


def raw_header(path):
    """On-disk header without nibabel's check_fix (e.g. scl_slope 0 stays 0)."""
    img = nib.load(str(path))
    klass = type(img.header)
    with nib.openers.ImageOpener(str(path)) as fobj:
        return klass.from_fileobj(fobj, check=False)


def header_facts(path):
    h = raw_header(path)
    nv = 2 if isinstance(h, nib.Nifti2Header) else 1
    exts = [{"ecode": int(e.get_code()), "esize": int(e.get_sizeondisk())} for e in h.extensions]
    return {
        "nifti_version": nv,
        "sizeof_hdr": int(h["sizeof_hdr"]),
        "endianness": "big" if h.endianness == ">" else "little",
        "dtype": h.get_data_dtype().name,
        "dtype_str": h.get_data_dtype().str,
        "datatype": int(h["datatype"]),
        "bitpix": int(h["bitpix"]),
        "dim": [int(v) for v in h["dim"]],
        "pixdim": [f(v) for v in h["pixdim"]],
        "vox_offset": f(h["vox_offset"]),
        "scl_slope": f(h["scl_slope"]),
        "scl_inter": f(h["scl_inter"]),
        "qform_code": int(h["qform_code"]),
        "sform_code": int(h["sform_code"]),
        "quatern_bcd": [f(h["quatern_b"]), f(h["quatern_c"]), f(h["quatern_d"])],
        "qoffset_xyz": [f(h["qoffset_x"]), f(h["qoffset_y"]), f(h["qoffset_z"])],
        "qfac": f(h["pixdim"][0]),
        "srow": [[f(v) for v in h["srow_x"]], [f(v) for v in h["srow_y"]],
                 [f(v) for v in h["srow_z"]]],
        "xyzt_units": int(h["xyzt_units"]),
        "extensions": exts,
    }


def stats(arr):
    flat = arr.ravel(order="F")
    return {
        "sum": f(np.sum(arr)),
        "sum_exact": f(math.fsum(flat.tolist())),
    }


def describe(path, description):
    img = nib.load(str(path))
    data = img.get_fdata(dtype=np.float64)
    hdr = img.header
    entry = {
        "file": path.relative_to(DATA).as_posix(),
        "description": description,
        "nibabel_version": nib.__version__,
        "header": header_facts(path),
        "effective_slope": f(img.dataobj.slope),
        "effective_inter": f(img.dataobj.inter),
        "qform_affine": mat(hdr.get_qform()),
        "sform_affine": mat(hdr.get_sform()),
        "affine": mat(img.affine),
        "axcodes": list(nib.aff2axcodes(img.affine)),
        "shape": [int(d) for d in img.shape],
        "zooms": [f(z) for z in hdr.get_zooms()],
        **stats(data),
        "sum_abs": f(np.sum(np.abs(data))),
        "min": f(np.min(data)),
        "max": f(np.max(data)),
        "samples": samples(data),
    }
    can = nib.as_closest_canonical(img)
    cdata = can.get_fdata(dtype=np.float64)
    entry["canonical"] = {
        "shape": [int(d) for d in can.shape],
        "affine": mat(can.affine),
        "axcodes": list(nib.aff2axcodes(can.affine)),
        **stats(cdata),
        "samples": samples(cdata),
    }
    return entry


def check_variants():
    """Fail loudly if nibabel did not write what a variant's name promises."""
    def hdr(name):
        return raw_header(VARIANTS / name)

    for name in DTYPE_DATA:
        assert hdr(f"dtype-{name}.nii.gz").get_data_dtype().name == name, name
    h = hdr("scaled-int16.nii.gz")
    assert (float(h["scl_slope"]), float(h["scl_inter"])) == (2.5, -10.0)
    h = hdr("scaled-zero-slope-int16.nii.gz")
    assert (float(h["scl_slope"]), float(h["scl_inter"])) == (0.0, 5.0)
    assert hdr("bigendian-int16.nii.gz").endianness == ">"
    with open(VARIANTS / "plain-float32.nii", "rb") as fh:
        assert fh.read(4) == (348).to_bytes(4, "little")
    codes = {  # name: (qform_code, sform_code)
        "sform-only.nii.gz": (0, 1),
        "qform-only-rot.nii.gz": (1, 0),
        "qform-only-qfac-neg.nii.gz": (1, 0),
        "no-qform-no-sform.nii.gz": (0, 0),
        "sform2-qform1-disagree.nii.gz": (1, 2),
    }
    for name, qs in codes.items():
        h = hdr(name)
        assert (int(h["qform_code"]), int(h["sform_code"])) == qs, name
    assert float(hdr("qform-only-qfac-neg.nii.gz")["pixdim"][0]) == -1.0
    assert float(hdr("qform-only-rot.nii.gz")["pixdim"][0]) == 1.0
    assert float(hdr("extension-comment.nii.gz")["vox_offset"]) > 352
    for ax in ("LPS", "PSR", "LAS", "ASL"):
        img = nib.load(str(VARIANTS / f"orient-{ax}.nii.gz"))
        assert "".join(nib.aff2axcodes(img.affine)) == ax, ax
    assert isinstance(hdr("nifti2-float32.nii.gz"), nib.Nifti2Header)
    assert list(hdr("4d-singleton-int16.nii.gz")["dim"][:5]) == [4, 7, 8, 9, 1]


def main():
    os.chdir(REPO)
    generate_variants()
    check_variants()

    entries = []
    for p in sorted((DATA / "t1w").glob("*.nii.gz")):
        entries.append(describe(p, "real T1w scan (tests/data/t1w)"))
    for name in sorted(VARIANT_DESCRIPTIONS):
        entries.append(describe(VARIANTS / name, VARIANT_DESCRIPTIONS[name]))

    out = {
        "generator": "scripts/nibabel_expected.py",
        "nibabel_version": nib.__version__,
        "numpy_version": np.__version__,
        "sample_index_rule": "zeros; dim//2 per axis; axis a -> min(a+1, dim_a-1)",
        "files": entries,
    }
    OUT_JSON.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")

    total = sum(p.stat().st_size for p in VARIANTS.iterdir())
    print(f"wrote {len(VARIANT_DESCRIPTIONS)} variants ({total} bytes) and {OUT_JSON.relative_to(REPO)}"
          f" ({len(entries)} entries)", file=sys.stderr)


if __name__ == "__main__":
    main()
