"""YAML configuration: `--config` files deep-merged in order (later wins), then command-line flags.

Every key is known: an unknown one is an error naming the file and the key's path, so a typo
never silently falls back to a default.
"""
from __future__ import annotations

import os
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from h2k_planner.errors import InputError
from h2k_planner.models import OutputFormat
from h2k_planner.placement import PlacementRules
from h2k_tasks.settings import Settings


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    directory: str = Field("", description="where each VM's directory is made (on the worker hosts)")
    format: OutputFormat = "qcow2"
    compress: bool = False


class VMOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str | None = Field(None, description="run this VM on this worker host")
    guest: bool = Field(True, description="false: copy the disks only, no guest inspection or fixes")
    allow_concerns: list[str] = Field(default_factory=list, description="Critical concern ids to migrate anyway")
    boot_test: bool | None = Field(None, description="override fixes.boot_test for this VM")
    two_phase_boot: bool = Field(False, description="also emit a first-boot domain with SATA disks, for guests "
                                                    "that install their virtio driver on first boot")


class FixesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    virtio_win: str = Field("", description="virtio-win ISO or directory on the worker hosts (Windows guests)")
    firstboot_service_exe: str = Field("", description="service host binary for the Windows first-boot runner")
    serial_console: bool = Field(True, description="add console=ttyS0 to Linux kernel command lines")
    boot_test: bool = Field(True, description="boot every converted guest and wait for a login prompt")
    boot_timeout: float = Field(900.0, gt=0, description="seconds the boot test waits (TCG is slow)")


class VCenterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="vsphere://USER@HOST[:PORT]/DATACENTER (no password in it)")
    password_file: str | None = Field(None, description="file holding the password, on the conductor and workers")
    password_env: str | None = Field(None, description="environment variable holding the password")
    ca_file: str | None = None
    thumbprint: str | None = Field(None, description="SHA-256 of the server certificate, to pin it")
    insecure: bool = False
    shutdown: bool = Field(False, description="shut down powered-on VMs before migrating them (cold migration)")
    shutdown_timeout: float = Field(300.0, gt=0, description="seconds to wait for a guest shutdown before power-off")

    def endpoint(self):
        from h2k_planner.secret_ref import SecretRef
        from h2k_planner.sources.vsphere_endpoint import parse_url

        ref = SecretRef(file=self.password_file) if self.password_file else (
            SecretRef(env=self.password_env) if self.password_env else None)
        return parse_url(self.url, ref, ca_file=self.ca_file, thumbprint=self.thumbprint, insecure=self.insecure)


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_source: int = Field(20, ge=0, description="disk lanes reading one source host or datastore at once")
    per_wave: int = Field(0, ge=0, description="lanes of one wave in flight at once (0: no cap)")


class ConductorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    poll_interval: float = Field(2.0, gt=0, le=60, description="longest wait between passes: a pass starts at once when a wave's state log gets an entry")
    stall_after: float = Field(120.0, gt=0, description="a sent lane idle this long is sent again (lost message)")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", description="the wave's name, for `h2k wave submit`")
    sources: list[str] = Field(default_factory=list, description="sources of a wave file, as on the command line")
    broker_url: str = Field("", description="empty: start a private redis-server and a local worker")
    output: OutputConfig = OutputConfig()
    vms: dict[str, VMOverride] = Field(default_factory=dict, description="per-VM overrides by VM name")
    fixes: FixesConfig = FixesConfig()
    vcenters: dict[str, VCenterConfig] = Field(default_factory=dict,
                                               description="vCenters by alias; a source `vsphere:ALIAS/PATTERN` "
                                                           "reads the VMs matching PATTERN from it")
    placement: PlacementRules = PlacementRules()
    limits: LimitsConfig = LimitsConfig()
    worker: Settings = Settings()
    conductor: ConductorConfig = ConductorConfig()

    @model_validator(mode="after")
    def _one_broker(self) -> "Config":
        if self.worker.broker_url:
            raise ValueError("set broker_url at the top level, not under worker")
        return self

    def allowed_concerns(self) -> dict[str, list[str]]:
        return {name: vm.allow_concerns for name, vm in self.vms.items()}

    def worker_settings(self, **changes) -> Settings:
        return self.worker.model_copy(update={"broker_url": self.broker_url, **changes})


def deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_keys(data: Any, model: type[BaseModel], path: str, file: str) -> None:
    if not isinstance(data, dict):
        raise InputError(file, f"{path or 'top level'} must be a mapping, not {type(data).__name__}")
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            raise InputError(file, f"unknown key {where}")
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            _check_keys(value, sub, where, file)
        elif getattr(sub, "__origin__", None) is dict and isinstance(value, dict):
            item = sub.__args__[1]
            if isinstance(item, type) and issubclass(item, BaseModel):
                for name, entry in value.items():
                    _check_keys(entry, item, f"{where}.{name}", file)


def read_file(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise InputError(path, f"cannot read config: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(path, f"not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    data = data or {}
    _check_keys(data, Config, "", path)
    return data


def load(paths: list[str], overrides: dict | None = None) -> Config:
    """Merge the files in order, then `overrides` (from flags and the environment)."""
    merged: dict = {}
    for path in paths:
        merged = deep_merge(merged, read_file(path))
    merged = deep_merge(merged, overrides or {})
    if not merged.get("broker_url") and os.environ.get("H2K_BROKER_URL"):
        merged["broker_url"] = os.environ["H2K_BROKER_URL"]
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise InputError(", ".join(paths) or "configuration", f"{where}: {err['msg']}") from None
