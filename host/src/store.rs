//! Opening the embedded store from the command line: directly when no
//! controller holds it, otherwise through the running controller's API
//! (its address is written next to the store by `weir run`).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir::cluster::{Cluster, DurableCluster, RemoteCluster};

/// Where `weir run` writes its API address for the store at `store`.
pub fn address_file(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".addr");
    PathBuf::from(name)
}

/// Opens `store` for reading and writing.
pub fn open(store: &Path) -> Result<Arc<dyn Cluster>> {
    if let Some(parent) = store.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match DurableCluster::open(store) {
        Ok(cluster) => Ok(Arc::new(cluster)),
        Err(e) if e.to_string().to_lowercase().contains("already open") => {
            Ok(Arc::new(controller_api(store)?))
        }
        Err(e) => bail!("opening the store {}: {e}", store.display()),
    }
}

/// The API of the controller `weir run` runs on `store` (its address and
/// token are written next to the store).
pub fn controller_api(store: &Path) -> Result<RemoteCluster> {
    let file = address_file(store);
    let address = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "no controller runs on {}: {} (written by `weir run`) is missing",
            store.display(),
            file.display()
        )
    })?;
    let token_path = weir::api::token::token_file(store);
    let token = std::fs::read_to_string(&token_path).with_context(|| {
        format!(
            "{} is held by a running controller, whose API needs the token in {}; run weir as the user that runs `weir run`",
            store.display(),
            token_path.display()
        )
    })?;
    Ok(RemoteCluster::new(
        format!("http://{}", address.trim()),
        Some(token.trim().to_string()),
    ))
}
