package converter

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// baseLayer has 40 files of 256 KiB (10 MiB of incompressible data).
func baseLayer() []treetest.File {
	files := []treetest.File{treetest.Dir("usr/", 0o755), treetest.Dir("usr/lib/", 0o755)}
	for i := 0; i < 40; i++ {
		files = append(files, treetest.Reg(fmt.Sprintf("usr/lib/lib%02d.so", i), 0o644, treetest.Random(int64(100+i), 256<<10)))
	}
	return files
}

// upgradeLayer rewrites 30 of the base files: 10 change, 20 are
// rewritten with the same content (as a package upgrade does).
func upgradeLayer() []treetest.File {
	var files []treetest.File
	for i := 0; i < 30; i++ {
		seed := int64(100 + i)
		if i < 10 {
			seed = int64(1000 + i)
		}
		files = append(files, treetest.Reg(fmt.Sprintf("usr/lib/lib%02d.so", i), 0o644, treetest.Random(seed, 256<<10)))
	}
	return files
}

// TestBuildCacheReusesLowerLayers: after converting h1 = [base], h2 =
// [base, upgrade] converts and uploads only its top layer, and the
// upgrade layer stores only the 10 changed files.
func TestBuildCacheReusesLowerLayers(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	base, up := treetest.Tar(baseLayer()), treetest.Tar(upgradeLayer())
	registrytest.PushImage(t, r.Host+"/h1:latest", [][]byte{base})
	registrytest.PushImage(t, r.Host+"/h2:latest", [][]byte{base, up})
	cacheRef, _ := name.ParseReference(r.Host+"/cache:nydus", name.Insecure)
	newCache := func() *BuildCache {
		bc, err := NewBuildCache(cacheRef, plain, 10)
		if err != nil {
			t.Fatal(err)
		}
		return bc
	}
	o := testOptions(t)
	o.Cache = newCache()
	r1, err := Convert(ctx, ref(t, r.Host+"/h1:latest"), ref(t, r.Host+"/h1:nydus"), o)
	if err != nil {
		t.Fatal(err)
	}
	baseBlob := r1.Images[0].Layers[0].BlobSize
	r.ResetStats()
	o = testOptions(t)
	o.Cache = newCache() // as on another machine: state comes from the registry
	r2, err := Convert(ctx, ref(t, r.Host+"/h2:latest"), ref(t, r.Host+"/h2:nydus"), o)
	if err != nil {
		t.Fatal(err)
	}
	ls := r2.Images[0].Layers
	if !ls[0].Cached || ls[1].Cached {
		t.Fatalf("cache use: %+v", ls)
	}
	top := ls[1]
	// 20 of the 30 rewritten files are deduplicated against the base.
	if top.Stats.DedupChunks != 20 || top.Stats.UniqueChunks != 10 {
		t.Fatalf("upgrade layer stats %+v", top.Stats)
	}
	st := r.Stats()
	// Uploaded: the top blob (~2.5 MiB), the bootstrap layer, configs and
	// the cache manifest; never the 10 MiB base blob, which is mounted.
	if st.UploadBytes > top.BlobSize+1<<20 || st.UploadBytes >= baseBlob {
		t.Fatalf("uploaded %d bytes; top blob %d, base blob %d", st.UploadBytes, top.BlobSize, baseBlob)
	}
	if st.Mounts == 0 {
		t.Fatalf("base blob was not mounted from the cache: %+v", st)
	}
	t.Logf("h2 upload: %d bytes (top blob %d, base blob %d), %d mounts", st.UploadBytes, top.BlobSize, baseBlob, st.Mounts)
	p := pull(t, r, r.Host+"/h2:nydus")
	if d := treetest.Diff(expected(t, base, up), p.tree); d != "" {
		t.Fatalf("h2 tree differs:\n%s", d)
	}
}

// TestChunkDictAcrossImages: an h2 built independently (different layer
// digests, same files) converted with --chunk-dict h1 uploads only the
// new chunks.
func TestChunkDictAcrossImages(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	base := treetest.Tar(baseLayer())
	registrytest.PushImage(t, r.Host+"/h1:latest", [][]byte{base})
	if _, err := Convert(ctx, ref(t, r.Host+"/h1:latest"), ref(t, r.Host+"/h1:nydus"), testOptions(t)); err != nil {
		t.Fatal(err)
	}
	// Same files, different tar (other mtimes) and one new file.
	files := baseLayer()
	for i := range files {
		files[i].Header.ModTime = files[i].Header.ModTime.Add(3600e9)
	}
	files = append(files, treetest.Reg("usr/lib/new.so", 0o644, treetest.Random(7, 300<<10)))
	other := treetest.Tar(files)
	registrytest.PushImage(t, r.Host+"/h2:latest", [][]byte{other})
	dict, err := OpenChunkDict(ctx, "bootstrap:registry:"+r.Host+"/h1:nydus", plain)
	if err != nil {
		t.Fatal(err)
	}
	r.ResetStats()
	o := testOptions(t)
	o.ChunkDict = dict
	res, err := Convert(ctx, ref(t, r.Host+"/h2:latest"), ref(t, r.Host+"/h2:nydus"), o)
	if err != nil {
		t.Fatal(err)
	}
	l := res.Images[0].Layers[0]
	if l.Stats.DedupChunks != 40 || l.Stats.UniqueChunks != 1 {
		t.Fatalf("stats %+v", l.Stats)
	}
	st := r.Stats()
	if st.UploadBytes > 600<<10 {
		t.Fatalf("uploaded %d bytes, want only the new chunk and metadata", st.UploadBytes)
	}
	if len(res.Images[0].DictBlobs) != 1 {
		t.Fatalf("chunk dict blob not listed as a layer: %+v", res.Images[0])
	}
	t.Logf("h2 with chunk dict: uploaded %d bytes, %d mounts", st.UploadBytes, st.Mounts)
	p := pull(t, r, r.Host+"/h2:nydus")
	if len(p.manifest.Layers) != 3 {
		t.Fatalf("want own blob + dict blob + bootstrap, got %d layers", len(p.manifest.Layers))
	}
	if d := treetest.Diff(expected(t, other), p.tree); d != "" {
		t.Fatalf("tree differs:\n%s", d)
	}
}

// TestReaddedDataStoredOnce: [base, ADD big.tar, RUN rm big.tar, ADD
// big.tar] stores big.tar once.
func TestReaddedDataStoredOnce(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	big := treetest.Random(42, 24<<20)
	base := treetest.Tar([]treetest.File{treetest.Reg("etc/os-release", 0o644, []byte("base\n"))})
	add := treetest.Tar([]treetest.File{treetest.Reg("big.tar", 0o644, big)})
	rm := treetest.Tar([]treetest.File{treetest.Reg(".wh.big.tar", 0o644, nil)})
	registrytest.PushImage(t, r.Host+"/readd:latest", [][]byte{base, add, rm, add})
	res, err := Convert(ctx, ref(t, r.Host+"/readd:latest"), ref(t, r.Host+"/readd:nydus"), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	im := res.Images[0]
	var blobs int64
	for _, l := range im.Layers {
		if l.InImage {
			blobs += l.BlobSize
		}
	}
	if blobs > int64(len(big))+2<<20 || blobs < int64(len(big)) {
		t.Fatalf("blob bytes %d for a %d byte file: %+v", blobs, len(big), im.Layers)
	}
	t.Logf("blob bytes in image: %d (big.tar %d)", blobs, len(big))
	p := pull(t, r, r.Host+"/readd:nydus")
	if d := treetest.Diff(expected(t, base, add, rm, add), p.tree); d != "" {
		t.Fatalf("tree differs:\n%s", d)
	}
	// Every blob built, including the one for the re-added layer, holds
	// big.tar once in total: the fourth layer's blob only references the
	// second layer's chunks.
	var built int64
	for _, l := range im.Layers {
		built += l.BlobSize
	}
	if built > int64(len(big))+2<<20 {
		t.Fatalf("chained packing built %d blob bytes", built)
	}
	// Upstream-identical independent packing compresses and stores it
	// twice (the final image still references one copy).
	o := testOptions(t)
	o.Independent = true
	o.NoDedupScope = true // not against the first conversion's dictionary
	res2, err := Convert(ctx, ref(t, r.Host+"/readd:latest"), ref(t, r.Host+"/readd:nydus-indep"), o)
	if err != nil {
		t.Fatal(err)
	}
	var built2 int64
	for _, l := range res2.Images[0].Layers {
		built2 += l.BlobSize
	}
	if built2 < 2*int64(len(big)) {
		t.Fatalf("independent packing built %d blob bytes", built2)
	}
	t.Logf("blob bytes built: chained %d, independent %d", built, built2)
}
