package fusefs

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	nfs "github.com/nydus-go/nydus/pkg/fs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// TestConcurrentReadsThroughMount: many goroutines read overlapping
// ranges of the same and different files through the mount, while
// whole-file copies appear and opens switch to passthrough (run under
// -race in make unit).
func TestConcurrentReadsThroughMount(t *testing.T) {
	roottest.RequireFUSE(t)
	var files []treetest.File
	want := map[string][]byte{}
	for i := 0; i < 6; i++ {
		name := fmt.Sprintf("d/f%d", i)
		want[name] = treetest.Random(int64(30+i), 700<<10+i*123)
		files = append(files, treetest.Reg(name, 0o644, want[name]))
	}
	boot, dir := buildImage(t, treetest.Tar(files), builder.Options{ChunkSize: 0x10000})
	f, err := nfs.Open(context.Background(), boot, &storage.FileSource{Dir: dir}, nfs.Options{Copies: fetchtest.NewCopies(t), ReadAhead: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // after the unmount: waits for whole-file builds
	mnt := t.TempDir()
	s, err := MountImage(mnt, f, Options{Passthrough: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unmount()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for k := 0; k < 12; k++ {
				name := files[(g+k)%len(files)].Header.Name
				// Raw syscalls: os.Open would register the FUSE file
				// with Go's netpoller (epoll_ctl → FUSE_POLL), which this
				// same process must answer; a test artefact that can
				// deadlock, not something a separate client sees.
				fd, err := unix.Open(filepath.Join(mnt, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					errs <- err
					return
				}
				off := int64((g*7919 + k*104729) % (600 << 10))
				buf := make([]byte, 64<<10+g)
				n, err := unix.Pread(fd, buf, off)
				unix.Close(fd)
				if n == 0 || !bytes.Equal(buf[:n], want[name][off:off+int64(n)]) {
					errs <- fmt.Errorf("%s at %d: %d bytes, %v", name, off, n, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for name, data := range want {
		fd, err := unix.Open(filepath.Join(mnt, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data)+1)
		n, err := unix.Pread(fd, got, 0)
		unix.Close(fd)
		if err != nil || !bytes.Equal(got[:n], data) {
			t.Fatalf("%s after concurrent reads: %d bytes, %v", name, n, err)
		}
	}
}
