/*
 * cpus.h — how many CPUs the daemon may actually use.
 *
 * uv_available_parallelism() (libuv 1.44) counts the CPUs of the process's
 * affinity mask, not a container's CPU quota: a pod limited to 2 CPUs on a
 * 64-core node would see 64. The cgroup's quota (v2: cpu.max, v1:
 * cpu.cfs_quota_us / cpu.cfs_period_us) rounded up caps it, as the Go
 * runtime does for GOMAXPROCS.
 */
#ifndef SP_CPUS_H
#define SP_CPUS_H

/**
 * The CPUs available: uv_available_parallelism() capped by the CPU quota
 * found under @p cgroup_root (normally "/sys/fs/cgroup"; NULL: that), at
 * least 1. A missing, unlimited or unreadable quota caps nothing. Any thread.
 */
unsigned sp_cpus_available(const char *cgroup_root);

#endif
