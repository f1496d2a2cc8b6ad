"""govmomi's vCenter simulator for the vSphere tests: built from main.go with Debian's Go, offline."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.builders.cache import locked

HERE = Path(__file__).parent
GOPATH = "/usr/share/gocode"


def binary() -> Path:
    """The launcher, built once per content of main.go (GOPATH mode, no module proxy, no network)."""
    source = HERE / "main.go"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "h2k-vcsim"
    exe = cache / f"vcsim-h2k-{digest}"
    if exe.exists():
        return exe
    if not shutil.which("go") or not Path(GOPATH, "src/github.com/vmware/govmomi/simulator").is_dir():
        raise RuntimeError("the vSphere tests need Debian's golang-go and golang-github-vmware-govmomi-dev")
    cache.mkdir(parents=True, exist_ok=True)
    with locked("build", cache):  # concurrent test processes build it once
        if not exe.exists():
            tmp = exe.with_suffix(".tmp")
            env = dict(os.environ, GO111MODULE="off", GOPROXY="off", GOFLAGS="", GOPATH=GOPATH,
                       GOCACHE=str(cache / "gocache"))
            subprocess.run(["go", "build", "-o", str(tmp), str(source)], env=env, check=True, cwd=HERE)
            tmp.rename(exe)
    return exe


@dataclass
class Simulator:
    url: str
    host: str
    port: int
    thumbprint: str
    ca_pem: str
    datacenter: str
    datastore: str
    datastore_dir: Path
    user: str
    password: str
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(user: str, password: str, vms: int = 10, idle: str = "0s") -> Simulator:
    """Start the simulator on 127.0.0.1 with `vms` plain VMs plus the special ones; the login is user/password."""
    env = dict(os.environ, VCSIM_USER=user, VCSIM_PASSWORD=password)
    proc = subprocess.Popen([str(binary()), "-vms", str(vms), "-idle", idle], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"vcsim did not start: {proc.stderr.read()}")
    info = json.loads(line)
    host, port = info["host"].rsplit(":", 1)
    return Simulator(url=info["url"], host=host, port=int(port), thumbprint=info["thumbprint"], ca_pem=info["ca_pem"],
                     datacenter=info["datacenter"], datastore=info["datastore"],
                     datastore_dir=Path(info["datastore_dir"]), user=user, password=password, process=proc)
