//! The exit codes of `once` and `audit` (and `run` at start), as the contract
//! names them.

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// The pass completed; every purge that was due succeeded (or would have).
    Ok = 0,
    /// The pass completed, but at least one purge call failed.
    PurgeFailed = 1,
    /// Usage or configuration error: nothing was probed and nothing purged.
    Usage = 2,
    /// A safety guard withheld purges.
    Withheld = 3,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}
