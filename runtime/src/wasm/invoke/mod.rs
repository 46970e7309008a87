//! Running one message through a handler: a store with the subscriber's
//! memory cap — fresh per message, or a warm instance reused from a pool —
//! a wall-clock limit, an in-progress heartbeat at half the ack wait, and a
//! classification of whatever came back. An instance that trapped or hit a
//! limit is dropped, never reused.

use super::guest_log::{GuestLog, GuestOutput};
use super::host::{
    HandleError, HostState, MemoryLimiter, MessageHandle, Service, ServicePre, SubscriberHost,
};
use crate::config::{Instances, SubscriberConfig};
use crate::error::ErrorChain;
use crate::message::{FailureCause, InFlight, Outcome};
use crate::settle::Settler;
use crate::wasm::cpu::{Admission, GuestCpu, Waiting};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

mod idle;
mod prepared;
mod reuse;
mod warm_up;

use prepared::Prepared;
use reuse::ReusePool;
use warm_up::WarmUp;

/// The line the Python and JavaScript SDKs write before an uncaught
/// exception ends the call.
const UNCAUGHT: &str = "uncaught exception: ";

/// Host resources (WASI streams, pollables, lent messages) one store may
/// hold at once: far more than a handler needs, far fewer than wasmtime's
/// default of a million, so a guest that leaks them traps early instead of
/// growing the host's memory.
const MAX_HOST_RESOURCES: usize = 10_000;

/// A subscriber's compiled handler, ready to run messages.
pub struct Handler {
    maker: Arc<Maker>,
    heartbeat: Duration,
    instances: Instances,
    /// Idle instances kept for reuse.
    reuse: ReusePool,
    /// Fresh instances made ahead of need, with per-message instances.
    prepared: Option<Arc<Prepared>>,
}

/// What makes a fresh instance of a handler's component: shared with the
/// task that prepares them ahead.
pub(super) struct Maker {
    pre: ServicePre<HostState>,
    pub(super) host: Arc<SubscriberHost>,
    timeout: Duration,
    /// The component's `warm-up` export, when it has one.
    warm_up: Option<WarmUp>,
}

/// An instantiated component with its store.
pub(super) struct Warm {
    store: Store<HostState>,
    instance: wasmtime::component::Instance,
    service: Service,
    output: Arc<GuestOutput>,
    uses: u64,
}

impl Warm {
    /// Lends the instance to `msg`: what its host functions act on.
    fn lend_to(&mut self, msg: &Arc<InFlight>) {
        let data = self.store.data_mut();
        data.msg = msg.clone();
        data.limiter.exceeded = false;
        data.limiter.ahead = false;
        self.output.reset();
        self.store.set_epoch_deadline(1);
    }
}

/// Where a handler call failed: setting up its instance, or the call itself.
enum InvokeFailure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

impl Handler {
    /// The handler of `s` (a subscriber's, or an endpoint's): its time
    /// limit, its in-progress interval and its instance mode.
    pub fn of(s: &SubscriberConfig, pre: ServicePre<HostState>, host: Arc<SubscriberHost>) -> Self {
        Handler::new(pre, host, s.timeout, s.progress_every(), s.instances)
    }

    /// A handler running `pre` with `host`'s capabilities, `timeout` per
    /// message, an in-progress signal every `heartbeat`, and instances
    /// fresh per message or reused.
    pub fn new(
        pre: ServicePre<HostState>,
        host: Arc<SubscriberHost>,
        timeout: Duration,
        heartbeat: Duration,
        instances: Instances,
    ) -> Self {
        let warm_up = WarmUp::of(pre.instance_pre().component());
        let maker = Arc::new(Maker {
            pre,
            host,
            timeout,
            warm_up,
        });
        let prepared = match instances {
            Instances::PerMessage { prepared } if prepared > 0 => {
                Prepared::start(maker.clone(), prepared)
            }
            _ => None,
        };
        let host = &maker.host;
        let reuse = ReusePool::new(host.settler.stats.clone());
        if let (Instances::Reuse { .. }, Some(pool)) = (&instances, &host.quotas.memory) {
            reuse.give_way_to(pool);
        }
        Handler {
            maker,
            heartbeat,
            instances,
            reuse,
            prepared,
        }
    }

    fn host(&self) -> &SubscriberHost {
        &self.maker.host
    }

    fn timeout(&self) -> Duration {
        self.maker.timeout
    }

    /// Runs `handle` for `msg` and says what came of it.
    pub async fn invoke(&self, msg: Arc<InFlight>) -> Outcome {
        // Dropped last, however the call ends: its instance is retired by then.
        let _done = self.prepared.as_deref().map(prepared::MessageDone);
        let _busy = self.host().cpu.busy();
        let cpu = &self.host().cpu;
        let (reused, turn) = match self.instances {
            Instances::Reuse { .. } => {
                // Admitted to the CPU before taking an instance: parked with
                // one, it would hold it, and the next message would make
                // another, kept for good. The wait is bounded, as no
                // in-progress is sent before the call starts; past it, the
                // call keeps the place in line.
                let turn = Turn::wait(cpu, self.heartbeat / 2).await;
                (self.reuse.take(), turn)
            }
            Instances::PerMessage { .. } => {
                let prepared = self.prepared.as_ref().and_then(|p| p.take());
                (prepared, Turn::new(cpu))
            }
        };
        // The turn goes to whatever starts first: the call, or making the
        // instance.
        let (mut warm, turn) = match reused {
            Some(mut w) => {
                w.lend_to(&msg);
                (w, turn)
            }
            None => match self.maker.instantiate(&msg, false, turn).await {
                Ok(w) => (w, Turn::new(cpu)),
                Err(outcome) => return outcome,
            },
        };
        let handle = match warm.store.data_mut().table.push(MessageHandle) {
            Ok(h) => h,
            Err(e) => {
                return classify(
                    Some(Err(InvokeFailure::Instantiate(e.into()))),
                    false,
                    self.timeout(),
                    &warm.output,
                );
            }
        };
        let result = {
            let store = &mut warm.store;
            let service = &warm.service;
            // Lent as a borrow of our table's entry: lowering the owned
            // handle would also park it in the store's own handle table,
            // where nothing removes it, and a reused store would run out of
            // handles after 100,000 messages.
            let lent = Resource::<MessageHandle>::new_borrow(handle.rep());
            let call = async {
                service
                    .natsapp_handler_handler()
                    .call_handle(&mut *store, &msg.message.payload, lent)
                    .await
                    .map_err(InvokeFailure::Call)
            };
            let call = metered(call, turn);
            let call = flushing(call, &warm.output);
            run_with_limits(
                call,
                self.timeout(),
                self.heartbeat,
                &self.host().settler,
                &msg,
            )
            .await
        };
        let memory_exceeded = warm.store.data().limiter.exceeded;
        let outcome = match classify(result, memory_exceeded, self.timeout(), &warm.output) {
            // A reason is the guest's text: keep its secrets out of the
            // log, the statistics and the dead-letter headers.
            Outcome::Retry { delay, reason } => Outcome::Retry {
                delay,
                reason: self.host().secrets.mask(&reason),
            },
            Outcome::Reject(reason) => Outcome::Reject(self.host().secrets.mask(&reason)),
            other => other,
        };
        if let Instances::Reuse { max_uses } = self.instances {
            warm.uses += 1;
            let healthy = !matches!(outcome, Outcome::Failed { .. });
            let fresh_enough = max_uses.is_none_or(|m| warm.uses < m);
            if healthy && fresh_enough && warm.store.data_mut().table.delete(handle).is_ok() {
                self.reuse.put(warm);
                return outcome;
            }
        }
        self.retire(warm);
        outcome
    }

    /// Drops an instance. Its memory goes back to the pool, which zeroes
    /// or unmaps what the guest touched: time spent on the guest's behalf,
    /// charged like its execution.
    fn retire(&self, warm: Warm) {
        let started = std::time::Instant::now();
        drop(warm);
        self.host().cpu.charge(started.elapsed());
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        // Its preparing task ends, and drops what it made, at once.
        if let Some(p) = &self.prepared {
            p.handler_gone();
        }
    }
}

impl Maker {
    /// A new store and instance, lent to `msg`; made `ahead` of need, its
    /// memory never takes the room of other instances. Its first step
    /// takes `turn` at the CPU.
    pub(super) async fn instantiate(
        &self,
        msg: &Arc<InFlight>,
        ahead: bool,
        turn: Turn<'_>,
    ) -> Result<Warm, Outcome> {
        let output = GuestOutput::new(
            self.host.name.clone(),
            self.host.secrets.clone(),
            self.host.transcript.clone(),
        );
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestLog::stdout(&output))
            .stderr(GuestLog::stderr(&output))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        let state = HostState {
            wasi,
            table,
            limiter: MemoryLimiter::new(self.host.memory, self.host.quotas.memory.clone()),
            sub: self.host.clone(),
            msg: msg.clone(),
            http: Default::default(),
            http_hooks: crate::wasm::host::http::HttpHooks(self.host.http.clone()),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.data_mut().limiter.ahead = ahead;
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        // At every tick a running guest yields, so that it is admitted by
        // its CPU budgets again before it goes on (see `metered`). It
        // yields through tokio's `yield_now`, which defers it until the
        // worker has looked at its timers and sockets: a plain yield only
        // puts it back in the run queue, and with every worker busy with
        // guests tokio looks at them once in 61 polls (61 ticks, about
        // 0.6 s), late for in-progress signals, PubAcks and pulls.
        store.epoch_deadline_callback(|_| {
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        let pre = &self.pre;
        let instantiate = flushing(
            metered(
                async {
                    let instance = pre.instance_pre().instantiate_async(&mut store).await?;
                    let service = Service::new(&mut store, &instance)?;
                    Ok::<_, wasmtime::Error>((instance, service))
                },
                turn,
            ),
            &output,
        );
        let instantiated = tokio::time::timeout(self.timeout, instantiate).await;
        match instantiated {
            Ok(Ok((instance, service))) => Ok(Warm {
                store,
                instance,
                service,
                output,
                uses: 0,
            }),
            Ok(Err(e)) => Err(classify(
                Some(Err(InvokeFailure::Instantiate(e))),
                store.data().limiter.exceeded,
                self.timeout,
                &output,
            )),
            Err(_) => Err(Outcome::Failed {
                cause: FailureCause::Timeout,
                detail: format!(
                    "instantiation exceeded the time limit of {:?}",
                    self.timeout
                ),
            }),
        }
    }
}

/// Runs `work`, admitting each poll by `cpu` first (parking while it is
/// over budget) and charging the time the poll takes — the guest running,
/// and the host functions it calls — once it is done. Admission reserves
/// a tick for the poll's length; a poll lasts at most a tick, as the guest
/// yields at every epoch tick. The first poll is admitted too: guests
/// started together do not each run a tick past the budget. A guest
/// parked waits in line, and asks again whenever it is woken: when its
/// timer runs out, or when the line moves. `turn` is the guest's at its
/// CPU: admitted ahead, it admits the first poll; in line, its place is
/// kept. Work made ahead of need never waits in line (see
/// [`idle`]), and is charged its thread's CPU time.
async fn metered<F: Future>(work: F, mut turn: Turn<'_>) -> F::Output {
    let mut work = std::pin::pin!(work);
    let mut timer = None;
    let cpu = turn.cpu;
    std::future::poll_fn(|cx| {
        // An admission taken ahead admits this poll, and no other.
        if !std::mem::take(&mut turn.admitted) {
            if turn.ahead.is_some() {
                std::task::ready!(admitted_ahead(cpu, &mut timer, cx));
            } else {
                std::task::ready!(admitted(cpu, &mut turn.waiting, &mut timer, cx));
            }
        }
        let cost = PollCost::start(turn.ahead.is_some());
        let polled = work.as_mut().poll(cx);
        let spent = cost.spent();
        if let Some(total) = turn.ahead {
            total.fetch_add(u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        }
        cpu.charge(spent);
        cpu.release(super::EPOCH_TICK);
        polled
    })
    .await
}

/// What one poll costs: its wall-clock time, or, for work made ahead of
/// need on an idle-priority thread (preempted whenever another thread
/// wants the core), the thread's CPU time.
struct PollCost {
    wall: std::time::Instant,
    thread: Option<Duration>,
}

impl PollCost {
    fn start(ahead: bool) -> PollCost {
        PollCost {
            wall: std::time::Instant::now(),
            thread: if ahead { idle::thread_cpu_time() } else { None },
        }
    }

    fn spent(&self) -> Duration {
        match self.thread.zip(idle::thread_cpu_time()) {
            Some((started, now)) => now.saturating_sub(started),
            None => self.wall.elapsed(),
        }
    }
}

/// Ready once `cpu` admits work made ahead of need at once; refused, it
/// asks again a tick later, never keeping a place in a line.
fn admitted_ahead(
    cpu: &GuestCpu,
    timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<()> {
    loop {
        if let Some(t) = timer.as_mut() {
            std::task::ready!(t.as_mut().poll(cx));
        }
        if cpu.try_admit(super::EPOCH_TICK) {
            return std::task::Poll::Ready(());
        }
        let deadline = tokio::time::Instant::now() + super::EPOCH_TICK;
        match timer.as_mut() {
            Some(t) => t.as_mut().reset(deadline),
            None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
}

/// Ready once `cpu` admits a guest for its next tick (the reservation is
/// then the caller's); parked until then, in line or on `timer`.
fn admitted(
    cpu: &GuestCpu,
    waiting: &mut Waiting<'_>,
    timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<()> {
    loop {
        match cpu.admit(super::EPOCH_TICK, waiting, cx.waker()) {
            Admission::Now => return std::task::Poll::Ready(()),
            Admission::Queued => return std::task::Poll::Pending,
            Admission::After(wait) => {
                let deadline = tokio::time::Instant::now() + wait;
                match timer.as_mut() {
                    Some(t) => t.as_mut().reset(deadline),
                    None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                let t = timer.as_mut().expect("set above");
                std::task::ready!(t.as_mut().poll(cx));
            }
        }
    }
}

/// A guest's turn at its CPU, asked for before its first poll: admitted
/// (a reservation for that poll, given back if dropped unused), or its
/// place in line.
pub(super) struct Turn<'a> {
    cpu: &'a GuestCpu,
    waiting: Waiting<'a>,
    admitted: bool,
    /// For work made ahead of need: never in line (see [`metered`]), its
    /// CPU time added up here.
    ahead: Option<&'a AtomicU64>,
}

impl<'a> Turn<'a> {
    /// Not asked for yet.
    pub(super) fn new(cpu: &'a GuestCpu) -> Turn<'a> {
        Turn {
            cpu,
            waiting: cpu.waiting(),
            admitted: false,
            ahead: None,
        }
    }

    /// For work made ahead of need, not asked for yet: the CPU time its
    /// polls are charged is added to `spent`, in nanoseconds.
    pub(super) fn ahead(cpu: &'a GuestCpu, spent: &'a AtomicU64) -> Turn<'a> {
        let mut turn = Turn::new(cpu);
        turn.ahead = Some(spent);
        turn
    }

    /// Waits in line up to `within` for `cpu` to admit a guest.
    async fn wait(cpu: &'a GuestCpu, within: Duration) -> Turn<'a> {
        let mut turn = Turn::new(cpu);
        let mut timer = None;
        let mut limit = std::pin::pin!(tokio::time::sleep(within));
        turn.admitted = std::future::poll_fn(|cx| {
            if admitted(cpu, &mut turn.waiting, &mut timer, cx).is_ready() {
                return std::task::Poll::Ready(true);
            }
            limit.as_mut().poll(cx).map(|()| false)
        })
        .await;
        turn
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.admitted {
            self.cpu.release(super::EPOCH_TICK);
        }
    }
}

/// How long a running guest's output may wait to be logged with what it
/// writes next.
const OUTPUT_GATHERING: Duration = Duration::from_secs(1);

/// Runs `work`, logging the guest's output when it is done, or at a yield
/// once the output has waited [`OUTPUT_GATHERING`].
async fn flushing<F: Future>(work: F, output: &GuestOutput) -> F::Output {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        let polled = work.as_mut().poll(cx);
        match polled {
            std::task::Poll::Ready(_) => output.flush(),
            std::task::Poll::Pending => output.flush_older_than(OUTPUT_GATHERING),
        }
        polled
    })
    .await
}

/// How often a time limit reached during a NATS call is checked again.
const NATS_CALL_RECHECK: Duration = Duration::from_millis(50);

/// Polls `call` until it finishes or `limit` passes, sending in-progress
/// every `heartbeat` while the guest has not settled the message. Time its
/// calls spent waiting for NATS to be available again does not count
/// towards `limit`; a limit reached during a NATS call is checked again
/// once the call returns (each try is bounded by its own timeout), as only
/// then is it known whether the call waited for NATS. One timer serves
/// both: it wakes at whichever comes first (registering timers was a
/// visible part of a short call's cost).
async fn run_with_limits<F: Future>(
    call: F,
    limit: Duration,
    heartbeat: Duration,
    settler: &Settler,
    msg: &InFlight,
) -> Option<F::Output> {
    let started = tokio::time::Instant::now();
    let deadline = || started + limit + msg.nats_waits();
    let mut next_beat = started + heartbeat;
    let timer = tokio::time::sleep_until(next_beat.min(deadline()));
    tokio::pin!(call, timer);
    loop {
        tokio::select! {
            biased;
            out = &mut call => return Some(out),
            () = &mut timer => {
                let now = tokio::time::Instant::now();
                let mut deadline = deadline();
                if now >= deadline {
                    if !msg.in_nats_call() {
                        return None;
                    }
                    deadline = now + NATS_CALL_RECHECK;
                }
                if now >= next_beat {
                    // Bounded: meanwhile the guest is not polled, and a
                    // guest at the head of a CPU line holds up the line.
                    match tokio::time::timeout(NATS_CALL_RECHECK, settler.heartbeat(msg)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!("in-progress signal failed: {}", ErrorChain(&e)),
                        Err(_) => tracing::debug!("in-progress signal not sent within {NATS_CALL_RECHECK:?}: the next beat sends one"),
                    }
                    next_beat = now + heartbeat;
                }
                timer.as_mut().reset(next_beat.min(deadline));
            }
        }
    }
}

fn classify(
    result: Option<Result<Result<(), HandleError>, InvokeFailure>>,
    memory_exceeded: bool,
    limit: Duration,
    output: &GuestOutput,
) -> Outcome {
    let failed = |cause, detail: String| Outcome::Failed { cause, detail };
    match result {
        None => failed(
            FailureCause::Timeout,
            format!("handler exceeded its time limit of {limit:?}"),
        ),
        Some(Ok(Ok(()))) => Outcome::Ok,
        Some(Ok(Err(HandleError::Retry(r)))) => Outcome::Retry {
            delay: r.delay_ms.map(Duration::from_millis),
            reason: r.reason,
        },
        Some(Ok(Err(HandleError::Reject(reason)))) => Outcome::Reject(reason),
        Some(Err(InvokeFailure::Instantiate(e) | InvokeFailure::Call(e))) if memory_exceeded => {
            failed(FailureCause::Memory, root_message(&e))
        }
        Some(Err(InvokeFailure::Instantiate(e))) => failed(
            FailureCause::Instantiate,
            format!("instantiation failed: {}", root_message(&e)),
        ),
        Some(Err(InvokeFailure::Call(e))) => {
            let tail = output.stderr_tail();
            // The SDKs' adapters end a call with an uncaught exception (or a
            // thrown non-error) by a trap after this line: a crash, as a
            // Rust panic is.
            let uncaught = tail.lines().rev().find(|l| l.starts_with(UNCAUGHT));
            let panicked = tail.lines().rev().find(|l| l.contains("panicked at"));
            let detail = match (e.downcast_ref::<Trap>(), uncaught, panicked) {
                (Some(Trap::UnreachableCodeReached), Some(line), _) => {
                    return failed(FailureCause::Panic, line.to_string())
                }
                (Some(Trap::UnreachableCodeReached), None, Some(line)) => {
                    return failed(
                        FailureCause::Panic,
                        format!("guest panicked: {}", panic_message(&tail, line)),
                    )
                }
                (Some(trap), ..) => trap.to_string(),
                (None, ..) => root_message(&e),
            };
            match tail.lines().last() {
                Some(last) => failed(
                    FailureCause::Trap,
                    format!("{detail}; guest stderr: {last}"),
                ),
                None => failed(FailureCause::Trap, detail),
            }
        }
    }
}

fn root_message(e: &wasmtime::Error) -> String {
    e.chain()
        .last()
        .map(|c| c.to_string())
        .unwrap_or_else(|| e.to_string())
}

/// A Rust panic prints `thread '…' panicked at FILE:LINE:COL:` and the
/// message on the lines after; this gives "MESSAGE (at FILE:LINE:COL)".
fn panic_message(tail: &str, line: &str) -> String {
    let at = line
        .split_once("panicked at ")
        .map_or(line, |(_, at)| at)
        .trim()
        .trim_end_matches(':');
    let message: Vec<&str> = tail
        .lines()
        .skip_while(|l| *l != line)
        .skip(1)
        .take_while(|l| !l.starts_with("note:"))
        .collect();
    let message = message.join(" ");
    if message.trim().is_empty() {
        format!("(at {at})")
    } else {
        format!("{} (at {at})", message.trim())
    }
}
