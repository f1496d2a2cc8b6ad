"""Placement is pure: pinned hosts, source-group maps, then most room first."""
from __future__ import annotations

import pytest

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Disk
from h2k_planner.placement import HostFacts, PlacementRules, place, source_cap, source_group

GIB = 2**30


def vm(name: str, gib: int, source: str = "[ds1] x/x.vmdk") -> VM:
    return VM(name=name, source=f"/{name}.vmx", source_kind="vmx",
              disks=[Disk(source=source, format="vmdk", virtual_size=gib * GIB)])


def test_most_room_first_counting_queued_and_placed_bytes():
    hosts = [HostFacts(name="a", free_bytes=100 * GIB, queued_bytes=30 * GIB), HostFacts(name="b", free_bytes=60 * GIB)]
    placed = place([vm("big", 50), vm("mid", 20), vm("small", 5)], PlacementRules(), hosts, {})
    # a has 70 free after its queue, b 60: big -> a (20 left), mid -> b (40 left), small -> b
    assert placed == {"big": "a", "mid": "b", "small": "b"}


def test_pins_and_source_map_win():
    hosts = [HostFacts(name="a", free_bytes=10 * GIB), HostFacts(name="b", free_bytes=99 * GIB)]
    rules = PlacementRules(sources={"ds:ds1": "a"})
    placed = place([vm("x", 1), vm("y", 1, source="[ds2] y.vmdk"), vm("z", 1)], rules, hosts, {"z": "b"})
    assert placed == {"x": "a", "y": "b", "z": "b"}


def test_unknown_host_is_refused_and_no_hosts_means_local():
    with pytest.raises(InputError, match="host 'c' \\(for x\\) has no live worker"):
        place([vm("x", 1)], PlacementRules(), [HostFacts(name="a")], {"x": "c"})
    assert place([vm("x", 1)], PlacementRules(), [], {}) == {"x": "local"}


def test_source_group_of_datastore_and_file(tmp_path):
    assert source_group(vm("x", 1)) == "ds:ds1"
    assert source_group(vm("x", 1, source=str(tmp_path / "a.vmdk"))).startswith("file:/")


def test_the_cap_counts_reads_against_the_source_host_and_placement_keeps_the_datastore():
    on_esx = vm("x", 1).model_copy(update={"source_host": "esx:esx07"})
    assert source_cap(on_esx) == "esx:esx07" and source_group(on_esx) == "ds:ds1"
    assert source_cap(vm("y", 1)) == "ds:ds1"
    hosts = [HostFacts(name="a"), HostFacts(name="b", free_bytes=GIB)]
    assert place([on_esx], PlacementRules(sources={"ds:ds1": "a"}), hosts, {}) == {"x": "a"}
