//! Instance threads: each backend instance lives on its own OS thread and runs the jobs handed to
//! it, so inference never blocks the async runtime. Dropping the pool closes the job channels and
//! joins the threads.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;

use super::Backend;

pub struct WorkerPool<J> {
    senders: Vec<SyncSender<J>>,
    handles: Vec<JoinHandle<()>>,
}

impl<J: Send + 'static> WorkerPool<J> {
    /// Starts one thread per instance; `run` executes a job on the instance it was sent to.
    pub fn spawn<F>(
        name: &str,
        instances: Vec<Box<dyn Backend>>,
        run: F,
    ) -> std::io::Result<WorkerPool<J>>
    where
        F: Fn(usize, &mut dyn Backend, J) + Send + Clone + 'static,
    {
        let mut pool = WorkerPool {
            senders: Vec::new(),
            handles: Vec::new(),
        };
        for (ix, mut backend) in instances.into_iter().enumerate() {
            // Capacity 1: the batcher only sends to an idle instance, so a send never waits.
            let (tx, rx) = sync_channel::<J>(1);
            let run = run.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{name}#{ix}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        run(ix, backend.as_mut(), job);
                    }
                })?;
            pool.senders.push(tx);
            pool.handles.push(handle);
        }
        Ok(pool)
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Hands `job` to instance `ix`; gives it back if that instance is busy or gone.
    pub fn try_send(&self, ix: usize, job: J) -> Result<(), J> {
        match self.senders.get(ix) {
            Some(tx) => tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
            }),
            None => Err(job),
        }
    }
}

impl<J> Drop for WorkerPool<J> {
    fn drop(&mut self) {
        self.senders.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
