//! Stopping training within seconds of a signal. A forward and backward pass cannot be
//! interrupted and takes minutes on a CPU (the `cpu` configuration's autoencoder pass ~150 s on
//! flex, and an optimiser step is two of them), while schedulers kill 30 s after SIGTERM. So after
//! every optimiser step a stage leaves here what its checkpoint at that step would be (clones:
//! tensors are shared, not copied), and a watcher thread, once the stop flag is up, writes it and
//! hands over to the caller's [`StopHandler`], which ends the process. The stage's own checkpoint
//! writes and the watcher's take turns (one lock), so no checkpoint mixes files of two steps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::data::TrainingError;

/// Writes the checkpoint of the last optimiser step; returns that step.
pub(crate) type PendingCheckpoint = Box<dyn FnOnce() -> Result<usize, TrainingError> + Send>;

/// Called by the watcher once the stop flag is up and the last optimiser step's checkpoint is
/// on disk (`Some(step)`), or when no step was taken since the stage started (`None`). It is
/// expected to end the process (exit 130).
#[derive(Clone)]
pub struct StopHandler(Arc<dyn Fn(Option<usize>) + Send + Sync>);

impl StopHandler {
    /// A handler.
    pub fn new(f: impl Fn(Option<usize>) + Send + Sync + 'static) -> Self {
        StopHandler(Arc::new(f))
    }
}

impl std::fmt::Debug for StopHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopHandler")
    }
}

/// Where a stage leaves its latest checkpoint-to-be, and the lock checkpoint writes take.
#[derive(Clone, Default)]
pub(crate) struct CheckpointSlot {
    pending: Arc<Mutex<Option<PendingCheckpoint>>>,
    writing: Arc<Mutex<()>>,
}

impl std::fmt::Debug for CheckpointSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointSlot")
    }
}

impl CheckpointSlot {
    /// Replaces what the watcher would write.
    pub(crate) fn offer(&self, pending: PendingCheckpoint) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(pending);
    }

    /// Forgets it (a stage ended: its final checkpoint is written).
    pub(crate) fn clear(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Held while a checkpoint is written.
    pub(crate) fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The watcher thread; stops (without acting) when dropped.
pub(crate) struct Watcher {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Watches `stop` every 100 ms.
    pub(crate) fn start(stop: Arc<AtomicBool>, slot: CheckpointSlot, handler: StopHandler) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&done);
        let thread = std::thread::spawn(move || {
            while !finished.load(Ordering::SeqCst) {
                if stop.load(Ordering::SeqCst) {
                    tracing::warn!(
                        "stop requested: writing the checkpoint of the last optimiser step, then stopping"
                    );
                    let pending = slot
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    let _writing = slot.writing();
                    let saved = match pending.map(|write| write()) {
                        Some(Ok(step)) => Some(step),
                        Some(Err(e)) => {
                            tracing::error!("could not write the checkpoint on stop: {e}");
                            None
                        }
                        None => None,
                    };
                    (handler.0)(saved);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watcher {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_writes_the_latest_offer_on_a_stop_and_hands_over() {
        let stop = Arc::new(AtomicBool::new(false));
        let slot = CheckpointSlot::default();
        let handed = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&handed);
        let watcher = Watcher::start(
            Arc::clone(&stop),
            slot.clone(),
            StopHandler::new(move |step| seen.lock().unwrap().push(step)),
        );
        let written = Arc::new(Mutex::new(Vec::new()));
        for step in [2usize, 4] {
            let w = Arc::clone(&written);
            slot.offer(Box::new(move || {
                w.lock().unwrap().push(step);
                Ok(step)
            }));
        }
        // A stage's own checkpoint write holds the lock: the watcher waits for it.
        let held = slot.writing();
        stop.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            handed.lock().unwrap().is_empty(),
            "wrote while a save held the lock"
        );
        drop(held);
        let t0 = std::time::Instant::now();
        while handed.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Only the latest offer is written, once, and the handler is told its step.
        assert_eq!(*written.lock().unwrap(), vec![4]);
        assert_eq!(*handed.lock().unwrap(), vec![Some(4)]);
        drop(watcher);
    }

    #[test]
    fn a_stop_before_any_step_hands_over_none_and_a_finished_watcher_does_nothing() {
        let stop = Arc::new(AtomicBool::new(true));
        let handed = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&handed);
        let watcher = Watcher::start(
            Arc::clone(&stop),
            CheckpointSlot::default(),
            StopHandler::new(move |step| seen.lock().unwrap().push(step)),
        );
        let t0 = std::time::Instant::now();
        while handed.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*handed.lock().unwrap(), vec![None]);
        drop(watcher);
        let quiet = Arc::new(Mutex::new(Vec::<Option<usize>>::new()));
        let q = Arc::clone(&quiet);
        let never = Arc::new(AtomicBool::new(false));
        drop(Watcher::start(
            never,
            CheckpointSlot::default(),
            StopHandler::new(move |s| q.lock().unwrap().push(s)),
        ));
        assert!(quiet.lock().unwrap().is_empty());
    }
}
