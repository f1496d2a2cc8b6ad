"""fetch for packed disks (gzip'd files, gzip'd OVA members, any disk of a zip or compressed-tar
OVA): unpack the bytes once into the VM's output directory, to a temp name, check qemu-img reads
the declared size, and rename. Convert then reads the unpacked file (`readable()`); the
source itself is never written."""
from __future__ import annotations

import gzip
import os
import subprocess
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from typing import IO, Callable, Iterator

from h2k_planner.models import Disk, Output, Packed, VM
from h2k_planner.sources.ova_archive import streamed_member
from h2k_planner.sources.ovf_vm import Window
from h2k_tasks import atomic, process, qemu_img
from h2k_tasks.stages import StageFailed, vm_dir

CHUNK = 4 * 1024 * 1024
SLACK = 64 * 1024 * 1024  # metadata an image may carry beyond its virtual size


def unpacked_path(output: Output, vm: VM, disk: Disk) -> str:
    return os.path.join(vm_dir(output, vm), f"{vm.slug}-disk{disk.index}.unpacked.{disk.format}")


def readable(output: Output, vm: VM, disk: Disk) -> Disk:
    """The local disk as convert reads it: a packed disk's unpacked copy, else itself."""
    if disk.packed is not None:
        return disk.model_copy(update={"source": unpacked_path(output, vm, disk)})
    return disk


@contextmanager
def _packed_bytes(packed: Packed) -> Iterator[IO[bytes]]:
    """The packed bytes as a stream: a window of the file, or a member streamed out of an archive."""
    if packed.member is not None:
        with streamed_member(packed.file, packed.member) as f:
            yield f
        return
    with open(packed.file, "rb") as f:
        f.seek(packed.offset)
        yield Window(f, packed.size)


def fetch_packed(disk: Disk, dest: str, gen: int, tick: Callable[[], bool],
                 owns: Callable[[], bool]) -> dict:
    packed = disk.packed
    limit = disk.virtual_size + disk.virtual_size // 8 + SLACK
    with atomic.staged(dest, gen) as temp:
        try:
            st = os.stat(packed.file)
            with _packed_bytes(packed) as raw, open(temp, "wb") as out:
                stream = gzip.GzipFile(fileobj=raw) if packed.gzip else raw
                written = 0
                while chunk := stream.read(CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise StageFailed(f"{packed.file}: packed disk expands past {limit} bytes")
                    out.write(chunk)
                    if not tick():
                        raise process.Interrupted("lease lost while unpacking")
            size = int(qemu_img.info(temp, disk.format)["virtual-size"])
            if size != disk.virtual_size:
                raise StageFailed(f"{packed.file}: the unpacked disk holds {size} bytes, the source declares {disk.virtual_size}")
            if not owns():
                raise process.Interrupted("lease lost before publishing the unpacked disk")
        except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile) as e:
            raise StageFailed(f"{packed.file}: cannot unpack: {e}") from None
        except subprocess.CalledProcessError as e:
            raise StageFailed(f"{packed.file}: qemu-img cannot read the unpacked disk: {e.stderr.strip()[-200:]}") from None
    atomic.publish(temp, dest)
    return {"files": [{"path": packed.file, "size": st.st_size, "mtime_ns": st.st_mtime_ns}],
            "unpacked": atomic.identity(dest)}
