// Command vcsim-h2k starts govmomi's vCenter simulator on 127.0.0.1 with TLS, builds the test
// inventory the vSphere tests expect, prints one JSON line describing it, and serves until
// standard input closes. The login is taken from VCSIM_USER and VCSIM_PASSWORD.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type env struct {
	ctx     context.Context
	folders *object.DatacenterFolders
	pool    *object.ResourcePool
	host    *object.HostSystem
	dsRef   types.ManagedObjectReference
	netBack types.BaseVirtualDeviceBackingInfo
}

// vmSpec describes one VM of the inventory.
type vmSpec struct {
	name     string
	guest    string
	firmware string
	diskMode string
	sharing  string
	cbt      bool
	diskKB   int64
}

func (e *env) create(folder *object.Folder, s vmSpec) (*object.VirtualMachine, error) {
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return nil, err
	}
	devices = append(devices, scsi)
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), e.dsRef,
		fmt.Sprintf("[LocalDS_0] %s/%s.vmdk", s.name, s.name))
	disk.CapacityInKB = s.diskKB
	backing := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	backing.ThinProvisioned = types.NewBool(true)
	if s.diskMode != "" {
		backing.DiskMode = s.diskMode
	}
	if s.sharing != "" {
		backing.Sharing = s.sharing
	}
	devices = append(devices, disk)
	nic, err := devices.CreateEthernetCard("vmxnet3", e.netBack)
	if err != nil {
		return nil, err
	}
	devices = append(devices, nic)
	changes, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		if _, ok := c.GetVirtualDeviceConfigSpec().Device.(*types.VirtualDisk); ok {
			c.GetVirtualDeviceConfigSpec().FileOperation = types.VirtualDeviceConfigSpecFileOperationCreate
		}
	}
	spec := types.VirtualMachineConfigSpec{
		Name:                  s.name,
		GuestId:               s.guest,
		Firmware:              s.firmware,
		NumCPUs:               2,
		MemoryMB:              2048,
		ChangeTrackingEnabled: types.NewBool(s.cbt),
		Files:                 &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
		DeviceChange:          changes,
	}
	task, err := folder.CreateVM(e.ctx, spec, e.pool, e.host)
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(e.ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", s.name, err)
	}
	return object.NewVirtualMachine(folder.Client(), info.Result.(types.ManagedObjectReference)), nil
}

func wait(ctx context.Context, t *object.Task, err error) error {
	if err != nil {
		return err
	}
	return t.Wait(ctx)
}

func main() {
	count := flag.Int("vms", 10, "number of plain VMs in folder 'bulk'")
	idle := flag.Duration("idle", 0, "session idle timeout (0: sessions never expire)")
	flag.Parse()
	log.SetOutput(io.Discard)

	simulator.SessionIdleTimeout = *idle
	model := simulator.VPX()
	model.Autostart = false
	model.Machine = 0
	model.Host = 0
	model.ClusterHost = 1
	model.Portgroup = 0
	if err := model.Create(); err != nil {
		fail(err)
	}
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0",
		User: url.UserPassword(os.Getenv("VCSIM_USER"), os.Getenv("VCSIM_PASSWORD"))}
	cert, certPEM, err := selfSigned()
	if err != nil {
		fail(err)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	guardFolders(model.Service)
	server := model.Service.NewServer()

	ctx := context.Background()
	client, err := govmomi.NewClient(ctx, server.URL, true)
	if err != nil {
		fail(err)
	}
	finder := find.NewFinder(client.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		fail(err)
	}
	finder.SetDatacenter(dc)
	e := &env{ctx: ctx}
	if e.folders, err = dc.Folders(ctx); err != nil {
		fail(err)
	}
	if e.host, err = finder.DefaultHostSystem(ctx); err != nil {
		fail(err)
	}
	if e.pool, err = e.host.ResourcePool(ctx); err != nil {
		fail(err)
	}
	ds, err := finder.Datastore(ctx, "LocalDS_0")
	if err != nil {
		fail(err)
	}
	e.dsRef = ds.Reference()
	network, err := finder.Network(ctx, "VM Network")
	if err != nil {
		fail(err)
	}
	if e.netBack, err = network.EthernetCardBackingInfo(ctx); err != nil {
		fail(err)
	}

	bulk, err := e.folders.VmFolder.CreateFolder(ctx, "bulk")
	if err != nil {
		fail(err)
	}
	for i := 0; i < *count; i++ {
		s := vmSpec{name: fmt.Sprintf("bulk-%04d", i), guest: "rhel8_64Guest", firmware: "efi", cbt: true, diskKB: 1024}
		if _, err := e.create(bulk, s); err != nil {
			fail(err)
		}
	}

	special, err := e.folders.VmFolder.CreateFolder(ctx, "special")
	if err != nil {
		fail(err)
	}
	specs := []vmSpec{
		{name: "clean", guest: "rhel8_64Guest", firmware: "efi", cbt: true, diskKB: 1024},
		{name: "snapped", guest: "rhel8_64Guest", firmware: "bios", cbt: true, diskKB: 1024},
		{name: "independent", guest: "windows9Server64Guest", firmware: "efi", cbt: true,
			diskMode: string(types.VirtualDiskModeIndependent_persistent), diskKB: 1024},
		{name: "running", guest: "ubuntu64Guest", firmware: "bios", cbt: true, diskKB: 1024},
		{name: "shared", guest: "rhel8_64Guest", firmware: "bios", cbt: true,
			sharing: string(types.VirtualDiskSharingSharingMultiWriter), diskKB: 1024},
		{name: "nocbt", guest: "darwin19_64Guest", firmware: "efi", cbt: false, diskKB: 1024},
		{name: "download", guest: "rhel8_64Guest", firmware: "bios", cbt: true, diskKB: 64 * 1024},
	}
	for _, s := range specs {
		vm, err := e.create(special, s)
		if err != nil {
			fail(err)
		}
		switch s.name {
		case "snapped":
			t, err := vm.CreateSnapshot(ctx, "before-upgrade", "", false, false)
			if err = wait(ctx, t, err); err != nil {
				fail(err)
			}
		case "running":
			t, err := vm.PowerOn(ctx)
			if err = wait(ctx, t, err); err != nil {
				fail(err)
			}
		}
	}
	_ = client.Logout(ctx)

	dsObj := simulator.Map.Get(e.dsRef).(*simulator.Datastore)
	sum := sha256.Sum256(server.Certificate().Raw)
	hexes := make([]string, len(sum))
	for i, b := range sum {
		hexes[i] = fmt.Sprintf("%02X", b)
	}
	public := *server.URL // server.URL is also the login the simulator checks: strip a copy
	public.User = nil
	out, _ := json.Marshal(map[string]string{
		"url":           public.String(),
		"host":          public.Host,
		"thumbprint":    strings.Join(hexes, ":"),
		"datacenter":    dc.Name(),
		"datastore":     dsObj.Name,
		"datastore_dir": dsObj.Info.GetDatastoreInfo().Url,
		"ca_pem":        string(certPEM),
	})
	fmt.Println(string(out))
	_, _ = io.Copy(io.Discard, os.Stdin)
	server.Close()
	model.Remove()
}

// guardFolders makes three datastore folders answer like a vCenter whose sessions end: under
// /folder/expired-once/ the first session cookie seen is refused with 401 (a later login's cookie
// is served), and under /folder/refused/ every request gets 403. Under /folder/norange/ files are
// served whole whatever Range asks (200, still saying Accept-Ranges: bytes), as some proxies do.
// The simulator's own /folder handler checks no cookie at all.
func guardFolders(svc *simulator.Service) {
	var mu sync.Mutex
	var first string
	svc.HandleFunc("/folder/expired-once/", func(w http.ResponseWriter, r *http.Request) {
		cookie, err := r.Cookie("vmware_soap_session")
		mu.Lock()
		if err == nil && first == "" {
			first = cookie.Value
		}
		refuse := err != nil || cookie.Value == first
		mu.Unlock()
		if refuse {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		svc.ServeDatastore(w, r)
	})
	svc.HandleFunc("/folder/refused/", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
	})
	svc.HandleFunc("/folder/norange/", func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Range")
		svc.ServeDatastore(w, r)
	})
}

// selfSigned makes a P-256 certificate for 127.0.0.1 that is its own CA, so a client can trust it
// through a CA file (the simulator's built-in RSA-1024 test certificate is refused by OpenSSL).
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	template := x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vcsim-h2k"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vcsim-h2k:", err)
	os.Exit(1)
}
