//! The job's seccomp filters, built as data before anything is forked.
//!
//! Two filters are installed; the kernel applies the strictest answer of all of them:
//! 1. a hand-written prefix: kill a non-native architecture, refuse x32 syscall numbers
//!    (EPERM), answer `clone3` with ENOSYS (its flags live in memory seccomp cannot read;
//!    glibc then falls back to `clone`, whose flags we can check — EPERM would break threads);
//! 2. a deny-list compiled by seccompiler: EPERM for the mount family (old and new API),
//!    ptrace and process_vm_*, bpf, keyrings, io_uring, userfaultfd, perf_event_open, kexec,
//!    modules, unshare/setns, `clone` with namespace flags, TIOCSTI/TIOCLINUX ioctls (compared
//!    on their low 32 bits, CVE-2019-10063), personality changes, `modify_ldt`, sockets of the
//!    AF_VSOCK and AF_ALG families, and other host-level knobs.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;

// BPF opcodes.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
// Offsets in struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Filter 1: architecture, x32 and clone3.
pub fn prefix_filter() -> BpfProgram {
    vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
    ]
}

/// Syscalls refused outright with EPERM.
pub const DENIED: &[(i64, &str)] = &[
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_chroot, "chroot"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_kcmp, "kcmp"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_unshare, "unshare"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_personality, "personality"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_lookup_dcookie, "lookup_dcookie"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_adjtimex, "adjtimex"),
    (libc::SYS_iopl, "iopl"),
    (libc::SYS_ioperm, "ioperm"),
    (libc::SYS_vhangup, "vhangup"),
    (libc::SYS_fanotify_init, "fanotify_init"),
    // 16-bit segments for DOS and Wine emulation; a past source of kernel bugs.
    (libc::SYS_modify_ldt, "modify_ldt"),
];

/// Socket families `socket` and `socketpair` refuse: AF_VSOCK reaches the hypervisor and
/// other VMs past the network namespace; AF_ALG is the kernel's crypto API, kernel attack
/// surface no job needs.
const DENIED_FAMILIES: &[u64] = &[libc::AF_VSOCK as u64, libc::AF_ALG as u64];

/// Namespace flags `clone` may not carry.
const CLONE_NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x0000_0080, // CLONE_NEWTIME
];

/// ioctl requests refused (compared on the low 32 bits of the request).
const DENIED_IOCTLS: &[u64] = &[libc::TIOCSTI, libc::TIOCLINUX];

/// Filter 2: the deny-list.
pub fn deny_filter() -> Result<BpfProgram, String> {
    let err = |e: seccompiler::BackendError| format!("cannot build the seccomp filter: {e}");
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, _) in DENIED {
        rules.insert(*nr, vec![]);
    }
    let masked = |arg: u8, len: SeccompCmpArgLen, mask: u64, value: u64| {
        SeccompCondition::new(arg, len, SeccompCmpOp::MaskedEq(mask), value)
    };
    let mut clone_rules = Vec::new();
    for flag in CLONE_NS_FLAGS {
        clone_rules.push(
            SeccompRule::new(vec![
                masked(0, SeccompCmpArgLen::Qword, *flag, *flag).map_err(err)?,
            ])
            .map_err(err)?,
        );
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let mut ioctl_rules = Vec::new();
    for req in DENIED_IOCTLS {
        ioctl_rules.push(
            SeccompRule::new(vec![
                SeccompCondition::new(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    *req & 0xffff_ffff,
                )
                .map_err(err)?,
            ])
            .map_err(err)?,
        );
    }
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    for nr in [libc::SYS_socket, libc::SYS_socketpair] {
        let mut family_rules = Vec::new();
        for family in DENIED_FAMILIES {
            family_rules.push(
                SeccompRule::new(vec![
                    SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *family)
                        .map_err(err)?,
                ])
                .map_err(err)?,
            );
        }
        rules.insert(nr, family_rules);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(err)?;
    BpfProgram::try_from(filter).map_err(err)
}

/// Filter 3, for jobs limited by rlimits only (no memory cgroup): `memfd_create` and
/// `shmget` answer ENOSYS. Their memory is in no rlimit (a memfd filled with `write()` is
/// never mapped; a System V segment outlives its mappings), and ENOSYS makes runtimes fall
/// back to files in /dev/shm or the scratch, whose tmpfs sizes are counted in the limit.
pub fn unbounded_memory_filter() -> BpfProgram {
    vec![
        stmt(BPF_LD_W_ABS, OFF_NR),
        jump(BPF_JEQ_K, libc::SYS_memfd_create as u32, 1, 0),
        jump(BPF_JEQ_K, libc::SYS_shmget as u32, 0, 1),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_and_prefix_jumps_stay_inside() {
        let p = prefix_filter();
        for (i, ins) in p.iter().enumerate() {
            assert!(
                i + 1 + (ins.jt.max(ins.jf) as usize) < p.len() || ins.code == BPF_RET_K,
                "jump out of range at {i}"
            );
        }
        assert_eq!(p.last().unwrap().k, SECCOMP_RET_ALLOW);
        let m = unbounded_memory_filter();
        for (i, ins) in m.iter().enumerate() {
            assert!(
                i + 1 + (ins.jt.max(ins.jf) as usize) < m.len() || ins.code == BPF_RET_K,
                "jump out of range at {i}"
            );
        }
        let d = deny_filter().unwrap();
        assert!(d.len() > DENIED.len() * 2, "{} instructions", d.len());
    }
}
