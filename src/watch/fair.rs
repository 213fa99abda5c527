//! The order in which this replica's pollers take their turns at the poll budget: fair between
//! the callers whose streams watch them, so one caller's thousand watches cannot hold back
//! another caller's one.
//!
//! Every poller holds a [`Ticket`]: its membership, with the callers of the streams that watch
//! its resource (a caller counted once however many of its streams watch it; anonymous callers
//! share one caller, `""`). A poller that wants to make a request waits for a [`Turn`]; turns are
//! given one at a time (the holder takes its token from the budget, then lets the next one go).
//! Waiters queue per caller, in arrival order within a caller, and callers with waiters take
//! turns round-robin: deficit round robin with a quantum of one turn, since every turn is one
//! upstream request (a customer poll of several pages waits for one turn per page). So a caller
//! with one waiting poller gets its turn within one round of the callers that have waiters, one
//! grant for each, however many waiters the others queue.
//!
//! A resource watched by several callers counts for each: its waiter stands in every one of
//! their queues and takes the first turn any of them gives it (then leaves them all), so sharing
//! a resource with a busy caller never makes a caller wait longer than its own queue. When the
//! callers of a waiting poller change (streams come and go), it joins and leaves their queues
//! at once, keeping its arrival order, so it loses no turn; when its last caller leaves it stays
//! in the queue it was in until it goes (its poller stops) or another caller joins. A waiter
//! nobody watches (the gateway's own re-reads after webhooks) queues as the gateway, a caller of
//! its own that no caller's identity can name.
//!
//! Bounded by what exists: a queue per caller with waiters (an emptied queue is removed), one
//! entry per poller and per waiting turn, each removed when its ticket or turn is dropped. A
//! waiter dropped before its turn leaves every queue; a turn dropped, taken or not, passes on.
//! No caller is named outside this replica's memory (not in metrics, not in Redis).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Whose queue a waiter stands in: a caller's identity, or `None`, the gateway's own.
type Class = Option<Arc<str>>;

/// This replica's turns. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Turns {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Numbers tickets and waiters; a waiter's number is its arrival order.
    next: u64,
    members: HashMap<u64, Member>,
    waiters: HashMap<u64, Waiter>,
    /// Each class's waiters in arrival order; only classes with waiters.
    queues: HashMap<Class, BTreeSet<u64>>,
    /// The classes with waiters, in the order of their next turns.
    ring: VecDeque<Class>,
    /// The waiter whose turn it is.
    held: Option<u64>,
}

/// A ticket's callers (each with its number of streams), and its waiter if it waits.
#[derive(Debug, Default)]
struct Member {
    callers: HashMap<Arc<str>, usize>,
    waiting: Option<u64>,
}

#[derive(Debug)]
struct Waiter {
    member: u64,
    /// The classes whose queues it stands in.
    classes: Vec<Class>,
    wake: Option<oneshot::Sender<()>>,
}

/// One poller's place in the turns. Dropping it removes it.
#[derive(Debug)]
pub struct Ticket {
    turns: Turns,
    id: u64,
}

/// A turn: waited for by [`Ticket::turn`]; the next one is given when it is dropped.
#[derive(Debug)]
pub struct Turn {
    turns: Turns,
    seq: u64,
}

// === impl Turns ===

impl Turns {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ticket with no caller yet (it waits as the gateway until one joins).
    pub fn ticket(&self) -> Ticket {
        let mut state = self.lock();
        let id = state.number();
        state.members.insert(id, Member::default());
        Ticket {
            turns: self.clone(),
            id,
        }
    }

    /// Waiters for a turn, and the classes (callers, or the gateway) they queue as.
    pub fn waiting(&self) -> (usize, usize) {
        let state = self.lock();
        (state.waiters.len(), state.queues.len())
    }

    /// Each ticket's callers with their streams, sorted (for the tests).
    #[cfg(test)]
    pub(super) fn tickets(&self) -> Vec<Vec<(String, usize)>> {
        let state = self.lock();
        let mut tickets: Vec<Vec<(String, usize)>> = state
            .members
            .values()
            .map(|m| {
                let mut callers: Vec<_> =
                    m.callers.iter().map(|(c, n)| (c.to_string(), *n)).collect();
                callers.sort();
                callers
            })
            .collect();
        tickets.sort();
        tickets
    }
}

// === impl State ===

impl State {
    fn number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Puts waiter `seq` in the queues of its member's callers (see the module doc for a
    /// waiter with none).
    fn requeue(&mut self, seq: u64) {
        let Some(waiter) = self.waiters.get(&seq) else {
            return;
        };
        let mut want: Vec<Class> = self
            .members
            .get(&waiter.member)
            .map(|m| m.callers.keys().map(|c| Some(c.clone())).collect())
            .unwrap_or_default();
        if want.is_empty() {
            if !waiter.classes.is_empty() {
                return;
            }
            want.push(None);
        }
        let had = waiter.classes.clone();
        for class in had.iter().filter(|c| !want.contains(c)) {
            self.leave_queue(class, seq);
        }
        for class in want.iter().filter(|c| !had.contains(c)) {
            let queue = self.queues.entry(class.clone()).or_default();
            if queue.is_empty() {
                self.ring.push_back(class.clone());
            }
            queue.insert(seq);
        }
        if let Some(waiter) = self.waiters.get_mut(&seq) {
            waiter.classes = want;
        }
    }

    /// Takes `seq` out of `class`'s queue, and the emptied queue out of the ring.
    fn leave_queue(&mut self, class: &Class, seq: u64) {
        if let Some(queue) = self.queues.get_mut(class) {
            queue.remove(&seq);
            if queue.is_empty() {
                self.queues.remove(class);
                self.ring.retain(|c| c != class);
            }
        }
    }

    /// Gives the turn to the first waiter of the next class in the ring, if nobody holds it.
    fn grant(&mut self) {
        if self.held.is_some() {
            return;
        }
        while let Some(class) = self.ring.pop_front() {
            let Some(seq) = self.queues.get(&class).and_then(|q| q.first().copied()) else {
                continue;
            };
            let Some(waiter) = self.waiters.remove(&seq) else {
                // Never: a queued number is a waiter's; drop it rather than stall.
                self.ring.push_front(class.clone());
                self.leave_queue(&class, seq);
                continue;
            };
            for other in waiter.classes.iter().filter(|c| **c != class) {
                self.leave_queue(other, seq);
            }
            if let Some(queue) = self.queues.get_mut(&class) {
                queue.remove(&seq);
                if queue.is_empty() {
                    self.queues.remove(&class);
                } else {
                    self.ring.push_back(class);
                }
            }
            if let Some(member) = self.members.get_mut(&waiter.member) {
                member.waiting = None;
            }
            self.held = Some(seq);
            // A waiter gone meanwhile drops its turn, which passes it on (see `release`).
            if let Some(wake) = waiter.wake {
                let _ = wake.send(());
            }
            return;
        }
    }

    /// Turn `seq` is dropped: passes the turn on if it held it, else leaves its queues.
    fn release(&mut self, seq: u64) {
        if self.held == Some(seq) {
            self.held = None;
            self.grant();
            return;
        }
        if let Some(waiter) = self.waiters.remove(&seq) {
            for class in &waiter.classes {
                self.leave_queue(class, seq);
            }
            if let Some(member) = self.members.get_mut(&waiter.member) {
                member.waiting = None;
            }
        }
    }
}

// === impl Ticket ===

impl Ticket {
    /// A stream of `caller` now watches this ticket's resource.
    pub fn join(&self, caller: &Arc<str>) {
        let mut state = self.turns.lock();
        let Some(member) = state.members.get_mut(&self.id) else {
            return;
        };
        let count = member.callers.entry(caller.clone()).or_default();
        *count += 1;
        if let (1, Some(seq)) = (*count, member.waiting) {
            state.requeue(seq);
        }
    }

    /// A stream of `caller` that [`Self::join`]ed no longer watches it.
    pub fn leave(&self, caller: &Arc<str>) {
        let mut state = self.turns.lock();
        let Some(member) = state.members.get_mut(&self.id) else {
            return;
        };
        let Some(count) = member.callers.get_mut(caller) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            member.callers.remove(caller);
            if let Some(seq) = member.waiting {
                state.requeue(seq);
            }
        }
    }

    /// Waits for this ticket's next turn (one at a time per ticket).
    pub async fn turn(&self) -> Turn {
        let (wake, woken) = oneshot::channel();
        let seq = {
            let mut state = self.turns.lock();
            let seq = state.number();
            let waiter = Waiter {
                member: self.id,
                classes: Vec::new(),
                wake: Some(wake),
            };
            state.waiters.insert(seq, waiter);
            if let Some(member) = state.members.get_mut(&self.id) {
                member.waiting = Some(seq);
            }
            state.requeue(seq);
            state.grant();
            seq
        };
        // Made before the wait: a waiter dropped while it waits leaves its queues, or passes on
        // a turn given to it meanwhile.
        let turn = Turn {
            turns: self.turns.clone(),
            seq,
        };
        let _ = woken.await;
        turn
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.turns.lock().members.remove(&self.id);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.lock().release(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::task::JoinHandle;

    type Log = Arc<Mutex<Vec<String>>>;

    /// A ticket watched by one stream of each of `callers`.
    fn ticket(turns: &Turns, callers: &[&str]) -> Arc<Ticket> {
        let ticket = Arc::new(turns.ticket());
        for caller in callers {
            ticket.join(&Arc::from(*caller));
        }
        ticket
    }

    /// Queues a waiter of `ticket` (after every waiter queued before it); `label` goes to `log`
    /// when its turn comes, and the turn passes on at once.
    async fn queue(turns: &Turns, ticket: &Arc<Ticket>, label: &str, log: &Log) -> JoinHandle<()> {
        let before = turns.waiting().0;
        let (ticket, log, label) = (ticket.clone(), log.clone(), label.to_owned());
        let task = tokio::spawn(async move {
            let turn = ticket.turn().await;
            log.lock().unwrap().push(label);
            drop(turn);
        });
        while turns.waiting().0 == before {
            tokio::task::yield_now().await;
        }
        task
    }

    /// Lets the turn `held` go and waits for every task: the labels in the order of their turns.
    async fn run(held: Turn, tasks: Vec<JoinHandle<()>>, log: &Log) -> Vec<String> {
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        log.lock().unwrap().clone()
    }

    /// A turn held by a caller of its own, so the waiters queue behind it.
    async fn hold(turns: &Turns) -> (Arc<Ticket>, Turn) {
        let holder = ticket(turns, &["holder"]);
        let turn = holder.turn().await;
        (holder, turn)
    }

    #[tokio::test]
    async fn a_thousand_waiters_of_one_caller_hold_another_callers_one_back_one_turn_at_most() {
        let (turns, log) = (Turns::default(), Log::default());
        let (_holder, held) = hold(&turns).await;
        let mut tasks = Vec::new();
        let mut tickets = Vec::new();
        for n in 0..1000 {
            tickets.push(ticket(&turns, &["spiffe://a"]));
            tasks.push(queue(&turns, &tickets[n], &format!("a{n}"), &log).await);
        }
        let b = ticket(&turns, &["spiffe://b"]);
        tasks.push(queue(&turns, &b, "b", &log).await);
        assert_eq!(turns.waiting(), (1001, 2));
        let order = run(held, tasks, &log).await;
        let at = order.iter().position(|l| l == "b").unwrap();
        assert_eq!(at, 1, "b's turn came after {at} of a's: {:?}", &order[..5]);
        let a: Vec<_> = order.iter().filter(|l| *l != "b").cloned().collect();
        let arrived: Vec<_> = (0..1000).map(|n| format!("a{n}")).collect();
        assert_eq!(a, arrived, "a's waiters took their turns in arrival order");
        assert_eq!(turns.waiting(), (0, 0));
        drop((tickets, b));
        assert_eq!(
            turns.tickets(),
            [[("holder".into(), 1)]],
            "the holder's only"
        );
    }

    #[tokio::test]
    async fn callers_with_waiters_take_turns_round_robin() {
        let (turns, log) = (Turns::default(), Log::default());
        let (_holder, held) = hold(&turns).await;
        let mut tasks = Vec::new();
        let mut tickets = Vec::new();
        for (caller, n) in [("a", 3), ("b", 3), ("c", 1)] {
            for i in 0..n {
                let ticket = ticket(&turns, &[caller]);
                tasks.push(queue(&turns, &ticket, &format!("{caller}{i}"), &log).await);
                tickets.push(ticket);
            }
        }
        let order = run(held, tasks, &log).await;
        assert_eq!(order, ["a0", "b0", "c0", "a1", "b1", "a2", "b2"]);
    }

    #[tokio::test]
    async fn a_resource_two_callers_watch_takes_the_first_turn_either_gives_and_only_one() {
        let (turns, log) = (Turns::default(), Log::default());
        let (_holder, held) = hold(&turns).await;
        let mut tasks = Vec::new();
        let mut tickets = Vec::new();
        for i in 0..4 {
            tickets.push(ticket(&turns, &["a"]));
            tasks.push(queue(&turns, &tickets[i], &format!("a{i}"), &log).await);
        }
        // Two streams of a and one of b on one resource: counted once per caller.
        let shared = ticket(&turns, &["a", "a", "b"]);
        tasks.push(queue(&turns, &shared, "shared", &log).await);
        let b = ticket(&turns, &["b"]);
        tasks.push(queue(&turns, &b, "b0", &log).await);
        let order = run(held, tasks, &log).await;
        // b's first turn is the shared resource's (it arrived first); a's are its own.
        assert_eq!(order, ["a0", "shared", "a1", "b0", "a2", "a3"]);
    }

    #[tokio::test]
    async fn a_waiter_whose_callers_change_moves_queues_and_keeps_its_place() {
        let (turns, log) = (Turns::default(), Log::default());
        let (_holder, held) = hold(&turns).await;
        let moving = ticket(&turns, &["a"]);
        let mut tasks = vec![queue(&turns, &moving, "moving", &log).await];
        let b = [ticket(&turns, &["b"]), ticket(&turns, &["b"])];
        tasks.push(queue(&turns, &b[0], "b0", &log).await);
        tasks.push(queue(&turns, &b[1], "b1", &log).await);
        assert_eq!(turns.waiting(), (3, 2));
        // a's stream goes, b's comes: it moves to b's queue by its arrival, and a's queue goes.
        moving.join(&Arc::from("b"));
        moving.leave(&Arc::from("a"));
        assert_eq!(turns.waiting(), (3, 1));
        let order = run(held, tasks, &log).await;
        assert_eq!(order, ["moving", "b0", "b1"]);
        assert_eq!(turns.waiting(), (0, 0));
    }

    #[tokio::test]
    async fn a_waiter_whose_last_caller_leaves_keeps_its_place_until_another_joins() {
        let (turns, log) = (Turns::default(), Log::default());
        let (_holder, held) = hold(&turns).await;
        let left = ticket(&turns, &["c"]);
        let mut tasks = vec![queue(&turns, &left, "left", &log).await];
        let d = ticket(&turns, &["d"]);
        tasks.push(queue(&turns, &d, "d0", &log).await);
        left.leave(&Arc::from("c"));
        assert_eq!(turns.waiting(), (2, 2), "still in c's queue");
        left.join(&Arc::from("d"));
        assert_eq!(turns.waiting(), (2, 1), "now in d's only");
        let order = run(held, tasks, &log).await;
        assert_eq!(order, ["left", "d0"]);
    }

    #[tokio::test]
    async fn waiters_with_no_caller_queue_as_the_gateway_one_class() {
        let (turns, log) = (Turns::default(), Log::default());
        let (_holder, held) = hold(&turns).await;
        let mut tasks = Vec::new();
        let mut tickets = Vec::new();
        for i in 0..3 {
            tickets.push(ticket(&turns, &[]));
            tasks.push(queue(&turns, &tickets[i], &format!("g{i}"), &log).await);
        }
        let a = ticket(&turns, &["a"]);
        tasks.push(queue(&turns, &a, "a0", &log).await);
        assert_eq!(turns.waiting(), (4, 2));
        let order = run(held, tasks, &log).await;
        assert_eq!(order, ["g0", "a0", "g1", "g2"]);
    }

    #[tokio::test]
    async fn waiters_that_go_away_leave_nothing_and_a_turn_given_to_one_passes_on() {
        let (turns, log) = (Turns::default(), Log::default());
        let (holder, held) = hold(&turns).await;
        let mut tasks = Vec::new();
        let mut tickets = Vec::new();
        for i in 0..1000 {
            tickets.push(ticket(&turns, &[if i % 2 == 0 { "a" } else { "b" }]));
            tasks.push(queue(&turns, &tickets[i], "gone", &log).await);
        }
        for task in tasks {
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
        }
        assert_eq!(turns.waiting(), (0, 0));
        drop(tickets);
        assert_eq!(turns.tickets().len(), 1);

        // One waiter is given the turn and goes away before it runs: the next one gets it.
        let first = ticket(&turns, &["a"]);
        let gone = queue(&turns, &first, "gone", &log).await;
        let second = ticket(&turns, &["b"]);
        let next = queue(&turns, &second, "next", &log).await;
        drop(held);
        gone.abort();
        let _ = gone.await;
        next.await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["next"]);
        assert_eq!(turns.waiting(), (0, 0));
        // And nobody holds it now: the next waiter's turn comes at once.
        assert!(holder.turn().now_or_never().is_some());
    }
}
