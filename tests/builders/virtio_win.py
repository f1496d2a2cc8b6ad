"""A fake virtio-win: the real `<Driver>/<os>/<arch>/<name>.{sys,inf,cat}` layout, every file empty."""
from __future__ import annotations

import subprocess
from pathlib import Path

DRIVERS = {"viostor": "viostor", "vioscsi": "vioscsi", "NetKVM": "netkvm", "Balloon": "balloon",
           "vioserial": "vioser", "viorng": "viorng"}
CLIENT_DIRS = ["w7", "w8", "w8.1", "w10", "w11"]
SERVER_DIRS = ["2k8R2", "2k12", "2k12R2", "2k16", "2k19", "2k22", "2k25"]


def fake_virtio_win(root: Path, omit: set[tuple[str, str]] = frozenset()) -> Path:
    """Build the tree under `root`; `omit` holds (driver, os dir) pairs to leave out."""
    for driver, name in DRIVERS.items():
        for os_dir in CLIENT_DIRS + SERVER_DIRS:
            if (driver, os_dir) in omit:
                continue
            arches = ["amd64", "x86"] if os_dir in CLIENT_DIRS else ["amd64"]
            for arch in arches:
                d = root / driver / os_dir / arch
                d.mkdir(parents=True, exist_ok=True)
                for ext in ("sys", "inf", "cat"):
                    (d / f"{name}.{ext}").touch()
    return root


def virtio_win_iso(tree: Path, iso: Path) -> Path:
    """An ISO image (Rock Ridge + Joliet, as virtio-win ships) of `tree`, made with genisoimage."""
    subprocess.run(["genisoimage", "-quiet", "-R", "-J", "-V", "virtio-win", "-o", str(iso), str(tree)],
                   check=True)
    return iso
