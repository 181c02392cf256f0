//! Keyward's gateway (`keyward::serve_reloadable`, what `keyward serve` runs) on the
//! system allocator, for valgrind's heap profilers: `dhat` and `massif` see malloc and
//! free, not mimalloc's own pages, so the release binary cannot be profiled by allocation
//! site. Its memory figures differ from the binary's (another allocator); the allocation
//! sites and their sizes are the same.
//!
//! ```text
//! valgrind --tool=dhat gateway-sysalloc keyward.toml
//! ```

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args().nth(1).map(PathBuf::from) else {
        return Err("usage: gateway-sysalloc CONFIG".into());
    };
    let cfg = keyward::config::Config::load(&path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = keyward::bind(cfg.listen).await?;
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        keyward::serve_reloadable(cfg, Some(path), listener, stop).await?;
        Ok(())
    })
}
