"""Fixtures for the vSphere tests: a running simulator and endpoints to it. Import them into a test module."""
from __future__ import annotations

import secrets

import pytest

from h2k_planner.secret_ref import SecretRef
from h2k_planner.sources.vsphere_endpoint import Endpoint
from tests import vcsim as vcsim_launcher

BULK_VMS = 400


@pytest.fixture(scope="session")
def vcsim_password() -> str:
    """A password unique to this run, so grepping output for it means something."""
    return f"pw-{secrets.token_hex(12)}"


@pytest.fixture(scope="session")
def vcsim(vcsim_password):
    sim = vcsim_launcher.start("h2k-admin", vcsim_password, vms=BULK_VMS)
    yield sim
    sim.stop()


@pytest.fixture
def password_file(tmp_path, vcsim_password):
    path = tmp_path / "vsphere.pw"
    path.write_text(vcsim_password + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def endpoint(vcsim, password_file) -> Endpoint:
    return Endpoint(host=vcsim.host, port=vcsim.port, user=vcsim.user, datacenter=vcsim.datacenter,
                    password=SecretRef(file=str(password_file)), thumbprint=vcsim.thumbprint)
