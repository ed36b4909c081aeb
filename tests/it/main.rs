//! Integration tests: the real `localhostd` binary, started the way systemd starts it (passed
//! sockets, NOTIFY_SOCKET, signals), spoken to over real TCP and Unix sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Aborts a forked child of this test process that allocates before it execs (see
/// `exec::nothing_allocates_between_fork_and_exec`): after fork only async-signal-safe code
/// may run, and the allocator is not.
struct ForkTrap;

static FIRST_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

fn trap_forked_child() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let first = FIRST_PID.load(std::sync::atomic::Ordering::Relaxed);
    if first == 0 {
        FIRST_PID.store(pid, std::sync::atomic::Ordering::Relaxed);
    } else if first != pid {
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() };
    }
}

// SAFETY: every method forwards to the system allocator after the check.
unsafe impl std::alloc::GlobalAlloc for ForkTrap {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        trap_forked_child();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        trap_forked_child();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        trap_forked_child();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        trap_forked_child();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: ForkTrap = ForkTrap;

mod harness;
mod http;

mod access;
mod activation;
mod backup;
mod compat;
mod config_cli;
mod deadline;
mod durability;
mod exec;
mod executions;
mod files;
mod init_fds;
mod kv;
mod layers;
mod lifecycle;
mod login_url;
mod lt_server;
mod memory;
mod metrics;
mod mounts;
mod programs;
mod pty;
mod quotas;
mod runtimes;
mod sandbox;
mod sandbox_hostnet;
mod seed_import;
mod streams;
mod system;
mod terminals;
mod tunnel_fakes;
mod tunnels;
mod tunnels_real;
mod ui;
