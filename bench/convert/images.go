package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
	"github.com/nydus-go/nydus/internal/sysproc"
)

// imagePathEnv is the PATH of the images' configuration.
const imagePathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// aptCurl installs the curl layer in a chroot.
const aptCurl = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/*"

// sidScript is debootstrap's script for sid, tried for trixie when the
// installed debootstrap does not know it.
const sidScript = "/usr/share/debootstrap/scripts/sid"

// rootfs is a cached debootstrap tree and the marker written once it is
// complete.
type rootfs struct {
	name, suite, dir, ok string
}

// rootfsTrees lists the trees of the family's base images. The first is
// the one `make bench-build` caches (same path, marker and recipe).
func rootfsTrees(benchDir string) []rootfs {
	cache := filepath.Join(benchDir, "convert")
	return []rootfs{
		{"bookworm-min", "bookworm", filepath.Join(benchDir, "rootfs"), filepath.Join(benchDir, "rootfs.ok")},
		{"bookworm-min-2", "bookworm", filepath.Join(cache, "rootfs-bookworm-2"), filepath.Join(cache, "rootfs-bookworm-2.ok")},
		{"bookworm-min-3", "bookworm", filepath.Join(cache, "rootfs-bookworm-3"), filepath.Join(cache, "rootfs-bookworm-3.ok")},
		{"trixie-min", "trixie", filepath.Join(cache, "rootfs-trixie"), filepath.Join(cache, "rootfs-trixie.ok")},
	}
}

func (r rootfs) cached() bool {
	st, err := os.Stat(r.dir)
	return exists(r.ok) && err == nil && st.IsDir()
}

// debootstrap is a running `debootstrap --variant=minbase` into the
// tree's .tmp directory, in its own session.
type debootstrap struct {
	rfs   rootfs
	cmd   *exec.Cmd
	log   string
	start time.Time
}

// mirrorURI returns the Debian mirror: -mirror, or the first enabled
// "deb" source of apt's configuration serving bookworm/main (the same
// mirror serves trixie).
func (b *bench) mirrorURI() (string, error) {
	if b.cfg.mirror == "" {
		m, err := benchkit.Mirror("/etc/apt", "bookworm", "main")
		if err != nil {
			return "", fmt.Errorf("cannot find a Debian mirror for bookworm in apt's sources: %w", err)
		}
		b.cfg.mirror = m
	}
	return b.cfg.mirror, nil
}

// startDebootstrap removes the tree and its marker and starts debootstrap
// into dir.tmp; script, if set, is debootstrap's script argument.
func (b *bench) startDebootstrap(ctx context.Context, r rootfs, script string) error {
	mirror, err := b.mirrorURI()
	if err != nil {
		return err
	}
	if err := os.Remove(r.ok); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := removeTree(r.dir); err != nil {
		return err
	}
	if err := removeTree(r.dir + ".tmp"); err != nil {
		return err
	}
	d := &debootstrap{rfs: r, log: filepath.Join(b.cache, "debootstrap-"+r.name+".log"), start: time.Now()}
	argv := []string{"debootstrap", "--variant=minbase", r.suite, r.dir + ".tmp", mirror}
	what := ""
	if script != "" {
		argv = append(argv, script)
		what = " (script " + script + ")"
	}
	say("debootstrap --variant=minbase %s %s%s (log: %s)", r.suite, r.dir, what, d.log)
	f, err := os.Create(d.log)
	if err != nil {
		return err
	}
	defer f.Close()
	// Its own session, so that it and its children are stopped together;
	// SIGKILL if this process dies first.
	d.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = f, f
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	d.cmd.Cancel = func() error { return syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM) }
	d.cmd.WaitDelay = benchkit.StopGrace
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("debootstrap: %w", err)
	}
	b.debootstraps[r.name] = d
	return nil
}

// finishDebootstrap waits for the tree's debootstrap, cleans the tree as
// a slim image would be (no .debs, no apt lists), moves it in place and
// writes its marker.
func (b *bench) finishDebootstrap(name string) error {
	d := b.debootstraps[name]
	err := d.cmd.Wait()
	delete(b.debootstraps, name)
	tmp := d.rfs.dir + ".tmp"
	if uerr := sysproc.UnmountUnder(tmp); uerr != nil && err == nil {
		err = uerr
	}
	if err != nil {
		showTail(d.log, 5)
		if rerr := removeTree(tmp); rerr != nil {
			warnf("%v", rerr)
		}
		return fmt.Errorf("debootstrap %s into %s: %w (log: %s)", d.rfs.suite, d.rfs.dir, err, d.log)
	}
	for _, g := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages", "var/lib/apt/lists/*Release*"} {
		ms, _ := filepath.Glob(filepath.Join(tmp, g))
		for _, m := range ms {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	if err := os.Rename(tmp, d.rfs.dir); err != nil {
		return err
	}
	if err := touch(d.rfs.ok); err != nil {
		return err
	}
	secs := int(time.Since(d.start).Seconds())
	b.built = append(b.built, fmt.Sprintf("debootstrap of %s (%d s)", name, secs))
	say("rootfs %s ready in %ds", d.rfs.dir, secs)
	return nil
}

// stopDebootstraps ends the debootstraps still running (an error or a
// signal interrupted the run) and removes their trees.
func (b *bench) stopDebootstraps() {
	for name, d := range b.debootstraps {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
		d.cmd.Wait()
		delete(b.debootstraps, name)
		if err := removeTree(d.rfs.dir + ".tmp"); err != nil {
			warnf("%v", err)
		}
	}
}

// trixieDefault is how the trixie tree is made when plain debootstrap
// knows trixie.
const trixieDefault = "`debootstrap --variant=minbase trixie`"

// ensureRootfs bootstraps the missing trees, in parallel (debootstrap
// waits on the network and on dpkg much of the time). A failed trixie is
// retried with the sid script, and else left out of the family.
func (b *bench) ensureRootfs(ctx context.Context) error {
	trees := rootfsTrees(b.cfg.dir)
	for _, r := range trees {
		if r.cached() {
			say("reusing rootfs %s", r.dir)
		} else if err := b.startDebootstrap(ctx, r, ""); err != nil {
			return err
		}
	}
	for _, r := range trees[:3] {
		if b.debootstraps[r.name] != nil {
			if err := b.finishDebootstrap(r.name); err != nil {
				return err
			}
		}
	}
	b.trixie, b.trixieHow = true, trixieDefault
	howFile := filepath.Join(b.cache, "rootfs-trixie.how")
	if b.debootstraps["trixie-min"] == nil {
		if how, err := os.ReadFile(howFile); err == nil {
			b.trixieHow = strings.TrimRight(string(how), "\n")
		}
		return nil
	}
	err := b.finishDebootstrap("trixie-min")
	if err != nil && exists(sidScript) && ctx.Err() == nil {
		warnf("retrying trixie with the sid script (%v)", err)
		if err = b.startDebootstrap(ctx, trees[3], sidScript); err == nil {
			if err = b.finishDebootstrap("trixie-min"); err == nil {
				b.trixieHow = "`debootstrap --variant=minbase trixie <dir> <mirror> " + sidScript + "` (plain `debootstrap trixie` failed with this debootstrap)"
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		b.trixie = false
		warnf("debootstrap trixie failed, also with the sid script: the family is measured without the trixie images (%v)", err)
		b.notes = append(b.notes, fmt.Sprintf("debootstrap of trixie failed on this machine (also with the sid script), so the family has no trixie images; see %s.", filepath.Join(b.cache, "debootstrap-trixie-min.log")))
		return nil
	}
	return os.WriteFile(howFile, []byte(b.trixieHow+"\n"), 0o644)
}

// layoutRefs lists the image names of the OCI layout.
func (b *bench) layoutRefs(ctx context.Context) []string {
	out, err := output(ctx, "umoci", "ls", "--layout", b.layout)
	if err != nil {
		return nil
	}
	return strings.Fields(out)
}

// imageOK is the marker of a built image; an image is reused when its
// marker is newer than its base's (the rootfs marker, or the base
// image's) and the layout holds it.
func (b *bench) imageOK(name string) string {
	return filepath.Join(b.cache, "img-"+name+".ok")
}

// step runs argv with its output written to the log TMP/logs/NAME.log,
// shown (last 5 lines) when it fails.
func (b *bench) step(ctx context.Context, name string, argv ...string) error {
	log := filepath.Join(b.tmp, "logs", name+".log")
	if err := run(ctx, log, argv...); err != nil {
		showTail(log, 5)
		return err
	}
	return nil
}

// ensureImages builds the family's OCI images in the cached layout:
// one-layer images of the rootfs trees and the curl images on top.
func (b *bench) ensureImages(ctx context.Context) error {
	if !exists(filepath.Join(b.layout, "index.json")) {
		if err := os.RemoveAll(b.layout); err != nil {
			return err
		}
		oks, _ := filepath.Glob(filepath.Join(b.cache, "img-*.ok"))
		for _, ok := range oks {
			os.Remove(ok)
		}
		if err := b.step(ctx, "umoci-init", "umoci", "init", "--layout", b.layout); err != nil {
			return err
		}
	}
	trees := map[string]rootfs{}
	for _, r := range rootfsTrees(b.cfg.dir) {
		trees[r.name] = r
	}
	b.family = []string{"bookworm-min", "bookworm-curl", "bookworm-min-2", "bookworm-min-3"}
	if b.trixie {
		b.family = append(b.family, "trixie-min", "trixie-curl")
	}
	have := b.layoutRefs(ctx)
	for _, name := range b.family {
		var err error
		if base, ok := strings.CutSuffix(name, "-curl"); ok {
			err = b.buildCurl(ctx, have, name, base+"-min")
		} else {
			err = b.buildMin(ctx, have, name, trees[name])
		}
		if err != nil {
			return err
		}
	}
	if len(b.built) > 0 {
		if err := b.step(ctx, "umoci-gc", "umoci", "gc", "--layout", b.layout); err != nil {
			warnf("umoci gc failed: %v", err)
		}
	}
	return nil
}

// buildMin builds a one-layer image of the rootfs: tarred with no ./
// prefix, the contents of dev, proc and sys left out.
func (b *bench) buildMin(ctx context.Context, have []string, name string, r rootfs) error {
	ok := b.imageOK(name)
	if exists(ok) && newer(ok, r.ok) && slices.Contains(have, name) {
		say("reusing OCI image %s from %s", name, b.layout)
		return nil
	}
	t0 := time.Now()
	say("building OCI image %s from %s", name, r.dir)
	os.Remove(ok)
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return err
	}
	if len(ents) == 0 {
		return fmt.Errorf("%s is empty", r.dir)
	}
	tarf := filepath.Join(b.tmp, name+".tar")
	argv := []string{"tar", "--numeric-owner", "--xattrs", "--acls", "-C", r.dir, "--exclude=dev/*", "--exclude=proc/*", "--exclude=sys/*", "-cf", tarf}
	for _, e := range ents {
		argv = append(argv, e.Name())
	}
	if err := b.step(ctx, "tar-"+name, argv...); err != nil {
		return fmt.Errorf("tar of %s: %w", r.dir, err)
	}
	img := b.layout + ":" + name
	run(ctx, os.DevNull, "umoci", "rm", "--image", img)
	for _, argv := range [][]string{
		{"umoci", "new", "--image", img},
		{"umoci", "raw", "add-layer", "--image", img, tarf},
		{"umoci", "config", "--image", img, "--config.cmd", "/bin/bash", "--config.env", imagePathEnv},
	} {
		if err := b.step(ctx, "umoci-"+name, argv...); err != nil {
			return fmt.Errorf("umoci could not build %s: %w", name, err)
		}
	}
	if err := os.Remove(tarf); err != nil {
		return err
	}
	if err := touch(ok); err != nil {
		return err
	}
	b.built = append(b.built, fmt.Sprintf("image %s (%d s)", name, int(time.Since(t0).Seconds())))
	return nil
}

// buildCurl builds base + a layer made by `apt-get install curl
// ca-certificates` in a chroot of base, diffed by `umoci repack`.
func (b *bench) buildCurl(ctx context.Context, have []string, name, base string) error {
	ok := b.imageOK(name)
	if exists(ok) && newer(ok, b.imageOK(base)) && slices.Contains(have, name) {
		say("reusing OCI image %s from %s", name, b.layout)
		return nil
	}
	t0 := time.Now()
	say("building OCI image %s: %s + apt-get install curl ca-certificates", name, base)
	os.Remove(ok)
	bundle := filepath.Join(b.tmp, "bundle-"+name)
	if err := b.step(ctx, "umoci-unpack-"+name, "umoci", "unpack", "--image", b.layout+":"+base, bundle); err != nil {
		return fmt.Errorf("umoci unpack %s: %w", base, err)
	}
	if err := b.aptInChroot(ctx, filepath.Join(bundle, "rootfs"), name, base); err != nil {
		return err
	}
	if err := run(ctx, os.DevNull, "chroot", filepath.Join(bundle, "rootfs"), "curl", "--version"); err != nil {
		return fmt.Errorf("curl does not run in the %s tree: %w", name, err)
	}
	img := b.layout + ":" + name
	run(ctx, os.DevNull, "umoci", "rm", "--image", img)
	if err := b.step(ctx, "umoci-repack-"+name, "umoci", "repack", "--image", img, bundle); err != nil {
		return fmt.Errorf("umoci repack %s: %w", name, err)
	}
	if err := removeTree(bundle); err != nil {
		return err
	}
	if err := touch(ok); err != nil {
		return err
	}
	b.built = append(b.built, fmt.Sprintf("image %s (%d s)", name, int(time.Since(t0).Seconds())))
	return nil
}

// aptInChroot runs aptCurl in a chroot of root with the host's
// resolv.conf, /proc and /dev (a recursive, slave bind) mounted; it
// unmounts them and restores the image's resolv.conf whatever happens.
func (b *bench) aptInChroot(ctx context.Context, root, name, base string) (err error) {
	resolv := filepath.Join(root, "etc", "resolv.conf")
	saved := filepath.Join(b.tmp, "resolv.conf.saved-"+name)
	had := false
	if _, err := os.Lstat(resolv); err == nil {
		if err := os.Rename(resolv, saved); err != nil {
			return err
		}
		had = true
	}
	defer func() {
		os.Remove(resolv)
		if had {
			if rerr := os.Rename(saved, resolv); rerr != nil && err == nil {
				err = rerr
			}
		}
	}()
	host, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return err
	}
	if err := os.WriteFile(resolv, host, 0o644); err != nil {
		return err
	}
	proc, dev := filepath.Join(root, "proc"), filepath.Join(root, "dev")
	defer func() {
		for _, m := range []string{dev, proc} {
			if uerr := sysproc.UnmountUnder(m); uerr != nil && err == nil {
				err = uerr
			}
		}
	}()
	if err := syscall.Mount("proc", proc, "proc", 0, ""); err != nil {
		return fmt.Errorf("mount proc on %s: %w", proc, err)
	}
	if err := syscall.Mount("/dev", dev, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind /dev on %s: %w", dev, err)
	}
	if err := syscall.Mount("", dev, "", syscall.MS_SLAVE|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a slave mount: %w", dev, err)
	}
	log := filepath.Join(b.cache, "apt-"+name+".log")
	if err := run(ctx, log, "chroot", root, "/bin/sh", "-c", aptCurl); err != nil {
		showTail(log, 5)
		return fmt.Errorf("apt-get install in the %s chroot: %w", base, err)
	}
	return nil
}
