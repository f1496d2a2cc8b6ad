"""The power-off logic of the vSphere fetch on stand-ins for pyVmomi's VM and task objects: the
task's result is read, a failure is reported with vCenter's reason, nothing is done once the stage
may no longer act."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from pyVmomi import vim

from h2k_planner.models import VM
from h2k_tasks.process import Interrupted
from h2k_tasks.stages import StageFailed
from h2k_tasks.stages.power_off import moref_of, shut_down


class FakeVM:
    def __init__(self, state="poweredOn", tools=True, task_state="success", off_after_task=True):
        self.runtime = SimpleNamespace(powerState=state)
        self.tools, self.task_state, self.off_after_task = tools, task_state, off_after_task
        self.calls: list[str] = []

    def ShutdownGuest(self):
        self.calls.append("ShutdownGuest")
        if not self.tools:
            raise vim.fault.ToolsUnavailable()

    def PowerOffVM_Task(self):
        self.calls.append("PowerOffVM_Task")
        if self.off_after_task:
            self.runtime.powerState = "poweredOff"
        fault = vim.fault.TaskInProgress(msg="another task is in progress") if self.task_state == "error" else None
        return SimpleNamespace(info=SimpleNamespace(state=self.task_state, error=fault))


def yes() -> bool:
    return True


def test_a_guest_that_shuts_down_is_not_powered_off():
    vm = FakeVM()
    vm.ShutdownGuest = lambda: setattr(vm.runtime, "powerState", "poweredOff")
    assert shut_down(vm, "web", 5, yes, sleep=lambda s: None) == "guest shutdown"


def test_without_tools_the_vm_is_powered_off_at_once_and_the_task_checked():
    vm = FakeVM(tools=False)
    assert shut_down(vm, "web", 300, yes, sleep=lambda s: None) == "power-off"
    assert vm.calls == ["ShutdownGuest", "PowerOffVM_Task"]


def test_a_failed_power_off_task_fails_with_its_reason():
    vm = FakeVM(tools=False, task_state="error", off_after_task=False)
    with pytest.raises(StageFailed, match="power-off of web failed: another task is in progress"):
        shut_down(vm, "web", 300, yes, sleep=lambda s: None)


def test_a_task_that_succeeds_but_leaves_the_vm_on_fails():
    vm = FakeVM(tools=False, off_after_task=False)
    with pytest.raises(StageFailed, match="the task succeeded but the VM is poweredOn"):
        shut_down(vm, "web", 300, yes, sleep=lambda s: None)


def test_nothing_is_done_once_the_stage_may_not_act_and_an_off_vm_is_left_alone():
    vm = FakeVM()
    with pytest.raises(Interrupted):
        shut_down(vm, "web", 300, lambda: False, sleep=lambda s: None)
    assert vm.calls == []
    off = FakeVM(state="poweredOff")
    assert shut_down(off, "web", 300, lambda: False) == "already off" and off.calls == []


def test_moref_from_the_source_url():
    vm = VM(name="x", source="vsphere://u@vc/DC1?moref=vm-42", source_kind="vsphere", disks=[])
    assert moref_of(vm) == "vm-42"
    with pytest.raises(StageFailed):
        moref_of(vm.model_copy(update={"source": "vsphere://u@vc/DC1"}))
