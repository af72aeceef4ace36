//! The shard's read threads: a fixed set of OS threads fed by one bounded queue.
//!
//! Searches and other reads are blocking work (usearch's graph walk, scans, sled reads), so
//! they never run on the async executor. Compared with a semaphore in front of
//! `tokio::task::spawn_blocking`, the queue keeps the threads busy back to back under load: a
//! thread that finishes one read takes the next one itself, instead of idling until the async
//! side has released a permit and handed it a new task (two thread wake-ups per read, which
//! on a 2-core server cost a third of the search throughput). The queue's capacity is the
//! admission limit: a full queue refuses at once (RESOURCE_EXHAUSTED) rather than queueing
//! without bound.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    work_ready: Condvar,
    capacity: usize,
}

pub struct ReadPool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Why a read was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The queue holds `capacity` reads already.
    Full {
        capacity: usize,
    },
    Closed,
}

/// Why a queued read produced no value.
#[derive(Debug, PartialEq, Eq)]
pub struct Lost;

impl ReadPool {
    /// Starts `threads` read threads (named `read-N`) behind a queue of `capacity` reads.
    pub fn start(threads: usize, capacity: usize) -> std::io::Result<ReadPool> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::with_capacity(capacity.min(4096)),
                closed: false,
            }),
            work_ready: Condvar::new(),
            capacity: capacity.max(1),
        });
        let handles = (0..threads.max(1))
            .map(|n| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("read-{n}"))
                    .spawn(move || run_worker(&shared))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(ReadPool {
            shared,
            threads: Mutex::new(handles),
        })
    }

    /// Queues `work`; its value arrives on the returned future. A read whose caller has gone
    /// away (client cancelled, deadline passed) before a thread reached it is skipped.
    pub fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<impl std::future::Future<Output = Result<T, Lost>>, Rejected> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            if reply.is_closed() {
                return;
            }
            // A panicking read drops `reply` (its caller sees `Lost`); the thread lives on.
            if let Ok(value) = catch_unwind(AssertUnwindSafe(work)) {
                let _ = reply.send(value);
            }
        });
        {
            let mut queue = self.shared.queue.lock();
            if queue.closed {
                return Err(Rejected::Closed);
            }
            if queue.jobs.len() >= self.shared.capacity {
                return Err(Rejected::Full {
                    capacity: self.shared.capacity,
                });
            }
            queue.jobs.push_back(job);
        }
        self.shared.work_ready.notify_one();
        Ok(async move { answer.await.map_err(|_| Lost) })
    }

    /// Reads waiting for a thread.
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().jobs.len()
    }

    /// Refuses new reads, lets the threads finish what is queued, and joins them. Safe to call
    /// more than once.
    pub fn close(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.work_ready.notify_all();
        let me = std::thread::current().id();
        for handle in std::mem::take(&mut *self.threads.lock()) {
            // The last owner of the shard may be a read itself: a thread cannot join itself.
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.close();
    }
}

fn run_worker(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.queue.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                shared.work_ready.wait(&mut queue);
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    /// Occupies the pool's only thread until the returned barrier is passed (the future
    /// resolves once the read ends), so that later reads stay queued.
    async fn hold_the_thread(
        pool: &ReadPool,
    ) -> (
        Arc<Barrier>,
        impl std::future::Future<Output = Result<(), Lost>>,
    ) {
        let gate = Arc::new(Barrier::new(2));
        let held = {
            let gate = gate.clone();
            pool.submit(move || {
                gate.wait();
            })
            .unwrap()
        };
        while pool.queued() > 0 {
            tokio::task::yield_now().await;
        }
        (gate, held)
    }

    #[tokio::test]
    async fn reads_run_and_return_their_values() {
        let pool = ReadPool::start(2, 16).unwrap();
        let answers: Vec<_> = (0..10)
            .map(|i| pool.submit(move || i * 2).unwrap())
            .collect();
        let mut values = Vec::new();
        for a in answers {
            values.push(a.await.unwrap());
        }
        assert_eq!(values, (0..10).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_growing() {
        let pool = ReadPool::start(1, 2).unwrap();
        let (gate, held) = hold_the_thread(&pool).await;
        let queued: Vec<_> = (0..2).map(|i| pool.submit(move || i).unwrap()).collect();
        assert_eq!(
            pool.submit(|| 99).err(),
            Some(Rejected::Full { capacity: 2 })
        );
        gate.wait();
        held.await.unwrap();
        for (i, a) in queued.into_iter().enumerate() {
            assert_eq!(a.await.unwrap(), i);
        }
    }

    #[tokio::test]
    async fn a_panicking_read_fails_alone_and_the_thread_survives() {
        let pool = ReadPool::start(1, 4).unwrap();
        let bad = pool.submit(|| -> u32 { panic!("boom") }).unwrap();
        assert_eq!(bad.await, Err(Lost));
        assert_eq!(pool.submit(|| 7).unwrap().await, Ok(7));
    }

    #[tokio::test]
    async fn close_finishes_queued_reads_and_refuses_new_ones() {
        let pool = ReadPool::start(1, 64).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let answers: Vec<_> = (0..20)
            .map(|_| {
                let done = done.clone();
                pool.submit(move || done.fetch_add(1, Ordering::SeqCst))
                    .unwrap()
            })
            .collect();
        pool.close();
        assert_eq!(done.load(Ordering::SeqCst), 20);
        for a in answers {
            assert!(a.await.is_ok());
        }
        assert_eq!(pool.submit(|| 1).err(), Some(Rejected::Closed));
    }

    #[tokio::test]
    async fn a_read_whose_caller_left_is_skipped() {
        let pool = ReadPool::start(1, 8).unwrap();
        let (gate, held) = hold_the_thread(&pool).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let abandoned = {
            let ran = ran.clone();
            pool.submit(move || ran.fetch_add(1, Ordering::SeqCst))
                .unwrap()
        };
        drop(abandoned);
        gate.wait();
        held.await.unwrap();
        pool.close();
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
