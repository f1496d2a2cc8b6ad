"""Worker and conductor settings shared through the environment (H2K_*), so that a worker
process started by `h2k worker`, by the embedded mode or by systemd sees the same values."""
from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from h2k_planner.errors import InputError
from h2k_tasks.accel import KVM_DEADLINE, QEMU, Hypervisor
from h2k_tasks.appliance import SESSION_TIMEOUT

HOUR = 3600


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    broker_url: str = Field("", description="redis://HOST:PORT/DB or unix:///path/to/redis.sock")
    host: str = Field("local", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="this worker's host name")
    concurrency: int = Field(2, ge=1, le=64, description="stages a worker runs at once")
    data_dir: str = Field("/", description="the directory this host writes outputs under: waves placed here must "
                                           "have their output directory inside it; its free space guides placement")
    convert_rate_limit: int = Field(0, ge=0, description="bytes per second each conversion may read (0: no cap), "
                                                         "to spare a shared source datastore")
    copy_segment: int = Field(1 << 30, ge=32 << 20, multiple_of=32 << 20,
                              description="the most a conversion that dies copies again: it marks every half "
                                          "of this, and its successor resumes from the last mark")
    qemu: str = Field(QEMU, description="the QEMU binary for the libguestfs appliance, the boot test and the "
                                        "accelerator probe (a name on PATH or a path)")
    kvm_deadline: float = Field(KVM_DEADLINE, ge=1, description="seconds a libguestfs launch, the first console "
                                "output of a boot, or the probe may take under KVM before the host falls back to TCG")
    guest_timeout: float = Field(SESSION_TIMEOUT, ge=60, description="seconds one guest stage's libguestfs session "
                                 "may take (launch excluded) before its appliance is killed and the VM fails")
    task_time_limit: int = Field(12 * HOUR, ge=60, description="hard limit for one stage, seconds")
    visibility_timeout: int = Field(13 * HOUR, ge=60, description="broker redelivery delay, > task_time_limit")
    lease_ttl: float = Field(60.0, ge=2, description="a stage whose heartbeat stops for this long is re-sent")
    max_retries: int = Field(3, ge=0, le=20, description="retries of a stage after a transient failure")
    retry_backoff: float = Field(30.0, ge=0, description="first retry delay, doubled on each retry")

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.visibility_timeout <= self.task_time_limit:
            raise ValueError(
                f"visibility_timeout ({self.visibility_timeout}s) must be longer than task_time_limit "
                f"({self.task_time_limit}s), or Redis redelivers running stages to a second worker"
            )
        return self

    def hypervisor(self) -> Hypervisor:
        return Hypervisor(self.qemu, self.kvm_deadline)

    def to_env(self) -> dict[str, str]:
        return {f"H2K_{k.upper()}": str(v) for k, v in self.model_dump().items()}

    @classmethod
    def from_env(cls, env=os.environ) -> "Settings":
        values = {k: env[f"H2K_{k.upper()}"] for k in cls.model_fields if f"H2K_{k.upper()}" in env}
        try:
            return cls(**values)
        except ValidationError as e:
            err = e.errors()[0]
            where = "H2K_" + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else "H2K_* settings"
            raise InputError("environment", f"{where}: {err['msg']}") from None


def celery_broker_url(url: str) -> str:
    """kombu spells a unix socket redis+socket://."""
    return "redis+socket://" + url[len("unix://"):] if url.startswith("unix://") else url


def redis_url(url: str) -> str:
    return "unix://" + url[len("redis+socket://"):] if url.startswith("redis+socket://") else url
