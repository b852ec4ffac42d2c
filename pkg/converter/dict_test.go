package converter

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/chunkdict"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// dictTags lists the dictionary artifacts of a repository.
func dictTags(t *testing.T, r *registrytest.Registry, repo string) []string {
	t.Helper()
	tags, err := remote.List(ref(t, r.Host+"/"+repo+":x").Name.Context(), plainC.Options(context.Background())...)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tag := range tags {
		if strings.HasPrefix(tag, DictTagPrefix) {
			out = append(out, tag)
		}
	}
	slices.Sort(out) // in the order they were written
	return out
}

// convertInto pushes layers as SRC:1 and converts them into TARGET with
// the default dedup scope; it returns the upload bytes of the conversion.
func convertInto(t *testing.T, r *registrytest.Registry, src, target string, o Options, layers ...[]byte) int64 {
	t.Helper()
	registrytest.PushImage(t, r.Host+"/"+src, layers)
	before := r.Stats().UploadBytes
	if _, err := Convert(context.Background(), ref(t, r.Host+"/"+src), ref(t, r.Host+"/"+target), o); err != nil {
		t.Fatalf("convert %s: %v", src, err)
	}
	return r.Stats().UploadBytes - before
}

// TestDedupScopeDefault: with nydusify's defaults, an image converted
// into a repository dedups against the images converted there before
// (no dictionary named by hand): its different base layer stores the
// shared file once; the image lists the earlier blob it uses and pulls
// right. With the scope off, nothing is shared and no dictionary kept.
func TestDedupScopeDefault(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	big := treetest.Random(61, 6<<20)
	a := treetest.Tar([]treetest.File{treetest.Reg("etc/os", 0o644, []byte("a\n")), treetest.Reg("opt/big.bin", 0o644, big)})
	b := treetest.Tar([]treetest.File{treetest.Reg("etc/os", 0o644, []byte("b\n")), treetest.Reg("usr/big.bin", 0o644, big)})
	if up := convertInto(t, r, "src/a:1", "app:a", testOptions(t), a); up < 6<<20 {
		t.Fatalf("the first image uploaded only %d bytes", up)
	}
	if n := len(dictTags(t, r, "app")); n != 1 {
		t.Fatalf("%d dictionary artifacts after one conversion", n)
	}
	if up := convertInto(t, r, "src/b:1", "app:b", testOptions(t), b); up > 1<<20 {
		t.Fatalf("the second image uploaded %d bytes for a file the repository has", up)
	}
	if d := treetest.Diff(expected(t, b), pull(t, r, r.Host+"/app:b").tree); d != "" {
		t.Fatalf("tree differs:\n%s", d)
	}
	o := testOptions(t)
	o.NoDedupScope = true
	if up := convertInto(t, r, "src/b:1", "other:b", o, b); up < 6<<20 {
		t.Fatalf("with --dedup-scope none the image uploaded only %d bytes", up)
	}
	if n := len(dictTags(t, r, "other")); n != 0 {
		t.Fatalf("with --dedup-scope none %d dictionary artifacts were written", n)
	}
	// Another repository as the scope: its chunks are reused, and the
	// blob is mounted into the target repository.
	o = testOptions(t)
	o.DedupScope = []name.Repository{ref(t, r.Host+"/app:x").Name.Context()}
	if up := convertInto(t, r, "src/b:1", "third:b", o, b); up > 1<<20 {
		t.Fatalf("with --dedup-scope app the image uploaded %d bytes", up)
	}
	if d := treetest.Diff(expected(t, b), pull(t, r, r.Host+"/third:b").tree); d != "" {
		t.Fatalf("tree differs:\n%s", d)
	}
}

// TestDedupScopeConcurrent: two conversions into one repository at once
// lose no dictionary entry: a third image holding both files stores
// neither again. Past dictCompactAt artifacts, a conversion merges them.
func TestDedupScopeConcurrent(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	x, y := treetest.Random(62, 4<<20), treetest.Random(63, 4<<20)
	la := treetest.Tar([]treetest.File{treetest.Reg("x.bin", 0o644, x)})
	lb := treetest.Tar([]treetest.File{treetest.Reg("y.bin", 0o644, y)})
	registrytest.PushImage(t, r.Host+"/src/a:1", [][]byte{la})
	registrytest.PushImage(t, r.Host+"/src/b:1", [][]byte{lb})
	var wg sync.WaitGroup
	for _, s := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := Convert(context.Background(), ref(t, r.Host+"/src/"+s+":1"), ref(t, r.Host+"/app:"+s), testOptions(t)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	both := treetest.Tar([]treetest.File{treetest.Reg("data/x.bin", 0o644, x), treetest.Reg("data/y.bin", 0o644, y)})
	if up := convertInto(t, r, "src/c:1", "app:c", testOptions(t), both); up > 1<<20 {
		t.Fatalf("the third image uploaded %d bytes: a concurrent conversion's chunks were lost", up)
	}
	// Compaction: more conversions than dictCompactAt artifacts.
	for i := range dictCompactAt {
		l := treetest.Tar([]treetest.File{treetest.Reg("f.bin", 0o644, treetest.Random(int64(100+i), 64<<10))})
		convertInto(t, r, "src/n:"+string(rune('a'+i)), "app:n"+string(rune('a'+i)), testOptions(t), l)
	}
	if n := len(dictTags(t, r, "app")); n > dictCompactAt {
		t.Fatalf("%d dictionary artifacts: they were not merged", n)
	}
	if up := convertInto(t, r, "src/c:1", "app:c2", testOptions(t), both); up > 1<<20 {
		t.Fatalf("after merging, an image of known files uploaded %d bytes", up)
	}
}

// TestDedupScopeSelfContained: an image that reuses another image's
// blob through the dictionary lists that blob as its own layer, so once
// the other image is deleted and the registry collects garbage, it still
// pulls whole (every layer's digest verified) and unpacks right, and a
// later conversion does not reference what is gone.
func TestDedupScopeSelfContained(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	big := treetest.Random(64, 4<<20)
	only := treetest.Random(65, 2<<20)
	a := treetest.Tar([]treetest.File{treetest.Reg("big.bin", 0o644, big), treetest.Reg("only-a.bin", 0o644, only)})
	b := treetest.Tar([]treetest.File{treetest.Reg("etc/b", 0o644, []byte("b\n")), treetest.Reg("big.bin", 0o644, big)})
	convertInto(t, r, "src/a:1", "app:a", testOptions(t), a)
	if up := convertInto(t, r, "src/b:1", "app:b", testOptions(t), b); up > 1<<20 {
		t.Fatalf("b uploaded %d bytes", up)
	}
	// Delete a (its manifest) and collect.
	img, err := remote.Image(ref(t, r.Host+"/app:a").Name, plainC.Options(ctx)...)
	if err != nil {
		t.Fatal(err)
	}
	dg, _ := img.Digest()
	if err := remote.Delete(ref(t, r.Host+"/app:a").Name.Context().Digest(dg.String()), plainC.Options(ctx)...); err != nil {
		t.Fatal(err)
	}
	r.GarbageCollect(t)
	if d := treetest.Diff(expected(t, b), pull(t, r, r.Host+"/app:b").tree); d != "" {
		t.Fatalf("b after a was deleted and collected: tree differs:\n%s", d)
	}
	// Every layer of b downloads whole, its digest verified.
	bimg, err := remote.Image(ref(t, r.Host+"/app:b").Name, plainC.Options(ctx)...)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := bimg.Layers()
	for _, l := range ls {
		rc, err := l.Compressed()
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
		}
		if err != nil {
			t.Fatalf("b's layer after a was deleted and collected: %v", err)
		}
	}
	// A later conversion still dedups against what b keeps alive and
	// converts an image with a's other file correctly.
	c := treetest.Tar([]treetest.File{treetest.Reg("big.bin", 0o644, big), treetest.Reg("only-a.bin", 0o644, only)})
	convertInto(t, r, "src/c:1", "app:c", testOptions(t), c)
	if d := treetest.Diff(expected(t, c), pull(t, r, r.Host+"/app:c").tree); d != "" {
		t.Fatalf("c: tree differs:\n%s", d)
	}
}

// TestDedupScopeReproducible: converting a source again into the
// repository that holds its first conversion gives the same image, and
// so does a conversion with the scope off: the dictionary only points
// the builder at blobs with the very chunks it would write.
func TestDedupScopeReproducible(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	a := treetest.Tar([]treetest.File{treetest.Reg("etc/os", 0o644, []byte("a\n")), treetest.Reg("opt/big.bin", 0o644, treetest.Random(66, 3<<20))})
	registrytest.PushImage(t, r.Host+"/src:1", [][]byte{a, treetest.Tar(treetest.Sample())})
	var digests []string
	for _, tgt := range []string{"app:1", "app:2", "other:1"} {
		o := testOptions(t)
		o.NoDedupScope = tgt == "other:1"
		res, err := Convert(context.Background(), ref(t, r.Host+"/src:1"), ref(t, r.Host+"/"+tgt), o)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, res.TargetDigest)
	}
	if digests[0] != digests[1] || digests[0] != digests[2] {
		t.Fatalf("conversions of one source: %v; want one digest", digests)
	}
}

// TestDedupScopeRefs: a conversion whose chunks the repository's
// dictionary has already records only its new chunks in full, and one
// more reference to each of the others (the artifact's reference list):
// its artifact is a fraction of the first one, the merged dictionary
// counts the shared chunks twice, and merging the artifacts
// (compaction) keeps those counts.
func TestDedupScopeRefs(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	files := []treetest.File{}
	for i := range 64 {
		files = append(files, treetest.Reg(fmt.Sprintf("lib/f%02d.bin", i), 0o644, treetest.Random(int64(200+i), 200<<10)))
	}
	a := treetest.Tar(files)
	b := treetest.Tar(append(slices.Clone(files), treetest.Reg("new.bin", 0o644, treetest.Random(300, 2<<20))))
	convertInto(t, r, "src/a:1", "app:a", testOptions(t), a)
	convertInto(t, r, "src/b:1", "app:b", testOptions(t), b)
	tags := dictTags(t, r, "app")
	if len(tags) != 2 {
		t.Fatalf("%d dictionary artifacts, want 2", len(tags))
	}
	repo := ref(t, r.Host+"/app:x").Name.Context()
	var arts []dictArtifact
	var sizes []int64
	for _, tag := range tags { // in conversion order
		art, _, err := readDictArtifact(ctx, repo.Tag(tag), plainC)
		if err != nil {
			t.Fatal(err)
		}
		img, _ := remote.Image(repo.Tag(tag), plainC.Options(ctx)...)
		mf, _ := img.Manifest()
		var n int64
		for _, l := range mf.Layers {
			n += l.Size
		}
		arts, sizes = append(arts, art), append(sizes, n)
	}
	first, second := arts[0], arts[1]
	if first.refs != nil || len(first.dict.Chunks) < 64 {
		t.Fatalf("first artifact: %d chunks, %d reference bytes", len(first.dict.Chunks), len(first.refs))
	}
	if len(second.dict.Chunks) != 2 || len(second.refs) != len(first.dict.Chunks)*chunkdict.RefPrefixSize {
		t.Fatalf("second artifact: %d chunks in full (want new.bin's 2), %d reference bytes (want %d)",
			len(second.dict.Chunks), len(second.refs), len(first.dict.Chunks)*chunkdict.RefPrefixSize)
	}
	if sizes[1]*3 > sizes[0] {
		t.Fatalf("the second artifact takes %d bytes against the first's %d", sizes[1], sizes[0])
	}
	counts := func(d *chunkdict.Dict) (ones, twos int) {
		for _, c := range d.Chunks {
			switch c.Refs {
			case 1:
				ones++
			case 2:
				twos++
			default:
				t.Fatalf("a chunk counted %d times", c.Refs)
			}
		}
		return
	}
	m, err := mergeArtifacts(arts)
	if err != nil {
		t.Fatal(err)
	}
	if ones, twos := counts(m); ones != 2 || twos != len(first.dict.Chunks) {
		t.Fatalf("merged: %d chunks counted once, %d twice; want 2 and %d", ones, twos, len(first.dict.Chunks))
	}
	// Compaction keeps the counts.
	for i := range dictCompactAt {
		l := treetest.Tar([]treetest.File{treetest.Reg("f.bin", 0o644, treetest.Random(int64(400+i), 16<<10))})
		convertInto(t, r, fmt.Sprintf("src/n:%d", i), fmt.Sprintf("app:n%d", i), testOptions(t), l)
	}
	tags = dictTags(t, r, "app")
	if len(tags) > dictCompactAt {
		t.Fatalf("%d dictionary artifacts: they were not merged", len(tags))
	}
	arts = arts[:0]
	for _, tag := range tags {
		art, _, err := readDictArtifact(ctx, repo.Tag(tag), plainC)
		if err != nil {
			t.Fatal(err)
		}
		arts = append(arts, art)
	}
	if m, err = mergeArtifacts(arts); err != nil {
		t.Fatal(err)
	}
	twice := 0
	for _, c := range m.Chunks {
		if c.Refs == 2 {
			twice++
		}
	}
	if twice != len(first.dict.Chunks) {
		t.Fatalf("after compaction %d chunks are counted twice, want %d", twice, len(first.dict.Chunks))
	}
}
