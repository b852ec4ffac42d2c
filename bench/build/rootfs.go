package main

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
	"github.com/nydus-go/nydus/internal/sysproc"
)

// The inputs: a `debootstrap --variant=minbase` rootfs of suite, its tar
// (the layer) and the big layer synthesised from it.
const (
	suite         = "bookworm"
	bigCopies     = 8
	bigRandomMiB  = 128
	bigSeed       = 1
	minLayerBytes = 50_000_000
)

// inputs are the cached rootfs and layer tars, and their sizes.
type inputs struct {
	rootfs, layer, big   string
	layerBytes, bigBytes int64
	layerEntries         int
}

// prepareInputs builds what BENCH_DIR does not hold yet: the rootfs
// (debootstrap, as root), the layer tar, the big layer. Each is rebuilt
// when an input it was made from is newer, and everything after it too.
func prepareInputs(ctx context.Context, cfg config) (inputs, error) {
	d := cfg.benchDir
	in := inputs{rootfs: filepath.Join(d, "rootfs"), layer: filepath.Join(d, "layer.tar"), big: filepath.Join(d, "big.tar")}
	if err := ensureRootfs(ctx, cfg, in); err != nil {
		return in, err
	}
	if err := ensureLayer(ctx, d, in); err != nil {
		return in, err
	}
	if err := ensureBig(ctx, d, in); err != nil {
		return in, err
	}
	return in, in.measure()
}

// ensureRootfs debootstraps the rootfs unless BENCH_DIR/rootfs.ok marks a
// finished one.
func ensureRootfs(ctx context.Context, cfg config, in inputs) error {
	ok := filepath.Join(cfg.benchDir, "rootfs.ok")
	if isFile(ok) && isDir(in.rootfs) {
		logf("reusing rootfs %s (delete %s to rebuild)", in.rootfs, cfg.benchDir)
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("debootstrap needs root")
	}
	mirror := cfg.mirror
	if mirror == "" {
		var err error
		if mirror, err = benchkit.Mirror("/etc/apt", suite, "main"); err != nil {
			return fmt.Errorf("cannot find a Debian mirror for %s in apt's sources; set BENCH_MIRROR: %w", suite, err)
		}
	}
	for _, f := range []string{ok, in.layer, in.big, filepath.Join(cfg.benchDir, "big.ok")} {
		os.Remove(f)
	}
	tmp := in.rootfs + ".tmp"
	for _, d := range []string{in.rootfs, tmp} {
		if err := removeTree(d); err != nil {
			return err
		}
	}
	defer sysproc.UnmountUnder(tmp)
	logPath := filepath.Join(cfg.benchDir, "debootstrap.log")
	logf("debootstrap --variant=minbase %s from %s (log: %s)", suite, mirror, logPath)
	t0 := time.Now()
	if err := debootstrap(ctx, tmp, mirror, logPath); err != nil {
		return err
	}
	if err := sysproc.UnmountUnder(tmp); err != nil {
		return err
	}
	if err := cleanRootfs(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, in.rootfs); err != nil {
		return err
	}
	if err := os.WriteFile(ok, nil, 0o644); err != nil {
		return err
	}
	logf("rootfs ready in %.0fs", time.Since(t0).Seconds())
	return nil
}

// debootstrap runs `debootstrap --variant=minbase` into dir with its
// output in logPath, whose tail it prints if it fails.
func debootstrap(ctx context.Context, dir, mirror, logPath string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", suite, dir, mirror)
	cmd.Stdout, cmd.Stderr = f, f
	if _, err := benchkit.Run(cmd); err != nil {
		if data, rerr := os.ReadFile(logPath); rerr == nil {
			fmt.Fprintln(os.Stderr, lastLines(string(data), 20))
		}
		return fmt.Errorf("debootstrap failed (see %s): %w", logPath, err)
	}
	return nil
}

// lastLines returns the last n lines of text.
func lastLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// cleanRootfs removes what a slim image would not hold: downloaded .debs
// and apt's package lists.
func cleanRootfs(dir string) error {
	for _, pat := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages", "var/lib/apt/lists/*Release*"} {
		matches, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeTree unmounts what is mounted at or below dir (a failed
// debootstrap can leave proc or sys mounted) and removes it; it refuses
// to if a mount stays.
func removeTree(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	sysproc.UnmountUnder(dir)
	if ms := sysproc.MountsUnder(dir); len(ms) > 0 {
		return fmt.Errorf("cannot remove %s: %s is still mounted", dir, ms[0])
	}
	return os.RemoveAll(dir)
}

// ensureLayer tars the rootfs into the layer tar unless it is newer than
// the rootfs' marker; a new layer invalidates the big one.
func ensureLayer(ctx context.Context, benchDir string, in inputs) error {
	if newer(in.layer, filepath.Join(benchDir, "rootfs.ok")) {
		logf("reusing %s", in.layer)
		return nil
	}
	logf("tarring the rootfs into %s", in.layer)
	ents, err := os.ReadDir(in.rootfs)
	if err != nil {
		return err
	}
	if len(ents) == 0 {
		return fmt.Errorf("%s is empty", in.rootfs)
	}
	tmp := in.layer + ".tmp"
	defer os.Remove(tmp)
	args := []string{"--numeric-owner", "--xattrs", "--acls", "-C", in.rootfs,
		"--exclude=dev/*", "--exclude=proc/*", "--exclude=sys/*", "-cf", tmp}
	for _, e := range ents {
		args = append(args, e.Name())
	}
	cmd := exec.CommandContext(ctx, "tar", args...)
	cmd.Stderr = os.Stderr
	if _, err := benchkit.Run(cmd); err != nil {
		return fmt.Errorf("tar of %s: %w", in.rootfs, err)
	}
	if err := os.Rename(tmp, in.layer); err != nil {
		return err
	}
	os.Remove(in.big)
	os.Remove(filepath.Join(benchDir, "big.ok"))
	return nil
}

// bigSpec is the recipe of the big layer, kept in BENCH_DIR/big.ok.
var bigSpec = fmt.Sprintf("v1 copies=%d random_mib=%d seed=%d", bigCopies, bigRandomMiB, bigSeed)

// ensureBig synthesises the big layer unless it is newer than the layer
// and was made by the same recipe.
func ensureBig(ctx context.Context, benchDir string, in inputs) error {
	ok := filepath.Join(benchDir, "big.ok")
	if spec, err := os.ReadFile(ok); err == nil && newer(in.big, in.layer) && strings.TrimSpace(string(spec)) == bigSpec {
		logf("reusing %s", in.big)
		return nil
	}
	logf("synthesising the ~1 GiB layer %s (%d copies + %d MiB random)", in.big, bigCopies, bigRandomMiB)
	os.Remove(ok)
	if err := mkbig(ctx, in.layer, in.big, bigCopies, bigRandomMiB, bigSeed); err != nil {
		return fmt.Errorf("synthesising %s: %w", in.big, err)
	}
	return os.WriteFile(ok, []byte(bigSpec+"\n"), 0o644)
}

// measure records the sizes of the layers and the entries of the layer.
func (in *inputs) measure() error {
	for _, f := range []struct {
		path string
		n    *int64
	}{{in.layer, &in.layerBytes}, {in.big, &in.bigBytes}} {
		st, err := os.Stat(f.path)
		if err != nil {
			return err
		}
		*f.n = st.Size()
	}
	n, err := tarEntries(in.layer)
	if err != nil {
		return err
	}
	in.layerEntries = n
	if in.layerBytes <= minLayerBytes {
		return fmt.Errorf("%s is only %d bytes; expected ~130 MB (delete %s to rebuild)", in.layer, in.layerBytes, filepath.Dir(in.layer))
	}
	logf("layer: %d bytes, %d entries; 1 GiB layer: %d bytes", in.layerBytes, in.layerEntries, in.bigBytes)
	return nil
}

// tarEntries counts the entries of a tar, as `tar -tf | wc -l` does.
func tarEntries(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	n := 0
	for {
		_, err := tr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read %s: %w", path, err)
		}
		n++
	}
}

// warmPageCache reads every input once, so that all contenders find it
// in the page cache: the tars and the rootfs' files (not crossing into
// other file systems).
func warmPageCache(ctx context.Context, in inputs) error {
	logf("warming the page cache")
	for _, p := range []string{in.layer, in.big} {
		if err := readAll(p); err != nil {
			return err
		}
	}
	root, err := os.Lstat(in.rootfs)
	if err != nil {
		return err
	}
	dev := root.Sys().(*syscall.Stat_t).Dev
	return filepath.WalkDir(in.rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d.IsDir() && p != in.rootfs {
			if info, err := d.Info(); err == nil && info.Sys().(*syscall.Stat_t).Dev != dev {
				return filepath.SkipDir
			}
		}
		if d.Type().IsRegular() {
			return readAll(p)
		}
		return nil
	})
}

func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// newer reports whether a exists and was modified after b.
func newer(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && sa.ModTime().After(sb.ModTime())
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
