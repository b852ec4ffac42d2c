package benchkit

import "testing"

func TestHostParsing(t *testing.T) {
	mnt, typ, ok := ParseMountinfo(`36 35 98:0 / /mnt/my\040disk rw,noatime master:1 - ext4 /dev/root rw,errors=continue`)
	if !ok || mnt != "/mnt/my disk" || typ != "ext4" {
		t.Fatalf("ParseMountinfo = %q %q %v", mnt, typ, ok)
	}
	if _, _, ok := ParseMountinfo("garbage"); ok {
		t.Fatal("garbage parsed")
	}
	if !within("/dev/shm/x", "/dev/shm") || within("/dev/shmx", "/dev/shm") || !within("/a", "/") {
		t.Fatal("within")
	}
	if v := ProcField("processor\t: 0\nmodel name\t: AMD EPYC\n", "model name"); v != "AMD EPYC" {
		t.Errorf("ProcField = %q", v)
	}
	mi := "22 1 0:21 / / rw - ext4 /dev/vda1 rw\n" +
		"30 22 0:26 / /dev rw - devtmpfs udev rw\n" +
		"31 30 0:27 / /dev/shm rw - tmpfs tmpfs rw\n" +
		"40 22 0:30 / /var/tmp/my\\040dir rw - xfs /dev/vdb rw\n"
	for path, want := range map[string]string{
		"/dev/shm/nydus-bench-convert.1": "tmpfs",
		"/dev/shmx":                      "devtmpfs",
		"/var/tmp/nydus-bench/tmp":       "ext4",
		"/var/tmp/my dir/x":              "xfs",
	} {
		if got, ok := MountFSType(mi, path); !ok || got != want {
			t.Errorf("MountFSType(%s) = %s, want %s", path, got, want)
		}
	}
	if typ, err := FSType("/proc/self"); err != nil || typ != "proc" {
		t.Errorf("FSType(/proc/self) = %q, %v", typ, err)
	}
	if m := ReadMachine(); m.NumCPU < 1 || m.Kernel == "?" {
		t.Errorf("ReadMachine = %+v", m)
	}
}
