//! The build queue: at most one build (and the run that follows it) per
//! core at a time. Each of the `n` slots has a scratch directory and a cargo
//! target directory of its own, so that builds in different slots never wait
//! for each other's cargo lock, and a listing built in a slot before is
//! rebuilt there incrementally. Requests wait in arrival order; a waiting
//! request is told its place whenever it changes, and a request that goes
//! away leaves the queue.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Why a request could not join the queue.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull {
    /// How many requests were already waiting.
    pub waiting: usize,
}

struct State {
    /// For each slot: busy, and the packages built there before.
    slots: Vec<(bool, HashSet<String>)>,
    waiting: VecDeque<u64>,
    next_ticket: u64,
}

/// The queue, shared by every request.
pub struct Queue {
    state: Mutex<State>,
    changed: Notify,
    max_waiting: usize,
}

/// A slot held by one request; released when dropped.
pub struct Slot {
    queue: Arc<Queue>,
    /// The slot's index (0-based).
    pub index: usize,
    package: Option<String>,
}

impl Slot {
    /// Records that this slot now holds a build of the slot's package.
    pub fn built(&self) {
        if let Some(package) = &self.package {
            let mut state = self.queue.lock();
            state.slots[self.index].1.insert(package.clone());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.lock().slots[self.index].0 = false;
        self.queue.changed.notify_waiters();
    }
}

/// A place in the queue; leaving it (drop) before getting a slot gives the
/// place up.
pub struct Ticket {
    queue: Arc<Queue>,
    number: u64,
    done: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.queue.lock().waiting.retain(|t| *t != self.number);
            self.queue.changed.notify_waiters();
        }
    }
}

impl Queue {
    /// A queue with `slots` slots that lets at most `max_waiting` requests
    /// wait.
    pub fn new(slots: usize, max_waiting: usize) -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::new(State {
                slots: (0..slots.max(1)).map(|_| (false, HashSet::new())).collect(),
                waiting: VecDeque::new(),
                next_ticket: 0,
            }),
            changed: Notify::new(),
            max_waiting,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of slots.
    pub fn slots(&self) -> usize {
        self.lock().slots.len()
    }

    /// Joins the queue, or is refused when it is full. Nothing waits yet.
    pub fn join(self: &Arc<Queue>) -> Result<Ticket, QueueFull> {
        let mut state = self.lock();
        if state.waiting.len() >= self.max_waiting {
            return Err(QueueFull {
                waiting: state.waiting.len(),
            });
        }
        let number = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(number);
        Ok(Ticket {
            queue: Arc::clone(self),
            number,
            done: false,
        })
    }

    /// Waits for a slot, calling `place` with the ticket's place in line
    /// (1 = next) each time it changes while it waits. Prefers a slot that
    /// built `package` before.
    pub async fn wait(
        self: &Arc<Queue>,
        mut ticket: Ticket,
        package: Option<&str>,
        mut place: impl FnMut(usize),
    ) -> Slot {
        let mut told = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let position = state
                    .waiting
                    .iter()
                    .position(|t| *t == ticket.number)
                    .expect("a waiting ticket is in the queue");
                let free: Vec<usize> = (0..state.slots.len())
                    .filter(|i| !state.slots[*i].0)
                    .collect();
                if position < free.len() {
                    let index = free
                        .iter()
                        .copied()
                        .find(|i| package.is_some_and(|p| state.slots[*i].1.contains(p)))
                        .unwrap_or(free[0]);
                    state.slots[index].0 = true;
                    state.waiting.retain(|t| *t != ticket.number);
                    ticket.done = true;
                    drop(state);
                    self.changed.notify_waiters();
                    return Slot {
                        queue: Arc::clone(self),
                        index,
                        package: package.map(String::from),
                    };
                }
                let ahead = position + 1 - free.len();
                if told != Some(ahead) {
                    told = Some(ahead);
                    place(ahead);
                }
            }
            notified.await;
        }
    }

    /// How many requests wait now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[tokio::test]
    async fn requests_wait_in_order_and_are_told_their_place() {
        let _limit = TestLimit::seconds(10);
        let queue = Queue::new(1, 8);
        let first = queue.wait(queue.join().unwrap(), None, |_| {}).await;
        let second = queue.join().unwrap();
        let third = queue.join().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let q = Arc::clone(&queue);
        let tx2 = tx.clone();
        let waiting_second = tokio::spawn(async move {
            let slot = q
                .wait(second, None, |p| tx2.send(("second", p)).unwrap())
                .await;
            tx2.send(("second got", slot.index)).unwrap();
            slot
        });
        let q = Arc::clone(&queue);
        let waiting_third = tokio::spawn(async move {
            let slot = q
                .wait(third, None, |p| tx.send(("third", p)).unwrap())
                .await;
            drop(slot);
        });
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.push(rx.recv().await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, vec![("second", 1), ("third", 2)]);
        drop(first);
        assert_eq!(rx.recv().await.unwrap(), ("second got", 0));
        assert_eq!(rx.recv().await.unwrap(), ("third", 1));
        drop(waiting_second.await.unwrap());
        waiting_third.await.unwrap();
        assert_eq!(queue.waiting(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_leaver_gives_up_its_place() {
        let _limit = TestLimit::seconds(10);
        let queue = Queue::new(1, 2);
        let _held = queue.wait(queue.join().unwrap(), None, |_| {}).await;
        let a = queue.join().unwrap();
        let _b = queue.join().unwrap();
        assert_eq!(queue.join().err(), Some(QueueFull { waiting: 2 }));
        drop(a);
        assert_eq!(queue.waiting(), 1);
        assert!(queue.join().is_ok());
    }

    #[tokio::test]
    async fn a_slot_that_built_the_package_is_preferred() {
        let _limit = TestLimit::seconds(10);
        let queue = Queue::new(2, 4);
        let a = queue.wait(queue.join().unwrap(), Some("p"), |_| {}).await;
        let b = queue.wait(queue.join().unwrap(), Some("q"), |_| {}).await;
        let (ia, ib) = (a.index, b.index);
        a.built();
        b.built();
        drop(a);
        drop(b);
        let again = queue.wait(queue.join().unwrap(), Some("q"), |_| {}).await;
        assert_eq!(again.index, ib);
        assert_ne!(ia, ib);
    }
}
