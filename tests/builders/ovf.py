"""OVF packages and OVAs (built with Python's tarfile) around disk images made with qemu-img."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile

from tests.builders.disks import run

NIC_MAC = "00:50:56:aa:bb:01"


def ovf_xml(name: str, disks: list[tuple[str, int, bool]], firmware: str = "bios", mac: str = NIC_MAC,
            secure_boot: bool = False, boot_order: tuple[int, ...] = ()) -> str:
    """An OVF 1.0 envelope for `disks` given as (file name, capacity in bytes, gzip'd); `boot_order`:
    disk numbers VMware's vmw:BootOrderSection lists, in order."""
    files = "".join(
        f'<File ovf:id="file{n}" ovf:href="{href}"' + (' ovf:compression="gzip"' if gz else "") + "/>"
        for n, (href, _, gz) in enumerate(disks))
    disk_defs = "".join(
        f'<Disk ovf:diskId="vmdisk{n}" ovf:fileRef="file{n}" ovf:capacity="{cap // 2**20}" '
        f'ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>'
        for n, (_, cap, _) in enumerate(disks))
    items = "".join(
        f"<Item><rasd:AddressOnParent>{n}</rasd:AddressOnParent><rasd:ElementName>Hard disk {n + 1}</rasd:ElementName>"
        f"<rasd:HostResource>ovf:/disk/vmdisk{n}</rasd:HostResource><rasd:InstanceID>{10 + n}</rasd:InstanceID>"
        f"<rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>"
        for n in range(len(disks)))
    extra = f'<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="{firmware}"/>'
    if secure_boot:
        extra += '<vmw:Config ovf:required="false" vmw:key="uefi.secureBoot.enabled" vmw:value="true"/>'
    boot = "".join(f'<vmw:BootOrderSection vmw:instanceId="{10 + n}" vmw:type="disk"><Info>Virtual hardware device '
                   "boot order</Info></vmw:BootOrderSection>" for n in boot_order)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
 xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
 xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>{files}</References>
  <DiskSection><Info>Virtual disk information</Info>{disk_defs}</DiskSection>
  <NetworkSection><Info>networks</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info><Name>{name}</Name>{boot}
    <OperatingSystemSection ovf:id="96" vmw:osType="debian12_64Guest"><Info>OS</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>hardware</Info>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>2 CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>768MB</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>768</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      {items}
      <Item><rasd:Address>{mac}</rasd:Address><rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>20</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      {extra}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def manifest(directory: str, names: list[str], algo: str = "SHA256") -> str:
    lines = []
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            lines.append(f"{algo}({name})= {hashlib.new(algo.lower(), f.read()).hexdigest()}")
    return "\n".join(lines) + "\n"


def build_ovf(out_dir: str, name: str, raws: list[str], gzip_disks: bool = False, with_manifest: bool = True,
              algo: str = "SHA256", **xml) -> str:
    """An OVF package in `out_dir`: streamOptimized VMDKs of `raws` (gzip'd if asked), the .ovf and
    a manifest. Returns the .ovf path."""
    os.makedirs(out_dir, exist_ok=True)
    disks = []
    for n, raw in enumerate(raws):
        vmdk = f"{name}-disk{n + 1}.vmdk"
        run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw,
             os.path.join(out_dir, vmdk)])
        if gzip_disks:
            with open(os.path.join(out_dir, vmdk), "rb") as f, gzip.open(os.path.join(out_dir, vmdk + ".gz"), "wb") as g:
                shutil.copyfileobj(f, g)
            os.unlink(os.path.join(out_dir, vmdk))
            vmdk += ".gz"
        disks.append((vmdk, os.path.getsize(raw), gzip_disks))
    ovf = os.path.join(out_dir, f"{name}.ovf")
    with open(ovf, "w") as f:
        f.write(ovf_xml(name, disks, **xml))
    if with_manifest:
        with open(os.path.join(out_dir, f"{name}.mf"), "w") as f:
            f.write(manifest(out_dir, [f"{name}.ovf"] + [d[0] for d in disks], algo))
    return ovf


def pack_ova(ovf: str, ova: str) -> str:
    """Tar the OVF package (descriptor first, then manifest, then disks) into `ova`."""
    d = os.path.dirname(ovf)
    stem = os.path.splitext(os.path.basename(ovf))[0]
    names = [os.path.basename(ovf)] + ([f"{stem}.mf"] if os.path.exists(os.path.join(d, f"{stem}.mf")) else [])
    names += sorted(n for n in os.listdir(d) if n.startswith(stem) and n not in names and not n.endswith((".ovf", ".mf")))
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        for n in names:
            tar.add(os.path.join(d, n), arcname=n)
    return ova


def vbox_ovf_xml(name: str, href: str, capacity: int, mac: str, efi: bool) -> str:
    """An OVF 1.0 envelope as VirtualBox exports it: a SATA (AHCI) controller, a streamOptimized
    disk by `/disk/…` (no `ovf:` prefix), memory in MegaBytes, and the MAC and firmware only in
    its `vbox:Machine` section."""
    return f"""<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
 xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
 xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References><File ovf:id="file1" ovf:href="{href}"/></References>
  <DiskSection><Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1"
     ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <NetworkSection><Info>Logical networks used in the package</Info><Network ovf:name="NAT"/></NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96"><Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description><vbox:OSType ovf:required="false">Debian_64</vbox:OSType></OperatingSystemSection>
    <VirtualHardwareSection><Info>Virtual hardware requirements for a virtual machine</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType></System>
      <Item><rasd:Caption>2 virtual CPU</rasd:Caption><rasd:ElementName>2 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:ElementName>1536 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1536</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>ideController0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>sataController0</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:ElementName>disk1</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>7</rasd:InstanceID>
        <rasd:Parent>5</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.16-linux" uuid="{{9c3b1c4e-0000-4000-8000-000000000001}}" name="{name}" OSType="Debian_64">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <Hardware><CPU count="2"/><Memory RAMSize="1536"/>{'<Firmware type="EFI"/>' if efi else ''}
        <Network><Adapter slot="0" enabled="true" MACAddress="{mac.replace(':', '').upper()}" type="82540EM"><NAT/></Adapter>
          <Adapter slot="1" enabled="false" MACAddress="080027000002" type="82540EM"/></Network>
        <StorageControllers><StorageController name="SATA" type="AHCI" PortCount="2">
          <AttachedDevice type="HardDisk" port="1" device="0"><Image uuid="{{9c3b1c4e-0000-4000-8000-000000000002}}"/></AttachedDevice>
        </StorageController></StorageControllers></Hardware>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
"""


def ovf2_xml(name: str, href: str, capacity_mib: int, mac: str) -> str:
    """An OVF 2.0 envelope: the version 2 namespace, disks as `StorageItem`s, NICs as
    `EthernetPortItem`s, an NVMe controller."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/2" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
 xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData"
 xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData"
 xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
 xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:id="file1" ovf:href="{href}"/></References>
  <DiskSection><Info>Virtual disk information</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{capacity_mib}" ovf:capacityAllocationUnits="byte * 2^20"
     ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <NetworkSection><Info>networks</Info><Network ovf:name="Backend"/></NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info><Name>{name}</Name>
    <OperatingSystemSection ovf:id="80" vmw:osType="rhel9_64Guest"><Info>OS</Info></OperatingSystemSection>
    <VirtualHardwareSection><Info>hardware</Info>
      <Item><rasd:ElementName>4 CPUs</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits><rasd:ElementName>2 GB</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>NVMe controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.nvme.controller</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <StorageItem><sasd:AddressOnParent>0</sasd:AddressOnParent><sasd:ElementName>Hard disk 1</sasd:ElementName>
        <sasd:HostResource>ovf:/disk/vmdisk1</sasd:HostResource><sasd:InstanceID>4</sasd:InstanceID>
        <sasd:Parent>3</sasd:Parent><sasd:ResourceType>17</sasd:ResourceType></StorageItem>
      <EthernetPortItem><epasd:Address>{mac}</epasd:Address><epasd:Connection>Backend</epasd:Connection>
        <epasd:ElementName>Network adapter 1</epasd:ElementName><epasd:InstanceID>5</epasd:InstanceID>
        <epasd:ResourceSubType>VmxNet3</epasd:ResourceSubType><epasd:ResourceType>10</epasd:ResourceType></EthernetPortItem>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""
