"""The seccomp filter of the code sandbox: a classic-BPF program (what `bwrap --seccomp FD` loads)
that kills the sandboxed process (SIGSYS, reported as `blocked`) on the system calls a scoring
program never needs and an attacker wants:

- new processes: fork, vfork, clone without CLONE_THREAD (threads stay allowed); clone3 answers
  ENOSYS, since its flags sit in memory a filter cannot read, and the C library then falls back
  to clone. No process means no fork bomb, no shell (`os.system`, ctypes `system()`), no daemon;
- sockets other than AF_UNIX (the network namespace already leaves only loopback; this makes a
  network attempt a clear `blocked` instead of a connection error);
- the kernel's big attack surface reachable without privileges: namespaces and mounts, ptrace and
  cross-process memory access, keyrings, bpf, perf events, userfaultfd, io_uring;
- any other system-call ABI (32-bit `int 0x80`, x32) than the native one, whose numbers differ.

Written by hand (about 40 instructions) rather than through libseccomp, which is not always
installed; the numbers are the kernel's (arch/x86/entry/syscalls/syscall_64.tbl and
include/uapi/asm-generic/unistd.h), verified by tests/scoring.
"""

from __future__ import annotations

import platform
import struct

# BPF opcodes (linux/filter.h): load word at absolute offset, jumps against a constant, return.
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little-endian).
_NR, _ARCH, _ARG0_LOW = 0, 4, 16
_KILL_PROCESS, _ALLOW, _ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
_ENOSYS = 38
_CLONE_THREAD = 0x00010000
_AF_UNIX = 1
_X32_SYSCALL_BIT = 0x40000000

# Syscalls numbered alike on both: the mount API, io_uring and clone3 (asm-generic numbering).
_COMMON = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
# machine -> (AUDIT_ARCH_*, clone, socket, killed syscalls)
ARCHES: dict[str, tuple[int, int, int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        56,
        41,
        {
            "fork": 57,
            "vfork": 58,
            "ptrace": 101,
            "mount": 165,
            "umount2": 166,
            "pivot_root": 155,
            "chroot": 161,
            "unshare": 272,
            "setns": 308,
            "add_key": 248,
            "request_key": 249,
            "keyctl": 250,
            "bpf": 321,
            "perf_event_open": 298,
            "userfaultfd": 323,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            **_COMMON,
        },
    ),
    "aarch64": (  # no fork/vfork system calls there: the C library forks through clone
        0xC00000B7,
        220,
        198,
        {
            "ptrace": 117,
            "mount": 40,
            "umount2": 39,
            "pivot_root": 41,
            "chroot": 51,
            "unshare": 97,
            "setns": 268,
            "add_key": 217,
            "request_key": 218,
            "keyctl": 219,
            "bpf": 280,
            "perf_event_open": 241,
            "userfaultfd": 282,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            **_COMMON,
        },
    ),
}
_CLONE3 = 435


def seccomp_filter(machine: str | None = None) -> bytes:
    """The filter for `machine` (default: this one) as packed `struct sock_filter`s.
    KeyError for a machine without a table (the sandbox then refuses to run)."""
    audit_arch, clone, socket, killed = ARCHES[machine or platform.machine()]
    # (opcode, jump-if-true, jump-if-false, constant); a string jump names a label below
    program: list[tuple[int, int | str, int | str, int] | str] = [
        (_LD_ABS, 0, 0, _ARCH),
        (_JEQ, 0, "kill", audit_arch),
        (_LD_ABS, 0, 0, _NR),
        (_JGE, "kill", 0, _X32_SYSCALL_BIT),
        *((_JEQ, "kill", 0, nr) for nr in sorted(killed.values())),
        (_JEQ, "enosys", 0, _CLONE3),
        (_JEQ, "clone", 0, clone),
        (_JEQ, "socket", 0, socket),
        (_RET, 0, 0, _ALLOW),
        "socket",
        (_LD_ABS, 0, 0, _ARG0_LOW),  # the address family
        (_JEQ, "allow", "kill", _AF_UNIX),
        "clone",
        (_LD_ABS, 0, 0, _ARG0_LOW),  # clone's flags, the first argument on both machines
        (_JSET, "allow", "kill", _CLONE_THREAD),
        "allow",
        (_RET, 0, 0, _ALLOW),
        "kill",
        (_RET, 0, 0, _KILL_PROCESS),
        "enosys",
        (_RET, 0, 0, _ERRNO | _ENOSYS),
    ]
    labels: dict[str, int] = {}
    instructions = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(instructions)
        else:
            instructions.append(item)

    def offset(jump: int | str, position: int) -> int:  # BPF jumps are forward, relative to the next one
        return labels[jump] - position - 1 if isinstance(jump, str) else jump

    return b"".join(
        struct.pack("HBBI", code, offset(jt, i), offset(jf, i), k)
        for i, (code, jt, jf, k) in enumerate(instructions)
    )
