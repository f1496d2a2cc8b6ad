"""finalize: the VM's report.json, always, and its libvirt domain when it succeeded."""
from __future__ import annotations

import json
import os

from h2k_planner.models import Plan, PlannedVM
from h2k_tasks import atomic
from h2k_tasks.firmware import firmware_concerns, shipped_vm
from h2k_tasks.machine import boot_disk_concerns, shipped_machine
from h2k_tasks.outputs.libvirt import domain_xml
from h2k_tasks.stages import output_path, vm_dir
from h2k_tasks.state import decode


def stage_rows(pvm: PlannedVM, records: dict[tuple[str, str], dict]) -> list[dict]:
    rows = []
    for (lane, stage), rec in records.items():
        started, ended = float(rec.get("started") or 0), float(rec.get("ended") or 0)
        rows.append({
            "stage": stage, "lane": lane, "status": rec.get("status", "pending"),
            "attempts": int(rec.get("attempt") or 0), "host": rec.get("host", ""),
            "started": started or None, "ended": ended or None,
            "seconds": round(ended - started, 3) if started and ended >= started else None,
            "bytes": int(rec.get("bytes") or 0),  # what the stage copied (the conversion), as it reported
            "error": rec.get("error") or None,
        })
    return rows


def vm_status(records: dict[tuple[str, str], dict]) -> str:
    statuses = [rec.get("status", "pending") for rec in records.values()]
    if "cancelled" in statuses:
        return "cancelled"
    if "failed" in statuses:
        return "failed"
    return "succeeded" if all(s == "succeeded" for s in statuses) else "incomplete"


def build_report(plan: Plan, pvm: PlannedVM, records: dict[tuple[str, str], dict]) -> dict:
    status = vm_status(records)
    guest = decode(records.get(("vm", "guest"), {}), "result", {})
    vm = shipped_vm(pvm.vm, guest.get("inspection"))
    validate = decode(records.get(("vm", "validate"), {}), "result", {})
    final = {c["path"]: c for c in validate.get("checks", [])}
    outputs = []
    for disk in vm.disks:
        lane = f"d{disk.index}"
        verified = decode(records.get((lane, "verify"), {}), "result", {})
        converted = decode(records.get((lane, "convert"), {}), "result", {})
        path = output_path(plan.output, vm, disk)
        outputs.append({
            "disk": disk.index, "source": disk.source, "source_chain": disk.chain,
            "path": path, "format": plan.output.format, "compressed": plan.output.compress,
            "virtual_size": disk.virtual_size,
            # the guest-visible content digests (h2k_tasks/copier.py): of the source as converted, and
            # of the output as validated (after the guest fixes) or else as verified
            "source_content_sha256": verified.get("source_content_sha256"),
            "content_sha256": final.get(path, {}).get("content_sha256") or verified.get("content_sha256"),
            "identical_to_source": verified.get("identical", False),  # as converted, before guest fixes
            # bytes taken from a vSphere datastore to convert the disk (None: read in place on this host)
            "transferred": converted.get("transferred"),
            "fixed": bool(guest.get("changes")),
        })
    return {
        "vm": vm.name, "status": status, "wave": plan.wave, "host": pvm.host,
        "source": {"path": vm.source, "kind": vm.source_kind},
        "hardware": vm.model_dump(include={"firmware", "secure_boot", "guest_os", "cpus", "memory_mib", "uuid", "nics"},
                                  mode="json"),
        "concerns": [c.model_dump(mode="json") for c in vm.concerns + firmware_concerns(pvm.vm, guest.get("inspection"))
                     + boot_disk_concerns(pvm.vm, guest.get("inspection"))],
        "stages": stage_rows(pvm, records),
        "inspection": guest.get("inspection"),
        "changes": guest.get("changes", []),
        "notes": guest.get("notes", []) + ([validate["boot_note"]] if validate.get("boot_note") else []),
        "validation": validate or None,
        # what the libguestfs session and the boot test ran on, and why (a fallback from KVM says so)
        "accelerators": {"guest": guest.get("accel"),
                         "boot": ({"name": boot["accel"], "reason": boot["accel_reason"]}
                                  if (boot := validate.get("boot")) else None)},
        "outputs": outputs,
        "domain_xml": os.path.join(vm_dir(plan.output, vm), f"{vm.slug}.xml") if status == "succeeded" else None,
        "first_boot_domain_xml": (os.path.join(vm_dir(plan.output, vm), f"{vm.slug}-firstboot-sata.xml")
                                  if status == "succeeded" and pvm.two_phase_boot else None),
        "errors": [f"{lane}/{stage}: {rec['error']}" for (lane, stage), rec in records.items()
                   if rec.get("error") and rec.get("status") in ("failed", "cancelled")],
    }


def finalize_vm(plan: Plan, pvm: PlannedVM, records: dict[tuple[str, str], dict]) -> dict:
    report = build_report(plan, pvm, records)
    directory = vm_dir(plan.output, pvm.vm)
    os.makedirs(directory, exist_ok=True)
    if report["status"] == "succeeded":
        disks = [(output_path(plan.output, pvm.vm, d), plan.output.format) for d in pvm.vm.disks]
        inspection = report["inspection"]
        atomic.write_atomic(report["domain_xml"], domain_xml(shipped_machine(pvm.vm, inspection, disks)))
        if report["first_boot_domain_xml"]:
            atomic.write_atomic(report["first_boot_domain_xml"],
                                domain_xml(shipped_machine(pvm.vm, inspection, disks, bus="sata")))
    atomic.write_atomic(os.path.join(directory, "report.json"), json.dumps(report, indent=2) + "\n")
    return {"report": os.path.join(directory, "report.json"), "status": report["status"],
            "domain_xml": report["domain_xml"], "first_boot_domain_xml": report["first_boot_domain_xml"]}
