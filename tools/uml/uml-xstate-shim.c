/*
 * LD_PRELOAD shim for linux.uml on hosts whose CPUs have AMX (or any XSAVE component UML does not size for).
 *
 * UML saves and restores the FPU state of its processes with PTRACE_GETREGSET/SETREGSET(NT_X86_XSTATE),
 * using a buffer sized for the components it knows (2696 bytes with AVX-512). Since Linux 5.14 the host
 * refuses a SETREGSET(NT_X86_XSTATE) that is not exactly the full XSAVE size (EFAULT), and with AMX that
 * size is larger (11008 bytes), so UML panics on the first return to user space:
 *   "userspace - ptrace set fp regs failed, errno = 14" ... "Attempted to kill init!"
 * This shim pads such a SETREGSET to the full size: UML's bytes first, zeros after, and the components that
 * did not fit cleared in XSTATE_BV, i.e. left in their initial state (nothing inside UML can use AMX: it needs
 * an arch_prctl permission that UML does not forward). Every other call passes through unchanged.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define LEGACY_AND_HEADER 576   /* 512-byte FXSAVE area + 64-byte XSAVE header */
#define XSTATE_BV_OFFSET 512

static unsigned char full_buf[1 << 16] __attribute__((aligned(64)));
static size_t full_size;

/*
 * XSTATE_BV bits of the user components that lie entirely inside the first len bytes (standard format).
 * Cached: CPUID traps to the hypervisor when the host is itself a virtual machine, and this runs on every
 * return to a UML process.
 */
static uint64_t components_within(size_t len) {
    static size_t cached_len;
    static uint64_t cached_mask;
    if (len == cached_len)
        return cached_mask;
    uint64_t mask = 3; /* x87 and SSE live in the legacy area */
    for (int i = 2; i < 63; i++) {
        unsigned int size, offset, ecx, edx;
        __cpuid_count(0xd, i, size, offset, ecx, edx);
        if (size == 0 || (ecx & 1)) /* absent, or a supervisor component */
            continue;
        if ((size_t)offset + size <= len)
            mask |= 1ULL << i;
    }
    cached_len = len;
    cached_mask = mask;
    return mask;
}

long ptrace(enum __ptrace_request request, ...) {
    static long (*real_ptrace)(enum __ptrace_request, pid_t, void *, void *);
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    if (!real_ptrace)
        real_ptrace = (long (*)(enum __ptrace_request, pid_t, void *, void *))dlsym(RTLD_NEXT, "ptrace");

    if (request == PTRACE_SETREGSET && (long)addr == NT_X86_XSTATE && data != NULL) {
        struct iovec *iov = data;
        if (full_size == 0) {
            struct iovec probe = { full_buf, sizeof full_buf };
            if (syscall(SYS_ptrace, PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &probe) == 0)
                full_size = probe.iov_len;
        }
        if (full_size > iov->iov_len && full_size <= sizeof full_buf && iov->iov_len >= LEGACY_AND_HEADER) {
            uint64_t bv;
            memset(full_buf, 0, full_size);
            memcpy(full_buf, iov->iov_base, iov->iov_len);
            memcpy(&bv, full_buf + XSTATE_BV_OFFSET, sizeof bv);
            bv &= components_within(iov->iov_len);
            memcpy(full_buf + XSTATE_BV_OFFSET, &bv, sizeof bv);
            struct iovec padded = { full_buf, full_size };
            return real_ptrace(request, pid, addr, &padded);
        }
    }
    return real_ptrace(request, pid, addr, data);
}
