//! The exit-code table and the settings' error, which carries its status. Every other typed
//! error maps to an [`ExitStatus`] in its own `exit_status` (`PipelineError`, `MethodError`,
//! `JobError`); no other code chooses a status.

/// Exit codes of the BIDS execution specification (and sysexits for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: everything selected was processed.
    Success = 0,
    /// 1: some subjects failed (the others completed).
    SomeFailed = 1,
    /// 16: the input dataset failed validation.
    InvalidInput = 16,
    /// 17: unknown analysis level.
    UnknownLevel = 17,
    /// 18: the participant/session labels or filters selected nothing.
    NothingSelected = 18,
    /// 64: command-line usage error.
    Usage = 64,
    /// 65: input data unusable.
    DataError = 65,
    /// 66: an input file or folder does not exist.
    NoInput = 66,
    /// 73: an output cannot be created.
    CannotCreate = 73,
    /// 74: an I/O error.
    IoError = 74,
    /// 130: stopped by Ctrl-C or SIGTERM; finished outputs are kept, a re-run resumes.
    Interrupted = 130,
}

impl ExitStatus {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A setting that cannot be used, with the exit status it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SettingsError {
    /// Exit status.
    pub status: ExitStatus,
    /// One-line message naming the argument or file and the fix.
    pub message: String,
}

impl SettingsError {
    /// A usage error (64): the argument is wrong.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::Usage, message)
    }

    /// A missing input (66): the file or folder named does not exist.
    pub fn no_input(message: impl Into<String>) -> Self {
        Self::new(ExitStatus::NoInput, message)
    }

    /// An error with an explicit status.
    pub fn new(status: ExitStatus, message: impl Into<String>) -> Self {
        SettingsError {
            status,
            message: message.into(),
        }
    }
}
