//! Whether the crate being compiled depends on `pinowner` under another
//! name, read from its `Cargo.toml`, so that a missing `crate = ..` is an
//! error that says what to write rather than rustc's "unresolved crate
//! `pinowner`".
//!
//! The reading is deliberately narrow (a line scan, not a TOML parser, to
//! keep `toml_edit` and its dependencies out of every user's build): it
//! finds `key = { package = "pinowner", .. }` lines in a dependency table
//! and `package = "pinowner"` in a `[..dependencies.key]` table, and
//! reports a rename only when no dependency is named `pinowner` itself. A
//! rename it does not see (a workspace-inherited one, say) leaves rustc's
//! own error; it never turns a build that works into one that fails.

use std::path::Path;

/// The name `pinowner` goes by in the manifest of the crate being
/// compiled, when it is a dependency only under another name.
pub(crate) fn renamed_pinowner() -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let text = std::fs::read_to_string(Path::new(&dir).join("Cargo.toml")).ok()?;
    rename_in(&text)
}

/// The crate name (`-` read as `_`) a manifest gives `pinowner`, when it
/// renames it and has no dependency named `pinowner`.
fn rename_in(manifest: &str) -> Option<String> {
    // In a `[dependencies]`-like table; or the key of a
    // `[dependencies.key]`-like table.
    let mut in_deps = false;
    let mut dep_table: Option<String> = None;
    let mut renamed = None;
    for line in manifest.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.split(']').next().unwrap_or("").trim();
            let is_deps = |path: &str| path.ends_with("dependencies") && !path.starts_with("workspace");
            in_deps = is_deps(header);
            dep_table = header.rsplit_once('.').filter(|(path, _)| is_deps(path)).map(|(_, key)| unquote(key));
            if dep_table.as_deref() == Some("pinowner") {
                return None;
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = unquote(key);
        let value: String = value.split('#').next().unwrap_or("").chars().filter(|c| !c.is_whitespace()).collect();
        if in_deps {
            if key == "pinowner" {
                return None;
            }
            if value.contains("package=\"pinowner\"") {
                renamed = Some(key);
            }
        } else if let Some(table) = &dep_table {
            if key == "package" && value == "\"pinowner\"" {
                renamed = Some(table.clone());
            }
        }
    }
    renamed.map(|key| key.replace('-', "_"))
}

fn unquote(key: &str) -> String {
    key.trim().trim_matches(|c| c == '"' || c == '\'').to_string()
}

#[cfg(test)]
mod tests {
    use super::rename_in;

    #[test]
    fn an_inline_rename_is_found_and_dashes_read_as_underscores() {
        let manifest = "[package]\nname = \"driver\"\n\n[dependencies]\nserde = \"1\"\npage-owner = { package = \"pinowner\", version = \"0.1\" } # renamed\n";
        assert_eq!(rename_in(manifest).as_deref(), Some("page_owner"));
    }

    #[test]
    fn a_rename_in_a_dependency_table_of_its_own_is_found() {
        let manifest = "[target.'cfg(unix)'.dependencies.po]\nversion = \"0.1\"\npackage = \"pinowner\"\n";
        assert_eq!(rename_in(manifest).as_deref(), Some("po"));
    }

    #[test]
    fn no_rename_is_reported_when_pinowner_is_also_a_dependency_by_name() {
        let manifest =
            "[dependencies]\npinowner = \"0.1\"\n[dev-dependencies]\npo = { package = \"pinowner\", path = \"..\" }\n";
        assert_eq!(rename_in(manifest), None);
        let manifest = "[dependencies.pinowner]\nversion = \"0.1\"\n[dependencies]\npo = { package = \"pinowner\" }\n";
        assert_eq!(rename_in(manifest), None);
    }

    #[test]
    fn manifests_without_a_rename_report_none() {
        assert_eq!(rename_in("[dependencies]\npinowner = { path = \"pinowner\" }\n"), None);
        assert_eq!(rename_in("[dependencies]\npinowner-macros = { path = \"../pinowner-macros\" }\n"), None);
        // The workspace's table is not this crate's dependencies.
        assert_eq!(rename_in("[workspace.dependencies]\npo = { package = \"pinowner\" }\n"), None);
        assert_eq!(rename_in(""), None);
    }
}
