"""Pydantic v2 models of the OCI runtime-spec v1.3.0 config (Linux subset) and state.

These models are the single source of truth for hako's config schema, but they are
NOT used at run time: importing pydantic costs ~0.2-0.3 s, far too much for
``hako create``.  ``python -m spec.gen_schema`` turns them into
``spec/config.schema.json`` / ``spec/state.schema.json``, which the stdlib-only
``spec.validate`` applies on the hot path.

They follow the official JSON schema (config-schema.json, config-linux.json, defs*.json)
for types, enums, bounds and ``required``; where hako is deliberately stricter it says
so next to the field.  Rules that hold for every model:

* Unknown properties are ignored (the spec requires runtimes to ignore them).
* ``null`` is not a valid value for any property (the official schema has no null
  anywhere); ``Optional[...] = None`` only means "may be absent".
* Types are strict, as in the official draft-04 schema and runc's Go decoder:
  ``1.0`` is not an integer, ``"1"`` is not an integer, ``true`` is not an integer.
* Only the JSON names are accepted (aliases); the Python field names are not.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# --- scalar types (defs.json) -------------------------------------------------

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Uint16 = Annotated[int, Field(ge=0, le=2**16 - 1)]
Uint32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
Uint64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
#: Device file permissions, in decimal (defs.json FileMode: 0..0o777).
FileMode = Annotated[int, Field(ge=0, le=0o777)]
StringMap = dict[str, str]

NamespaceType = Literal["mount", "pid", "network", "uts", "ipc", "user", "cgroup", "time"]
#: the spec's four, and the recursive forms runc and crun accept (containerd's CRI
#: sets "rshared" / "rslave" for Bidirectional / HostToContainer volumes)
RootfsPropagation = Literal[
    "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable"
]
SeccompAction = Literal[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
]
SeccompArch = Literal[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
]
SeccompFlag = Literal[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
]
SeccompOperator = Literal[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
]
SchedulerPolicy = Literal[
    "SCHED_OTHER",
    "SCHED_FIFO",
    "SCHED_RR",
    "SCHED_BATCH",
    "SCHED_ISO",
    "SCHED_IDLE",
    "SCHED_DEADLINE",
]
SchedulerFlag = Literal[
    "SCHED_FLAG_RESET_ON_FORK",
    "SCHED_FLAG_RECLAIM",
    "SCHED_FLAG_DL_OVERRUN",
    "SCHED_FLAG_KEEP_POLICY",
    "SCHED_FLAG_KEEP_PARAMS",
    "SCHED_FLAG_UTIL_CLAMP_MIN",
    "SCHED_FLAG_UTIL_CLAMP_MAX",
]
MemoryPolicyMode = Literal[
    "MPOL_DEFAULT",
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_WEIGHTED_INTERLEAVE",
    "MPOL_PREFERRED",
    "MPOL_PREFERRED_MANY",
    "MPOL_LOCAL",
]
MemoryPolicyFlag = Literal["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"]
IOPriorityClass = Literal["IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"]
PersonalityDomain = Literal["LINUX", "LINUX32"]
ContainerStatus = Literal["creating", "created", "running", "stopped"]

#: CPU list such as "0-3,7" (execCPUAffinity).
CpuList = Annotated[str, Field(pattern=r"^[0-9, -]*$")]


class SpecModel(BaseModel):
    """Base of every model: strict JSON types, JSON names, unknown keys ignored, no nulls."""

    model_config = ConfigDict(
        extra="ignore",
        strict=True,
        alias_generator=to_camel,
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_null(cls, data: Any) -> Any:
        """Refuse ``"key": null`` for known keys: the official schema never allows null."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                key = field.alias or name
                if key in data and data[key] is None:
                    raise ValueError(f"{key}: must not be null")
        return data


# --- shared definitions (defs.json) --------------------------------------------


class IDMapping(SpecModel):
    """User namespace / idmapped-mount id range (defs.json IDMapping)."""

    container_id: Uint32 = Field(alias="containerID")
    host_id: Uint32 = Field(alias="hostID")
    # Stricter than the official schema (uint32): the kernel refuses an empty range
    # with EINVAL, so hako reports it at validation time instead.
    size: Annotated[int, Field(ge=1, le=2**32 - 1)]


class Hook(SpecModel):
    path: str
    args: list[str] | None = None
    env: list[str] | None = None
    timeout: Annotated[int, Field(ge=1)] | None = None


class Hooks(SpecModel):
    prestart: list[Hook] | None = None
    create_runtime: list[Hook] | None = None
    create_container: list[Hook] | None = None
    start_container: list[Hook] | None = None
    poststart: list[Hook] | None = None
    poststop: list[Hook] | None = None


class Mount(SpecModel):
    destination: str
    source: str | None = None
    options: list[str] | None = None
    type: str | None = None
    uid_mappings: list[IDMapping] | None = None
    gid_mappings: list[IDMapping] | None = None


class Root(SpecModel):
    path: str
    readonly: bool | None = None


# --- process (config-schema.json) ---------------------------------------------


class ConsoleSize(SpecModel):
    height: Uint64
    width: Uint64


class User(SpecModel):
    uid: Uint32 | None = None
    gid: Uint32 | None = None
    umask: Uint32 | None = None
    additional_gids: list[Uint32] | None = None
    username: str | None = None


class Capabilities(SpecModel):
    bounding: list[str] | None = None
    effective: list[str] | None = None
    inheritable: list[str] | None = None
    permitted: list[str] | None = None
    ambient: list[str] | None = None


class Rlimit(SpecModel):
    type: Annotated[str, Field(pattern=r"^RLIMIT_[A-Z]+$")]
    soft: Uint64
    hard: Uint64


class IOPriority(SpecModel):
    class_: IOPriorityClass = Field(alias="class")
    priority: Int32 | None = None


class Scheduler(SpecModel):
    policy: SchedulerPolicy
    nice: Int32 | None = None
    priority: Int32 | None = None
    flags: list[SchedulerFlag] | None = None
    runtime: Uint64 | None = None
    deadline: Uint64 | None = None
    period: Uint64 | None = None


class ExecCPUAffinity(SpecModel):
    initial: CpuList | None = None
    final: CpuList | None = None


class Process(SpecModel):
    terminal: bool | None = None
    console_size: ConsoleSize | None = None
    cwd: str
    env: list[str] | None = None
    args: list[str] | None = None
    command_line: str | None = None
    user: User | None = None
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] | None = None
    no_new_privileges: bool | None = None
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    scheduler: Scheduler | None = None
    selinux_label: str | None = None
    io_priority: IOPriority | None = None
    exec_cpu_affinity: ExecCPUAffinity | None = Field(None, alias="execCPUAffinity")


# --- linux (config-linux.json, defs-linux.json) --------------------------------


class Namespace(SpecModel):
    type: NamespaceType
    path: str | None = None


class TimeOffset(SpecModel):
    secs: Int64 | None = None
    nanosecs: Uint32 | None = None


class TimeOffsets(SpecModel):
    boottime: TimeOffset | None = None
    monotonic: TimeOffset | None = None


class Device(SpecModel):
    type: Annotated[str, Field(pattern=r"^[cbup]$")]
    path: str
    major: Int64 | None = None
    minor: Int64 | None = None
    file_mode: FileMode | None = None
    uid: Uint32 | None = None
    gid: Uint32 | None = None


class NetDevice(SpecModel):
    name: str | None = None


class DeviceCgroup(SpecModel):
    allow: bool
    type: str | None = None
    major: Int64 | None = None
    minor: Int64 | None = None
    access: str | None = None


class Memory(SpecModel):
    limit: Int64 | None = None
    reservation: Int64 | None = None
    swap: Int64 | None = None
    kernel: Int64 | None = None
    kernel_tcp: Int64 | None = Field(None, alias="kernelTCP")
    swappiness: Uint64 | None = None
    disable_oom_killer: bool | None = Field(None, alias="disableOOMKiller")
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


class CPU(SpecModel):
    shares: Uint64 | None = None
    quota: Int64 | None = None
    burst: Uint64 | None = None
    period: Uint64 | None = None
    realtime_runtime: Int64 | None = None
    realtime_period: Uint64 | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: Int64 | None = None


class WeightDevice(SpecModel):
    major: Int64
    minor: Int64
    weight: Uint16 | None = None
    leaf_weight: Uint16 | None = None


class ThrottleDevice(SpecModel):
    major: Int64
    minor: Int64
    rate: Uint64 | None = None


class BlockIO(SpecModel):
    weight: Uint16 | None = None
    leaf_weight: Uint16 | None = None
    weight_device: list[WeightDevice] | None = None
    throttle_read_bps_device: list[ThrottleDevice] | None = None
    throttle_write_bps_device: list[ThrottleDevice] | None = None
    throttle_read_iops_device: list[ThrottleDevice] | None = Field(None, alias="throttleReadIOPSDevice")
    throttle_write_iops_device: list[ThrottleDevice] | None = Field(None, alias="throttleWriteIOPSDevice")


class HugepageLimit(SpecModel):
    page_size: Annotated[str, Field(pattern=r"^[1-9][0-9]*[KMG]B$")]
    limit: Uint64


class InterfacePriority(SpecModel):
    name: str
    priority: Uint32


class Network(SpecModel):
    class_id: Uint32 | None = Field(None, alias="classID")
    priorities: list[InterfacePriority] | None = None


class Pids(SpecModel):
    limit: Int64


class Rdma(SpecModel):
    hca_handles: Uint32 | None = None
    hca_objects: Uint32 | None = None


class Resources(SpecModel):
    devices: list[DeviceCgroup] | None = None
    memory: Memory | None = None
    cpu: CPU | None = None
    block_io: BlockIO | None = Field(None, alias="blockIO")
    hugepage_limits: list[HugepageLimit] | None = None
    network: Network | None = None
    pids: Pids | None = None
    rdma: dict[str, Rdma] | None = None
    unified: StringMap | None = None


class IntelRdt(SpecModel):
    clos_id: str | None = Field(None, alias="closID")
    # An array in the v1.3.0 schema (the prose says string); the schema wins.
    schemata: list[str] | None = None
    l3_cache_schema: str | None = None
    mem_bw_schema: Annotated[str, Field(pattern=r"^MB:[^\n]*$")] | None = None
    enable_monitoring: bool | None = None


class SyscallArg(SpecModel):
    index: Uint32
    value: Uint64
    value_two: Uint64 | None = None
    op: SeccompOperator


class Syscall(SpecModel):
    names: Annotated[list[str], Field(min_length=1)]
    action: SeccompAction
    errno_ret: Uint32 | None = None
    args: list[SyscallArg] | None = None


class Seccomp(SpecModel):
    default_action: SeccompAction
    default_errno_ret: Uint32 | None = None
    architectures: list[SeccompArch] | None = None
    flags: list[SeccompFlag] | None = None
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[Syscall] | None = None


class Personality(SpecModel):
    domain: PersonalityDomain | None = None
    flags: list[str] | None = None


class MemoryPolicy(SpecModel):
    mode: MemoryPolicyMode | None = None
    nodes: str | None = None
    flags: list[MemoryPolicyFlag] | None = None


class Linux(SpecModel):
    namespaces: list[Namespace] | None = None
    uid_mappings: list[IDMapping] | None = None
    gid_mappings: list[IDMapping] | None = None
    time_offsets: TimeOffsets | None = None
    devices: list[Device] | None = None
    net_devices: dict[str, NetDevice] | None = None
    cgroups_path: str | None = None
    rootfs_propagation: RootfsPropagation | None = None
    resources: Resources | None = None
    intel_rdt: IntelRdt | None = None
    sysctl: StringMap | None = None
    seccomp: Seccomp | None = None
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    mount_label: str | None = None
    personality: Personality | None = None
    memory_policy: MemoryPolicy | None = None


# --- top level ------------------------------------------------------------------


class Config(SpecModel):
    """config.json.  Only ``ociVersion`` is required by the official schema; the
    Linux-specific requirements (root, process.args, ...) are checked by spec.config."""

    oci_version: str
    root: Root | None = None
    mounts: list[Mount] | None = None
    process: Process | None = None
    hostname: str | None = None
    domainname: str | None = None
    hooks: Hooks | None = None
    annotations: StringMap | None = None
    linux: Linux | None = None


class State(SpecModel):
    """The ``state`` operation's output (state-schema.json)."""

    oci_version: str
    id: str
    status: ContainerStatus
    pid: Annotated[int, Field(ge=0)] | None = None
    bundle: str
    annotations: StringMap | None = None
