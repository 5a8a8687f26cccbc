//! `.txt` lists of particle stacks: one `.mrcs` path per line (cryoDRGN's `TxtFileSource`).
//! Blank lines and lines starting with `#` are skipped. Relative paths are kept as written;
//! the dataset layer resolves them against the list's folder (and `--datadir`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Parse the text of a stack list.
pub fn parse(text: &str) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() {
        return Err(Error::malformed(
            "stack list",
            "no stack paths (expected one .mrcs path per line)",
        ));
    }
    Ok(paths)
}

/// Read a stack list from a file.
pub fn read(path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let path = path.as_ref();
    let bytes = super::atomic::read_bytes(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Error::format(
            path,
            format!(
                "not a text file (invalid UTF-8 at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    parse(text).map_err(|e| e.in_file(path))
}

/// Write a stack list (atomically), one path per line.
pub fn write(path: impl AsRef<Path>, stacks: &[PathBuf]) -> Result<()> {
    let mut text = String::new();
    for s in stacks {
        text.push_str(&s.to_string_lossy());
        text.push('\n');
    }
    super::atomic::write_bytes(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips_blank_and_comments() {
        let p = parse("a.mrcs\n\n# note\n  /abs/b.mrcs  \r\n").unwrap();
        assert_eq!(
            p,
            vec![PathBuf::from("a.mrcs"), PathBuf::from("/abs/b.mrcs")]
        );
        assert!(parse("\n\n").is_err());
    }
}
