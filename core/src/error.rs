//! The one error type of `recovar-core`.
//!
//! Every message names what went wrong *and where*: the file, the field, and when it
//! helps, the fix. Parsers that work on bytes in memory return [`Error::Malformed`];
//! the code that opened the file turns it into [`Error::Format`] with
//! [`Error::in_file`], so a user always sees the path.

use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused a read or write of a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file whose content is malformed, truncated or of an unsupported kind.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// Malformed bytes whose file is not known yet (parsing from memory).
    /// Callers attach the path with [`Error::in_file`].
    #[error("invalid {format} data: {msg}")]
    Malformed { format: &'static str, msg: String },

    /// A file referenced by another file (or by the user) exists at none of the
    /// places it could be.
    #[error("cannot find {what}; tried: {}", list_paths(.tried))]
    NotFound { what: String, tried: Vec<PathBuf> },

    /// An argument or option given by the caller is invalid on its own.
    #[error("{0}")]
    InvalidArgument(String),

    /// Inputs that are each valid but disagree with one another
    /// (different counts, mixed box sizes, ...).
    #[error("{0}")]
    Inconsistent(String),

    /// A progress callback asked to stop.
    #[error("cancelled by the caller")]
    Cancelled,

    /// The compute device (GPU driver, runtime compiler, device memory) failed or is absent.
    #[error("{0}")]
    Device(String),
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Bad content in the file at `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// Bad content in bytes of the given format, file not yet known.
    pub fn malformed(format: &'static str, msg: impl Into<String>) -> Self {
        Error::Malformed {
            format,
            msg: msg.into(),
        }
    }

    /// An invalid argument.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// A failure of the compute device.
    pub fn device(msg: impl Into<String>) -> Self {
        Error::Device(msg.into())
    }

    /// Inputs that disagree.
    pub fn inconsistent(msg: impl Into<String>) -> Self {
        Error::Inconsistent(msg.into())
    }

    /// Attach a file path to an error raised while parsing that file's bytes.
    /// Errors that already name a file are returned unchanged.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Error::Malformed { format, msg } => Error::Format {
                path: path.to_path_buf(),
                msg: format!("not a valid {format} file: {msg}"),
            },
            other => other,
        }
    }
}

/// The message of a caught panic (`std::panic::catch_unwind`'s payload), for the language
/// boundaries that turn panics into errors (the C ABI, the Node addon).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod panic_tests {
    #[test]
    fn panic_messages_of_str_string_and_other_payloads() {
        let a = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(super::panic_message(a.as_ref()), "plain");
        let b = std::panic::catch_unwind(|| panic!("formatted {}", 7)).unwrap_err();
        assert_eq!(super::panic_message(b.as_ref()), "formatted 7");
        let c = std::panic::catch_unwind(|| std::panic::panic_any(3u8)).unwrap_err();
        assert_eq!(super::panic_message(c.as_ref()), "unknown panic");
    }
}
