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
    /// An internal error: a panic (a bug) or a failure of the watcher's
    /// own machinery (the async runtime, an HTTP client that cannot be
    /// built). Not a failed purge: what was purged is in the log and the
    /// store. 70 is `EX_SOFTWARE` of sysexits.h.
    Internal = 70,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The message a panic carried (`panic!` with a literal or a format), or
/// "a panic" when it carried something else.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_has_its_own_code_and_outranks_the_others() {
        assert_eq!(Exit::Internal.code(), 70);
        for e in [Exit::Ok, Exit::PurgeFailed, Exit::Usage, Exit::Withheld] {
            assert_eq!(e.max(Exit::Internal), Exit::Internal);
            assert_ne!(e.code(), Exit::Internal.code());
        }
    }

    #[test]
    fn a_panic_says_what_it_carried() {
        let literal = std::panic::catch_unwind(|| panic!("a bug")).unwrap_err();
        assert_eq!(panic_message(&*literal), "a bug");
        let formatted = std::panic::catch_unwind(|| panic!("bug {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*formatted), "bug 7");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(&*other), "a panic");
    }
}
