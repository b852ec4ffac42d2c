package blobcache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// writeCopy writes the copy key holding data, of the chunks of blobs.
func writeCopy(t *testing.T, s *Files, key string, data []byte, blobs ...string) {
	t.Helper()
	err := s.Write(context.Background(), key, int64(len(data)), blobs, func(w io.WriterAt) error {
		_, err := w.WriteAt(data, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// judgeEqual is a Check judge comparing a copy with want.
func judgeEqual(want []byte) func(context.Context, *os.File) (error, error) {
	return func(_ context.Context, fd *os.File) (error, error) {
		got, err := io.ReadAll(fd)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(got, want) {
			return errors.New("differs"), nil
		}
		return nil, nil
	}
}

// TestFilesWrite: a copy is written read-only and accounted; a write that
// fails leaves nothing and gives its bytes back; a second write of a key
// in flight is refused; a key that could leave the directory is refused.
func TestFilesWrite(t *testing.T) {
	c := openCache(t, Options{})
	s := c.Files()
	data := []byte("whole file")
	writeCopy(t, s, "ab12", data)
	fi, err := os.Stat(s.Path("ab12"))
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("copy: %v, %v", fi, err)
	}
	if s.Usage() != int64(len(data)) || c.Usage() != int64(len(data)) {
		t.Fatalf("usage %d (cache %d), want %d", s.Usage(), c.Usage(), len(data))
	}
	boom := errors.New("fill failed")
	if err := s.Write(context.Background(), "cd34", 100, nil, func(io.WriterAt) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing fill: %v", err)
	}
	if ents, _ := os.ReadDir(s.dir); len(ents) != 1 || s.Usage() != int64(len(data)) {
		t.Fatalf("after a failed write: %v, usage %d", ents, s.Usage())
	}
	in, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		s.Write(context.Background(), "ef56", 1, nil, func(io.WriterAt) error { close(in); <-release; return boom })
	}()
	<-in
	if err := s.Write(context.Background(), "ef56", 1, nil, func(io.WriterAt) error { return nil }); !errors.Is(err, ErrBusy) {
		t.Errorf("second write in flight: %v, want ErrBusy", err)
	}
	close(release)
	<-done // its failure gives its byte back before the usage is checked below
	for _, key := range []string{"", "../x", "AB", "a/b"} {
		if err := s.Write(context.Background(), key, 1, nil, func(io.WriterAt) error { return nil }); err == nil {
			t.Errorf("key %q accepted", key)
		}
	}
	// Replacing a copy accounts the new one only.
	writeCopy(t, s, "ab12", []byte("longer whole file"))
	if s.Usage() != int64(len("longer whole file")) {
		t.Errorf("usage after replacing: %d", s.Usage())
	}
}

// TestFilesFailedSync: a copy whose sync fails is not put in place,
// nothing of it is left, and its bytes are given back.
func TestFilesFailedSync(t *testing.T) {
	c := openCache(t, Options{})
	s := c.Files()
	commitFile = func(f *atomicfile.File) error {
		f.Abort() // what Commit does when its fsync fails
		return errors.New("injected: fsync failed")
	}
	defer func() { commitFile = (*atomicfile.File).Commit }()
	err := s.Write(context.Background(), "ab", 10, nil, func(w io.WriterAt) error { _, err := w.WriteAt(make([]byte, 10), 0); return err })
	if err == nil {
		t.Fatal("a failed sync was not reported")
	}
	if ents, _ := os.ReadDir(s.dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	if s.Usage() != 0 {
		t.Errorf("%d bytes still reserved", s.Usage())
	}
}

// TestFilesCap: under MaxBytes, copies take at most half of it and never
// the total over it.
func TestFilesCap(t *testing.T) {
	c := openCache(t, Options{MaxBytes: 1000})
	s := c.Files()
	if err := s.Write(context.Background(), "aa", 501, nil, func(io.WriterAt) error { return nil }); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("a copy over half the cap: %v", err)
	}
	writeCopy(t, s, "bb", make([]byte, 400))
	if err := s.Write(context.Background(), "cc", 101, nil, func(io.WriterAt) error { return nil }); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("copies over half the cap: %v", err)
	}
	if s.Usage() != 400 {
		t.Errorf("usage %d, want 400", s.Usage())
	}
}

// TestFilesCheck: a copy is verified only by a check that found it
// right, and only while its stamp is unchanged; a wrong one is removed.
func TestFilesCheck(t *testing.T) {
	c := openCache(t, Options{})
	s := c.Files()
	data := bytes.Repeat([]byte("0123456789"), 100)
	writeCopy(t, s, "ab", data)
	verified := func() bool {
		fd, err := s.Open("ab")
		if err != nil {
			return false
		}
		defer fd.Close()
		return s.Verified("ab", fd)
	}
	if verified() {
		t.Fatal("a copy never checked is verified")
	}
	if ok, bad := s.Check(context.Background(), "ab", judgeEqual(data)); !ok || bad != nil {
		t.Fatalf("check of a right copy: %v, %v", ok, bad)
	}
	if !verified() {
		t.Fatal("a checked copy is not verified")
	}
	// Changed in place, its mtime restored: the stamp (ctime) differs.
	p := s.Path("ab")
	fi, _ := os.Stat(p)
	os.Chmod(p, 0o600)
	w, _ := os.OpenFile(p, os.O_WRONLY, 0)
	w.WriteAt([]byte{'x'}, 500)
	w.Close()
	os.Chmod(p, 0o400)
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
	if verified() {
		t.Fatal("a changed copy is still verified")
	}
	// A check in flight makes another return at once.
	in, release := make(chan struct{}), make(chan struct{})
	go s.Check(context.Background(), "ab", func(context.Context, *os.File) (error, error) {
		close(in)
		<-release
		return nil, errors.New("could not tell")
	})
	<-in
	if ok, bad := s.Check(context.Background(), "ab", judgeEqual(data)); ok || bad != nil {
		t.Fatalf("check beside one in flight: %v, %v", ok, bad)
	}
	close(release)
	s.WaitCheck(context.Background(), "ab")
	if ok, bad := s.Check(context.Background(), "ab", judgeEqual(data)); ok || bad == nil {
		t.Fatalf("check of a changed copy: %v, %v", ok, bad)
	}
	if exists(p) || s.Usage() != 0 {
		t.Errorf("the wrong copy is still there (%v) or accounted (%d)", exists(p), s.Usage())
	}
}

// TestFilesLifetime: a copy goes when the last owner that used it
// releases it, in this process and in others sharing the directory
// (another process's use is a shared flock on the copy); a copy nobody
// uses (left by a process that died) goes at the next release, and the
// directory with the last copy.
func TestFilesLifetime(t *testing.T) {
	c := openCache(t, Options{})
	s := c.Files()
	writeCopy(t, s, "ab", []byte("shared"))
	s.Use("image-a", "ab")
	s.Use("image-b", "ab")
	s.Use("image-b", "ab") // twice: still one use
	p := s.Path("ab")
	s.Release("image-a")
	if !exists(p) {
		t.Fatal("the copy went while an image still used it")
	}
	other, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(other.Fd()), unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	s.Release("image-b")
	if !exists(p) {
		t.Fatal("the copy went while another process used it")
	}
	other.Close()
	writeCopy(t, s, "cd", []byte("used"))
	s.Use("image-c", "cd")
	// Left by a process that died: nobody holds a lock on them.
	os.WriteFile(filepath.Join(s.dir, "0123abcd"), []byte("left by a crashed daemon"), 0o400)
	s.Release("image-c")
	for _, key := range []string{"ab", "cd", "0123abcd"} {
		if exists(s.Path(key)) {
			t.Errorf("copy %s is still there", key)
		}
	}
	if exists(s.dir) {
		t.Error("the copies' directory is still there after the last copy went")
	}
}

// TestFilesGoWithTheirBlobs: removing a blob (eviction, the snapshotter's
// GC) removes the copies made of its chunks that no image uses, in this
// process and after a restart.
func TestFilesGoWithTheirBlobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCache(t, Options{Dir: dir})
	for _, i := range []int{1, 2} {
		b := openBlob(t, c, blobID(i), 2, nil)
		put(t, b, 0)
		b.Release()
	}
	s := c.Files()
	writeCopy(t, s, "a1", []byte("of blob 1"), blobID(1))
	writeCopy(t, s, "a2", []byte("of blobs 1 and 2"), blobID(1), blobID(2))
	writeCopy(t, s, "b2", []byte("of blob 2"), blobID(2))
	s.Use("image", "a2")
	if err := c.Remove(ctx, blobID(1)); err != nil {
		t.Fatal(err)
	}
	if exists(s.Path("a1")) || !exists(s.Path("a2")) || !exists(s.Path("b2")) {
		t.Fatalf("after removing blob 1: a1=%v a2=%v b2=%v, want only a1 gone", exists(s.Path("a1")), exists(s.Path("a2")), exists(s.Path("b2")))
	}
	c.Close()
	// A restart: the association is on the copies.
	c2 := openCache(t, Options{Dir: dir})
	if err := c2.Remove(ctx, blobID(2)); err != nil {
		t.Fatal(err)
	}
	if exists(c2.Files().Path("a2")) || exists(c2.Files().Path("b2")) {
		t.Errorf("copies of blob 2 left after a restart: a2=%v b2=%v", exists(c2.Files().Path("a2")), exists(c2.Files().Path("b2")))
	}
	if c2.Files().Usage() != 0 {
		t.Errorf("usage %d after every copy went", c2.Files().Usage())
	}
}

// TestFilesCountAgainstCap: copies count against the cap, so unused
// blobs are evicted to make room for them.
func TestFilesCountAgainstCap(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, Options{Dir: dir})
	for _, id := range []string{blobID(1), blobID(2)} {
		fillBlob(t, c, id, 8)
		time.Sleep(2 * time.Millisecond)
	}
	usage := c.Usage()
	writeCopy(t, c.Files(), "ab", make([]byte, usage/2))
	c.Close()
	// Both blobs fit the cap alone; with the copy, the least recently
	// used blob must go.
	c2 := openCache(t, Options{Dir: dir, MaxBytes: usage})
	if exists(filepath.Join(dir, blobID(1)+DataSuffix)) || !exists(filepath.Join(dir, blobID(2)+DataSuffix)) {
		t.Fatal("want only blob 1 evicted")
	}
	if c2.Usage() > usage || c2.Files().Usage() != usage/2 {
		t.Fatalf("usage %d (copies %d) over cap %d", c2.Usage(), c2.Files().Usage(), usage)
	}
}

// TestFilesOpenRemovesOnlyOldPartialCopies: partial copies (temporary
// files) left by a crash are removed when the cache opens, unless they
// are young (another daemon may be writing them); copies stay.
func TestFilesOpenRemovesOnlyOldPartialCopies(t *testing.T) {
	dir := t.TempDir()
	fdir := filepath.Join(dir, FilesDir)
	os.MkdirAll(fdir, 0o700)
	old := time.Now().Add(-time.Hour)
	for _, n := range []string{".ab.tmp-old", ".ab.tmp-new", "0123abcd"} {
		os.WriteFile(filepath.Join(fdir, n), []byte("x"), 0o400)
	}
	os.Chtimes(filepath.Join(fdir, ".ab.tmp-old"), old, old)
	os.Chtimes(filepath.Join(fdir, "0123abcd"), old, old)
	c := openCache(t, Options{Dir: dir})
	ents, _ := os.ReadDir(fdir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != ".ab.tmp-new" || names[1] != "0123abcd" {
		t.Fatalf("left %v", names)
	}
	if c.Files().Usage() != 1 {
		t.Errorf("usage %d, want the one copy's byte", c.Files().Usage())
	}
}
