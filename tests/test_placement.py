"""Placement is pure: hosts writing under the output directory only, pinned hosts, source-group maps, then
most room first; the space check counts each VM against its host's own report."""
from __future__ import annotations

import pytest

from h2k_planner.concerns import check_space
from h2k_planner.errors import InputError
from h2k_planner.models import VM, Disk, Output
from h2k_planner.placement import HostFacts, PlacementRules, place, source_cap, source_group

GIB = 2**30


def vm(name: str, gib: int, source: str = "[ds1] x/x.vmdk") -> VM:
    return VM(name=name, source=f"/{name}.vmx", source_kind="vmx",
              disks=[Disk(source=source, format="vmdk", virtual_size=gib * GIB)])


def test_most_room_first_counting_queued_and_placed_bytes():
    hosts = [HostFacts(name="a", free_bytes=100 * GIB, queued_bytes=30 * GIB), HostFacts(name="b", free_bytes=60 * GIB)]
    placed = place([vm("big", 50), vm("mid", 20), vm("small", 5)], PlacementRules(), hosts, {}, "/out")
    # a has 70 free after its queue, b 60: big -> a (20 left), mid -> b (40 left), small -> b
    assert placed == {"big": "a", "mid": "b", "small": "b"}


def test_pins_and_source_map_win():
    hosts = [HostFacts(name="a", free_bytes=10 * GIB), HostFacts(name="b", free_bytes=99 * GIB)]
    rules = PlacementRules(sources={"ds:ds1": "a"})
    placed = place([vm("x", 1), vm("y", 1, source="[ds2] y.vmdk"), vm("z", 1)], rules, hosts, {"z": "b"}, "/out")
    assert placed == {"x": "a", "y": "b", "z": "b"}


def test_unknown_host_is_refused_and_no_hosts_means_local():
    with pytest.raises(InputError, match="host 'c' \\(for x\\) has no live worker"):
        place([vm("x", 1)], PlacementRules(), [HostFacts(name="a")], {"x": "c"}, "/out")
    assert place([vm("x", 1)], PlacementRules(), [], {}, "/out") == {"x": "local"}


def test_source_group_of_datastore_and_file(tmp_path):
    assert source_group(vm("x", 1)) == "ds:ds1"
    assert source_group(vm("x", 1, source=str(tmp_path / "a.vmdk"))).startswith("file:/")


def test_the_cap_counts_reads_against_the_source_host_and_placement_keeps_the_datastore():
    on_esx = vm("x", 1).model_copy(update={"source_host": "esx:esx07"})
    assert source_cap(on_esx) == "esx:esx07" and source_group(on_esx) == "ds:ds1"
    assert source_cap(vm("y", 1)) == "ds:ds1"
    hosts = [HostFacts(name="a"), HostFacts(name="b", free_bytes=GIB)]
    assert place([on_esx], PlacementRules(sources={"ds:ds1": "a"}), hosts, {}, "/out") == {"x": "a"}


def test_only_hosts_whose_data_dir_holds_the_output_take_vms():
    hosts = [HostFacts(name="big", data_dir="/srv/other", free_bytes=99 * GIB),
             HostFacts(name="small", data_dir="/srv/h2k", free_bytes=GIB)]
    assert place([vm("x", 5)], PlacementRules(), hosts, {}, "/srv/h2k/wave1") == {"x": "small"}
    with pytest.raises(InputError, match="host 'big' \\(for x\\) writes under its data_dir /srv/other"):
        place([vm("x", 1)], PlacementRules(), hosts, {"x": "big"}, "/srv/h2k/wave1")
    with pytest.raises(InputError, match="no live worker writes under /data/w: their data_dir are big: /srv/other"):
        place([vm("x", 1)], PlacementRules(), hosts, {}, "/data/w")
    with pytest.raises(InputError, match="no live worker writes under /srv/h2k-old"):  # a path, not a prefix
        place([vm("x", 1)], PlacementRules(), hosts[1:], {}, "/srv/h2k-old")


def test_space_is_counted_per_host_from_its_report():
    hosts = {"a": HostFacts(name="a", data_dir="/srv", free_bytes=10 * GIB, queued_bytes=4 * GIB),
             "b": HostFacts(name="b", data_dir="/srv", free_bytes=10 * GIB)}
    vms = [vm("x", 4), vm("y", 4), vm("z", 4)]
    seen = check_space(vms, Output(directory="/srv/w", format="raw"), {"x": "a", "y": "a", "z": "b"}, hosts)
    concerns = {v.name: [c.message for c in v.concerns] for v in seen}
    assert concerns["x"] == [] and concerns["z"] == []  # a: 6 GiB of room after its queue, b: 10
    assert concerns["y"] == [f"the outputs need up to {4 * GIB} bytes; host a has {2 * GIB} free in /srv "
                             "(as its worker reported, less what is queued for it)"]
