//! The crate's one atomic file writer: every file hcld writes (derivatives, model artefacts,
//! training checkpoints in the work directory, simulated datasets) goes through a hidden
//! temporary name in its final folder, is synced, then renamed into place, so an interrupted run
//! never leaves a file that looks finished. [`write_atomic`] is for files outside OUTPUT_DIR;
//! inside it, `DerivativesDataset` adds the containment check ([`write_contained`]).

use std::fs::File;
use std::path::Path;

use super::DerivativesError;

/// Prefix of temporary files; hidden, so BIDS tools and hcld's own index skip leftovers.
pub(super) const TMP_PREFIX: &str = ".hcldtmp-";

/// Writes `bytes` to `dest` atomically, creating its folder (for files outside OUTPUT_DIR: the
/// work directory's checkpoints, a simulated dataset).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), DerivativesError> {
    write_atomic_with(dest, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| crate::os_error::describe_write(&e))
    })
}

/// Writes `dest` atomically through `write`, which fills the temporary path it is given (whose
/// name ends in the final name, so writers that pick the format from the extension see it).
pub fn write_atomic_with(
    dest: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), DerivativesError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let elsewhere = |reason: String| DerivativesError::Elsewhere {
        path: dest.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        elsewhere(format!(
            "cannot create its folder: {}",
            crate::os_error::describe_write(&e)
        ))
    })?;
    // The same write as inside OUTPUT_DIR; only the advice in the error differs.
    through_temporary(dir, dest, write).map_err(|e| match e {
        DerivativesError::CannotCreate { source, .. } => {
            elsewhere(crate::os_error::describe_write(&source))
        }
        DerivativesError::Write { reason, .. } => elsewhere(reason),
        other => other,
    })
}

/// Writes `bytes` to `dest` atomically, refusing when `dest`'s folder resolves outside `root`
/// (for the work directory: a `train -> /data/bids` link planted there must not lead a
/// checkpoint into BIDS_DIR). `root` is created if needed.
pub fn write_within(root: &Path, dest: &Path, bytes: &[u8]) -> Result<(), DerivativesError> {
    let elsewhere = |reason: String| DerivativesError::Elsewhere {
        path: dest.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(root).map_err(|e| {
        elsewhere(format!(
            "cannot create {}: {}",
            root.display(),
            crate::os_error::describe_write(&e)
        ))
    })?;
    let resolved_root = std::fs::canonicalize(root)
        .map_err(|e| elsewhere(format!("cannot resolve {}: {e}", root.display())))?;
    write_contained(&resolved_root, dest, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| crate::os_error::describe_write(&e))
    })
    .map_err(|e| match e {
        DerivativesError::OutsideOutputDir {
            path,
            resolved,
            root,
        } => DerivativesError::OutsideFolder {
            path,
            resolved,
            root,
        },
        DerivativesError::CannotCreate { source, .. } => {
            elsewhere(crate::os_error::describe_write(&source))
        }
        DerivativesError::Write { reason, .. } => elsewhere(reason),
        other => other,
    })
}

/// Removes every temporary file a killed writer left in `dir` (its final names all). Only for
/// folders whose writers hold a lock the caller holds too.
pub fn remove_temporaries(dir: &Path) {
    remove_temporaries_in(dir, "");
}

/// Removes `dir`'s temporary files (`.hcldtmp-<random>-<final name>`) whose final name starts with
/// `prefix`.
pub(super) fn remove_temporaries_in(dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        let final_name = n
            .strip_prefix(TMP_PREFIX)
            .and_then(|r| r.split_once('-'))
            .map(|(_, f)| f);
        if final_name.is_some_and(|f| f.starts_with(prefix)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `dest` through a hidden temporary file in the same folder (so the rename is atomic),
/// synced before the rename; the temporary is removed if writing fails. Temporary names are random
/// (`.hcldtmp-<random>-<final name>`): parallel containers all run as PID 1, so a PID is no key.
/// The folder must resolve to a path under `resolved_root` (OUTPUT_DIR with its symlinks
/// resolved): a symlink planted inside OUTPUT_DIR (say `sub-01 -> /data/bids/sub-01`) never
/// leads to a write elsewhere. The final name itself is replaced by the rename, never followed.
pub(super) fn write_contained(
    resolved_root: &Path,
    dest: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), DerivativesError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    create_dir_contained(resolved_root, dir, dest)?;
    through_temporary(dir, dest, write)
}

/// Creates `dir` (a folder `for_path` goes into) once its first existing ancestor resolves to a
/// path under `resolved_root`: only folders under the root are created, and a symlinked folder is
/// caught before anything is created through it.
pub(super) fn create_dir_contained(
    resolved_root: &Path,
    dir: &Path,
    for_path: &Path,
) -> Result<(), DerivativesError> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    let resolved = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    if !resolved.starts_with(resolved_root) {
        return Err(DerivativesError::OutsideOutputDir {
            path: for_path.to_path_buf(),
            resolved,
            root: resolved_root.to_path_buf(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| DerivativesError::CannotCreate {
        path: dir.to_path_buf(),
        source: e,
    })
}

/// The write itself: a temporary in `dir` (which exists), filled, synced, renamed to `dest`.
fn through_temporary(
    dir: &Path,
    dest: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), DerivativesError> {
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The temporary keeps the final name as its tail, so writers that pick the format from the
    // extension (`.nii.gz`) see the right one. The random part has no `-`, so the tail is
    // recoverable.
    let tmp = temp_builder()
        .rand_bytes(10)
        .suffix(&format!("-{file_name}"))
        .tempfile_in(dir)
        .map_err(|e| DerivativesError::CannotCreate {
            path: dir.to_path_buf(),
            source: e,
        })?
        .into_temp_path();
    let werr = |reason: String| DerivativesError::Write {
        path: dest.to_path_buf(),
        reason,
    };
    write(&tmp).map_err(werr)?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| werr(crate::os_error::describe_write(&e)))?;
    tmp.persist(dest)
        .map_err(|e| werr(crate::os_error::describe_write(&e.error)))?;
    Ok(())
}

/// Temporary files in OUTPUT_DIR: hidden prefix, and created with mode 0666 less the umask like any
/// other file (tempfile's default, 0600, would make shared outputs unreadable to the group).
pub(super) fn temp_builder<'a, 'b>() -> tempfile::Builder<'a, 'b> {
    let mut b = tempfile::Builder::new();
    b.prefix(TMP_PREFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/file.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .collect();
        assert!(left.is_empty());
    }
}
