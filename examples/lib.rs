//! Helpers shared by the `pinowner` examples (`contig_failure`,
//! `io_uring_buffers`). The examples themselves are the package's
//! `[[example]]` targets.

use std::path::PathBuf;

/// Where an example writes a file named `name` (an SVG map, a JSON report):
/// the directory in `PINOWNER_OUT` if set, else `pinowner-examples` under the
/// system's temporary directory. The directory is created if missing.
///
/// # Errors
///
/// The I/O error if the directory cannot be created.
pub fn output_path(name: &str) -> std::io::Result<PathBuf> {
    let dir = match std::env::var_os("PINOWNER_OUT") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join("pinowner-examples"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn output_path_names_a_file_in_an_existing_directory() {
        let path = super::output_path("probe.txt").unwrap();
        assert_eq!(path.file_name().unwrap(), "probe.txt");
        assert!(path.parent().unwrap().is_dir());
    }
}
