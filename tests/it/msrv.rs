//! The declared minimum Rust version (`rust-version` in Cargo.toml) holds
//! for what this build pulls in: no locked dependency declares a newer one.
//! (Clippy's `incompatible_msrv`, denied in `[lints]`, checks our own use of
//! the standard library against it; CI runs clippy with `-D warnings`.)
//! Compiling with that exact toolchain is not possible on a machine that
//! has one toolchain; these two checks are what such a machine can do.

use std::process::Command;

fn version(v: &str) -> Vec<u64> {
    v.split('.')
        .map(|p| p.parse().expect("a numeric version part"))
        .collect()
}

/// `1.91` and `1.91.0` are the same version.
fn newer(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (version(a), version(b));
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    a > b
}

#[test]
fn no_dependency_needs_a_newer_rust_than_the_declared_msrv() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let ours = env!("CARGO_PKG_RUST_VERSION");
    assert!(!ours.is_empty(), "Cargo.toml declares no rust-version");
    let packages = meta["packages"].as_array().expect("packages");
    assert!(packages.len() > 50, "too few packages to be this build's");
    let too_new: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            newer(needs, ours).then(|| format!("{} {} needs {needs}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "declared rust-version {ours}, but: {too_new:?}"
    );
}

#[test]
fn versions_compare_by_number_not_by_text() {
    assert!(newer("1.100", "1.91"));
    assert!(newer("1.91.1", "1.91"));
    assert!(!newer("1.91.0", "1.91"));
    assert!(!newer("1.9", "1.91"));
}
