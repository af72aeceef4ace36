//! A value built from files and rebuilt when their contents change (certificates renewed by
//! the operator or cert-manager, keys rotated in a Secret). Kubernetes updates a mounted
//! Secret by swapping a symlink, so the files are compared by content, not by mtime. A
//! rebuild that fails (a half-written file, a key that does not match its certificate) keeps
//! the previous value and logs why; it is tried again at the next change.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;

use crate::tls_files::read_files;

/// How often the files are looked at.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

type Build<T> = dyn Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync;

pub struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    /// A missing file reads as empty (key files) instead of being an error (certificates).
    optional: bool,
    build: Box<Build<T>>,
    current: RwLock<(Vec<Vec<u8>>, Arc<T>)>,
    reloads: AtomicU64,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Builds the value once (an error here is a startup error) and, inside a tokio runtime,
    /// starts watching the files. The watch ends when the value is dropped.
    pub fn start(
        what: &'static str,
        paths: Vec<PathBuf>,
        optional: bool,
        build: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, String> {
        let contents = read_files(&paths, optional)?;
        let value = build(&contents)?;
        let this = Arc::new(Reloading {
            what,
            paths,
            optional,
            build: Box::new(build),
            current: RwLock::new((contents, Arc::new(value))),
            reloads: AtomicU64::new(0),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watch(Arc::downgrade(&this)));
        }
        Ok(this)
    }

    pub fn get(&self) -> Arc<T> {
        self.current.read().1.clone()
    }

    /// Successful rebuilds since the start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reads the files and rebuilds if they changed; true when a new value is in place.
    pub fn check(&self) -> bool {
        let contents = match read_files(&self.paths, self.optional) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(what = self.what, error = %e, "keeping the loaded files");
                return false;
            }
        };
        if contents == self.current.read().0 {
            return false;
        }
        match (self.build)(&contents) {
            Ok(value) => {
                *self.current.write() = (contents, Arc::new(value));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(what = self.what, "reloaded from changed files");
                true
            }
            Err(e) => {
                // Remember the contents so the same broken files are not reported every tick.
                let mut current = self.current.write();
                current.0 = contents;
                tracing::warn!(what = self.what, error = %e, "changed files are not usable; keeping the previous ones");
                false
            }
        }
    }
}

async fn watch<T: Send + Sync + 'static>(this: Weak<Reloading<T>>) {
    loop {
        tokio::time::sleep(RELOAD_INTERVAL).await;
        let Some(this) = this.upgrade() else { return };
        let checked = this.clone();
        // File reads off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(move || checked.check()).await;
    }
}
