//! Following the change log: the loop every in-memory view of the store (the proxy's
//! catalog, the DNS view) runs.

use std::sync::Arc;
use std::time::Duration;

use crate::{Result, Store};

/// Calls `catch_up` whenever the store's revision moves, until `shutdown` resolves.
/// `catch_up` applies what changed since its view and returns whether there was anything
/// (it is called again at once while there was). When it fails, its view stays as it was and
/// it is retried with a backoff doubling from 50 ms to 5 s; `what` names the view in the
/// message.
pub async fn follow(
    store: Arc<dyn Store>,
    what: &str,
    mut catch_up: impl FnMut(&dyn Store) -> Result<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    const FIRST: Duration = Duration::from_millis(50);
    let mut rx = store.subscribe();
    tokio::pin!(shutdown);
    let mut backoff = FIRST;
    loop {
        match catch_up(store.as_ref()) {
            Ok(true) => {
                backoff = FIRST;
                continue;
            }
            Ok(false) => backoff = FIRST,
            Err(e) => {
                eprintln!("{what} update failed (keeping the last view): {e}");
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}
