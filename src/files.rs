//! Files read and placed by the config and the stores: a leaf module, so
//! that neither depends on the other for it.

use std::path::Path;

/// Reads a text file of at most `cap` bytes, refusing what is not a regular
/// file (a FIFO would hang the read, `/dev/zero` would never end) and a
/// leading byte-order mark removed.
pub fn read_text(path: &Path, cap: u64) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    // `stat` before `open`: opening a FIFO blocks until a writer comes.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a device, FIFO or folder cannot be read as one)",
        ));
    }
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than the {cap} bytes allowed"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

/// The folder a file is in, which paths relative to the file start from:
/// its parent, or `.` for a bare file name.
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
