//! What to tell the user about an operating-system error: its text and what to do about it,
//! chosen by its kind (a full disk, a name too long for the file system, a read-only file
//! system, missing permissions), so that no message gives a generic fix for a specific cause.

use std::io::{Error, ErrorKind};

/// ENAMETOOLONG on Linux and macOS: std reports it as `InvalidFilename` on recent toolchains and
/// as `Other` before.
const NAME_TOO_LONG: [i32; 2] = [36, 63];

/// What to do about `e` when writing.
pub fn write_advice(e: &Error) -> &'static str {
    if e.raw_os_error().is_some_and(|c| NAME_TOO_LONG.contains(&c))
        || e.kind() == ErrorKind::InvalidFilename
    {
        return "a file or folder name is longer than the file system allows (255 bytes): use shorter BIDS labels (sub-, ses-, acq-, run-)";
    }
    match e.kind() {
        ErrorKind::StorageFull => "the disk is full: free space there, or write to another disk",
        ErrorKind::QuotaExceeded => "your disk quota is used up: free space, or write elsewhere",
        ErrorKind::ReadOnlyFilesystem => {
            "the file system is read-only: give a writable folder (in containers, bind it without :ro)"
        }
        ErrorKind::NotADirectory => {
            "a part of the path is a file, not a folder: give a path whose parents are folders"
        }
        ErrorKind::PermissionDenied => {
            "this user may not write there: check the folder's owner and permissions (in containers, the -u user)"
        }
        _ => "check permissions and free disk space",
    }
}

/// `e`'s text followed by what to do about it.
pub fn describe_write(e: &Error) -> String {
    format!("{e}; {}", write_advice(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_gets_its_own_fix() {
        let full = Error::from_raw_os_error(28);
        assert!(
            describe_write(&full).contains("disk is full"),
            "{}",
            describe_write(&full)
        );
        let long = Error::from_raw_os_error(36);
        assert!(describe_write(&long).contains("shorter BIDS labels"));
        let ro = Error::from_raw_os_error(30);
        assert!(describe_write(&ro).contains("read-only"));
        let denied = Error::from_raw_os_error(13);
        assert!(describe_write(&denied).contains("owner and permissions"));
        let other = Error::other("boom");
        assert!(describe_write(&other).contains("check permissions and free disk space"));
    }
}
