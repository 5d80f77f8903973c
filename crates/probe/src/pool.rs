//! The threads [`probe`](crate::probe) runs parsers on. Each probe gets a thread of its
//! own, so that a parser stuck past its time budget can be abandoned; but creating one
//! per file (a stack mapped and unmapped, a clone) cost more system time than probing
//! most images. A thread that finishes its job waits here for the next one instead; one
//! still busy with an abandoned job is simply not idle, and a new thread is made when
//! none is. At most [`MAX_IDLE`] wait; the rest end.

use std::io;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, PoisonError};
use std::thread;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Idle threads kept: enough for the probes a worker runs at once.
const MAX_IDLE: usize = 32;

static IDLE: Mutex<Vec<Sender<Job>>> = Mutex::new(Vec::new());

/// Runs `job` on an idle probe thread, or on a new one. `job` must not unwind (wrap it
/// in `catch_unwind`): a thread whose job panicked would not come back.
pub(crate) fn execute(job: Job) -> io::Result<()> {
    let mut job = job;
    loop {
        let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match idle {
            // A thread that ended after queueing itself hands the job back.
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(returned) => job = returned.0,
            },
            None => return spawn(job),
        }
    }
}

fn spawn(first: Job) -> io::Result<()> {
    let (tx, rx) = channel::<Job>();
    thread::Builder::new().name("probe".into()).spawn(move || serve(first, tx, rx))?;
    Ok(())
}

fn serve(first: Job, tx: Sender<Job>, rx: Receiver<Job>) {
    first();
    loop {
        {
            let mut idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push(tx.clone());
        }
        match rx.recv() {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;
    use std::time::Duration;

    use super::*;

    #[test]
    fn threads_are_reused_and_a_busy_one_is_not_waited_for() {
        let (done, finished) = sync_channel(8);
        let ids = std::sync::Arc::new(Mutex::new(Vec::new()));
        for _ in 0..3 {
            let (done, ids) = (done.clone(), ids.clone());
            execute(Box::new(move || {
                ids.lock().unwrap().push(thread::current().id());
                done.send(()).unwrap();
            }))
            .unwrap();
            finished.recv_timeout(Duration::from_secs(5)).unwrap();
            // Let the thread queue itself as idle again.
            thread::sleep(Duration::from_millis(20));
        }
        let ids = ids.lock().unwrap().clone();
        assert!(ids.windows(2).any(|w| w[0] == w[1]), "no thread was reused: {ids:?}");

        // A thread stuck in its job does not block the next one.
        let (release, stuck) = sync_channel::<()>(1);
        execute(Box::new(move || {
            let _ = stuck.recv();
        }))
        .unwrap();
        let done2 = done.clone();
        execute(Box::new(move || done2.send(()).unwrap())).unwrap();
        finished.recv_timeout(Duration::from_secs(5)).unwrap();
        release.send(()).unwrap();
    }
}
