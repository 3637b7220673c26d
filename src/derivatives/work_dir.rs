//! The work directory (training checkpoints and loss curves): created before a run, and, when it
//! is the default under `$TMPDIR`, made private to the user. `$TMPDIR` is shared by everyone on a
//! cluster node, so a default folder someone else created (with a `train` link to a place of
//! theirs, say) must not receive this user's checkpoints.

use std::path::Path;

use super::DerivativesError;

/// The default work directory's name under `$TMPDIR`: one per user.
pub fn default_work_dir_name() -> String {
    format!("hcld-work-{}", rustix::process::geteuid().as_raw())
}

/// Creates the work directory `path` if needed. With `private_default` (the default under
/// `$TMPDIR`), it is created 0700 and an existing one must be a real folder (not a symbolic link)
/// owned by this user, or the run stops with the fix.
pub fn prepare_work_dir(path: &Path, private_default: bool) -> Result<(), DerivativesError> {
    let cannot = |e: std::io::Error| DerivativesError::CannotCreate {
        path: path.to_path_buf(),
        source: e,
    };
    if !private_default {
        return std::fs::create_dir_all(path).map_err(cannot);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(cannot)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(cannot(e)),
        }
        let unsafe_dir = |reason: String| DerivativesError::UnsafeWorkDir {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::symlink_metadata(path).map_err(cannot)?;
        if meta.file_type().is_symlink() || !meta.is_dir() {
            return Err(unsafe_dir(
                "it is not a folder but a symbolic link or a file".into(),
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(unsafe_dir(format!(
                "it belongs to user id {}, not to you ({me})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "others may write in it (mode {:o})",
                meta.mode() & 0o777
            )));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(path).map_err(cannot)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_default_work_dir_is_private_and_refused_when_unsafe() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path().join(default_work_dir_name());
        prepare_work_dir(&w, true).unwrap();
        let mode = std::fs::metadata(&w).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "created {mode:o}");
        // Again: an existing private folder of ours is fine.
        prepare_work_dir(&w, true).unwrap();
        // Writable by others: refused.
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_work_dir(&w, true).unwrap_err().to_string();
        assert!(e.contains("others may write") && e.contains("-w"), "{e}");
        // A link in its place: refused, and nothing created through it.
        let link = d.path().join("linked");
        let target = d.path().join("theirs");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = prepare_work_dir(&link, true).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // A folder given with -w is the user's choice: only created.
        prepare_work_dir(&link, false).unwrap();
        prepare_work_dir(&d.path().join("given/sub"), false).unwrap();
        assert!(d.path().join("given/sub").is_dir());
    }
}
