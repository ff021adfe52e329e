//! A reactor's links to the other reactors: a bounded queue from this core to each other core,
//! `post` and `invoke`, which run a closure on the core that owns some state and bring the
//! answer back, and `broadcast`, which runs one on every core. It knows nothing of what the
//! cores hold: that state (the broker's `Shard`) is the type parameter `S`.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// Jobs waiting in one core-pair queue before the sender waits: backpressure between cores.
pub const CROSS_CORE_QUEUE_DEPTH_MAX: usize = 1024;

/// Work sent to another core: a closure that builds a future on the target core from that
/// core's state, so the future itself (which holds `Rc`s and is not `Send`) never crosses
/// threads.
pub type Job<S> = Box<dyn FnOnce(Rc<S>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The sending ends of every core-pair queue, `[from][to]` (none from a core to itself).
pub type Outboxes<S> = Vec<Vec<Option<flume::Sender<Job<S>>>>>;
/// The receiving ends, `[to]`: every queue into that core.
pub type Inboxes<S> = Vec<Vec<flume::Receiver<Job<S>>>>;
/// One core's ends of the mesh: its sending ends (by target) and its receiving ends.
pub type CoreQueues<S> = (
    Vec<Option<flume::Sender<Job<S>>>>,
    Vec<flume::Receiver<Job<S>>>,
);

/// The `cores × cores` bounded queues.
pub fn mesh<S>(cores: usize) -> (Outboxes<S>, Inboxes<S>) {
    let mut outboxes: Outboxes<S> = (0..cores)
        .map(|_| (0..cores).map(|_| None).collect())
        .collect();
    let mut inboxes: Inboxes<S> = (0..cores).map(|_| Vec::new()).collect();
    for (from, row) in outboxes.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (sender, receiver) = flume::bounded(CROSS_CORE_QUEUE_DEPTH_MAX);
                *slot = Some(sender);
                inboxes[to].push(receiver);
            }
        }
    }
    (outboxes, inboxes)
}

/// Runs every job that arrives on `inboxes` as a task of the calling reactor, with `state`.
pub fn serve_inboxes<S: 'static>(state: Rc<S>, inboxes: Vec<flume::Receiver<Job<S>>>) {
    for inbox in inboxes {
        let state = state.clone();
        compio::runtime::spawn(async move {
            while let Ok(job) = inbox.recv_async().await {
                compio::runtime::spawn(job(state.clone())).detach();
            }
        })
        .detach();
    }
}

/// One core's sending ends.
pub struct Reactor<S> {
    id: usize,
    outboxes: Vec<Option<flume::Sender<Job<S>>>>,
}

impl<S: 'static> Reactor<S> {
    pub fn new(id: usize, outboxes: Vec<Option<flume::Sender<Job<S>>>>) -> Self {
        debug_assert!(id < outboxes.len());
        debug_assert!(outboxes[id].is_none(), "a core has no queue to itself");
        Self { id, outboxes }
    }

    pub fn id(&self) -> usize {
        self.id
    }

    /// How many cores there are, this one included.
    pub fn cores(&self) -> usize {
        self.outboxes.len()
    }

    /// Runs `work` on core `target` and returns its answer. On the calling core (whose state
    /// is `this`) it runs inline; otherwise it travels through the bounded queue for this
    /// core pair. `None` when the target cannot be reached.
    pub async fn invoke<T, F, Fut>(&self, this: &Rc<S>, target: usize, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<S>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.post(this, target, work).await.await
    }

    /// Hands `work` to core `target` and returns once it is queued there, with a future for
    /// its answer. `work` itself (not the future it returns) runs in queue order: on the
    /// target core as the job is taken off the queue, or right away on the calling core.
    /// Whatever it does synchronously, such as taking a turn, is therefore ordered by when
    /// it was posted.
    pub async fn post<T, F, Fut>(
        &self,
        this: &Rc<S>,
        target: usize,
        work: F,
    ) -> Pin<Box<dyn Future<Output = Option<T>>>>
    where
        T: Send + 'static,
        F: FnOnce(Rc<S>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if target == self.id {
            let running = work(this.clone());
            return Box::pin(async move { Some(running.await) });
        }
        let (reply, answer) = flume::bounded(1);
        let job: Job<S> = Box::new(move |state| {
            let running = work(state);
            Box::pin(async move {
                // The asker may have gone (connection closed); the answer is then dropped.
                let _ = reply.send(running.await);
            })
        });
        let Some(outbox) = self.outboxes.get(target).and_then(Option::as_ref) else {
            return Box::pin(async { None });
        };
        if outbox.send_async(job).await.is_err() {
            return Box::pin(async { None });
        }
        Box::pin(async move { answer.recv_async().await.ok() })
    }

    /// Runs `work` on every core side by side: each job is posted before any answer is
    /// awaited, so the whole takes as long as the slowest core, not the sum. Answers come in
    /// core order; `None` where a core could not be reached.
    pub async fn broadcast<T, F, Fut>(&self, this: &Rc<S>, work: F) -> Vec<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(Rc<S>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let mut answers = Vec::with_capacity(self.cores());
        for target in 0..self.cores() {
            answers.push(self.post(this, target, work.clone()).await);
        }
        futures_util::future::join_all(answers).await
    }

    /// Jobs waiting in each of this core's outgoing queues: (target core, depth).
    pub fn outbox_depths(&self) -> Vec<(usize, usize)> {
        let outboxes = self.outboxes.iter().enumerate();
        outboxes
            .filter_map(|(target, outbox)| Some((target, outbox.as_ref()?.len())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_of_cores_has_one_queue_each_way() {
        let (outboxes, inboxes) = mesh::<()>(3);
        for (from, row) in outboxes.iter().enumerate() {
            for (to, slot) in row.iter().enumerate() {
                assert_eq!(slot.is_some(), from != to, "{from} -> {to}");
            }
        }
        assert!(inboxes.iter().all(|queues| queues.len() == 2));
    }

    #[test]
    fn a_job_runs_on_its_target_with_the_targets_state() {
        let (mut outboxes, mut inboxes) = mesh::<usize>(2);
        let here = Reactor::new(0, std::mem::take(&mut outboxes[0]));
        let there_inboxes = std::mem::take(&mut inboxes[1]);
        let runtime = compio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let (this, that) = (Rc::new(10usize), Rc::new(20usize));
            serve_inboxes(that, there_inboxes);
            assert_eq!(
                here.invoke(&this, 0, |s| async move { *s + 1 }).await,
                Some(11)
            );
            assert_eq!(
                here.invoke(&this, 1, |s| async move { *s + 1 }).await,
                Some(21)
            );
            let all = here.broadcast(&this, |s| async move { *s * 2 }).await;
            assert_eq!(all, vec![Some(20), Some(40)]);
        });
    }
}
