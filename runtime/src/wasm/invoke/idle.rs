//! The machine's idle CPU: how much of it there is, and the threads that
//! run only on it, where instances are made ahead of need.
//!
//! Preparing an instance is work no message waits for. On tokio's workers
//! it took a core from the work messages do wait for: on two cores, with
//! nats-server and the requester on the same machine, a Python endpoint at
//! 100 requests a second answered 0.83–0.90 ms later (p50) with prepared
//! instances than with reused ones, and 0.54–0.56 ms later once preparing
//! ran at idle priority. Linux gives a `SCHED_IDLE` thread only what the
//! other threads leave (a weight of 3 against a normal thread's 1,024),
//! and preempts it when one of them wakes.
//!
//! Such a thread must hold nothing a message waits for: its guests never
//! wait in a CPU line, where a guest behind them would wait for a thread
//! that does not run (`GuestCpu::try_admit`), its polls are charged the
//! thread's CPU time rather than the wall clock's, which counts the time
//! it was preempted ([`thread_cpu_time`]), and it does not mark its
//! subscriber busy. What it cannot avoid is the short locks it shares
//! with the messages (the instance pool's, a CPU budget's): preempted
//! inside one, it holds it until it runs again.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The name of the threads that prepare instances.
const THREAD_NAME: &str = "natsapp-prepare";

/// How often the machine's idle CPU is read.
const IDLE_SAMPLE: Duration = Duration::from_millis(100);

/// Runs `task` on the preparing threads: a tokio runtime of its own, whose
/// threads (every core but one, at least one) have idle priority where the
/// system has one. Without those threads, on the current runtime.
pub(super) fn spawn<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    static PREPARING: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let preparing = PREPARING.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .saturating_sub(1)
            .max(1);
        let built = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(THREAD_NAME)
            .on_thread_start(lower_priority)
            .enable_all()
            .build();
        match built {
            Ok(runtime) => Some(runtime),
            Err(e) => {
                tracing::warn!("cannot start the threads that prepare instances: {e}: instances are prepared beside the messages");
                None
            }
        }
    });
    match preparing {
        Some(runtime) => drop(runtime.spawn(task)),
        None => drop(tokio::spawn(task)),
    }
}

/// Gives the calling thread idle priority (Linux `SCHED_IDLE`).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets the calling thread's policy; `param` outlives the call.
        let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if set != 0 {
            tracing::warn!(
                "cannot give the preparing thread idle priority: {}: it prepares at normal priority",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The CPU time the calling thread has used (None where it cannot be read).
pub(super) fn thread_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the calling thread's CPU clock into `now`.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    (read == 0).then(|| {
        Duration::new(
            u64::try_from(now.tv_sec).unwrap_or(0),
            u32::try_from(now.tv_nsec).unwrap_or(0),
        )
    })
}

/// The machine's idle CPU over the last [`IDLE_SAMPLE`], in cores, from
/// `/proc/stat` (read by a thread started with the first handler that
/// prepares; without `/proc/stat`, the machine counts as idle).
pub(super) fn idle_cores() -> f64 {
    static IDLE_MILLICORES: OnceLock<Arc<AtomicU64>> = OnceLock::new();
    let idle = IDLE_MILLICORES.get_or_init(|| {
        let idle = Arc::new(AtomicU64::new(u64::MAX));
        let written = idle.clone();
        let started = std::thread::Builder::new()
            .name("natsapp-idle-cpu".into())
            .spawn(move || {
                let mut before = idle_ticks();
                loop {
                    std::thread::sleep(IDLE_SAMPLE);
                    let now = idle_ticks();
                    // Idle ticks may go back (I/O wait is not exact): such a
                    // reading is skipped.
                    if let Some(ticks) = before.zip(now).and_then(|(b, n)| n.checked_sub(b)) {
                        // /proc/stat counts in USER_HZ, 100 ticks a second.
                        let cores = ticks as f64 / 100.0 / IDLE_SAMPLE.as_secs_f64();
                        written.store((cores * 1000.0) as u64, Relaxed);
                    }
                    before = now;
                }
            });
        if let Err(e) = started {
            tracing::warn!(
                "cannot watch the machine's idle CPU: {e}: instances are prepared regardless"
            );
        }
        idle
    });
    match idle.load(Relaxed) {
        u64::MAX => f64::INFINITY,
        millicores => millicores as f64 / 1000.0,
    }
}

/// Idle and I/O-wait ticks of all CPUs since boot.
fn idle_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    Some(fields.get(3)? + fields.get(4).copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn instances_are_prepared_on_named_threads_at_idle_priority() {
        let (tx, rx) = std::sync::mpsc::channel();
        spawn(async move {
            // SAFETY: reads the calling thread's policy.
            let policy = unsafe { libc::sched_getscheduler(0) };
            let name = std::thread::current().name().map(str::to_string);
            tx.send((policy, name)).unwrap();
        });
        let (policy, name) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(policy, libc::SCHED_IDLE, "the preparing thread's policy");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
    }
}
