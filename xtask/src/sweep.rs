//! Removing network namespaces that killed test runs left behind.

/// Removes `/run/netns/cnkt-<pid>-...` entries whose creating process is gone.
pub(crate) fn run() -> Result<(), String> {
    let removed = cnikit_test_support::netns::sweep().map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: removed {} leftover namespace(s): {removed:?}",
        removed.len()
    );
    Ok(())
}
