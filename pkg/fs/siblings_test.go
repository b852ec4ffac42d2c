package fs

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// TestSiblingSpeculation: reading one small file that missed the cache
// fetches the other small files of its directory in the background, in
// one stream, so reading them sends no request; a directory with more
// than siblingMaxDir of small files, and a filesystem without
// Options.Siblings, fetch nothing more.
func TestSiblingSpeculation(t *testing.T) {
	var files []treetest.File
	want := map[string][]byte{}
	add := func(name string, d []byte) {
		files = append(files, treetest.Reg(name, 0o644, d))
		want["/"+name] = d
	}
	for i := range 12 {
		add(fmt.Sprintf("json/__pycache__/m%02d.pyc", i), treetest.Random(int64(i), 3000+i*100))
	}
	add("json/__pycache__/big.bin", treetest.Random(99, 200_000)) // not small: left out
	for i := range 40 {
		add(fmt.Sprintf("stdlib/__pycache__/s%02d.pyc", i), treetest.Random(int64(100+i), 20_000)) // 800 KB in all
	}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000, BatchSize: 0x4000})
	rd, _ := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	dataEnd := int64(rd.Blobs[0].CIOffset)
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("siblings=%v", on), func(t *testing.T) {
			be := fetchtest.NewStreamLog(dir)
			f, err := Open(context.Background(), res.Bootstrap, be, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache()}, Siblings: on})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := readFile(t, f, "/json/__pycache__/m00.pyc", want["/json/__pycache__/m00.pyc"]); err != nil {
				t.Fatal(err)
			}
			if err := readFile(t, f, "/stdlib/__pycache__/s00.pyc", want["/stdlib/__pycache__/s00.pyc"]); err != nil {
				t.Fatal(err)
			}
			f.bgWG.Wait()
			before := len(be.Requests(dataEnd))
			sibling := 0
			for _, r := range be.Requests(dataEnd) {
				if r.Kind == fetch.Sibling {
					sibling++
				}
			}
			for i := 1; i < 12; i++ {
				p := fmt.Sprintf("/json/__pycache__/m%02d.pyc", i)
				if err := readFile(t, f, p, want[p]); err != nil {
					t.Fatal(err)
				}
			}
			after := len(be.Requests(dataEnd))
			if on {
				if sibling != 1 || after != before || f.Metrics.SiblingFiles.Load() != 11 {
					t.Fatalf("%d sibling requests (want 1), %d requests to read the 11 siblings after (want 0), SiblingFiles %d (want 11): %v",
						sibling, after-before, f.Metrics.SiblingFiles.Load(), be.Requests(dataEnd))
				}
				if err := readFile(t, f, "/stdlib/__pycache__/s01.pyc", want["/stdlib/__pycache__/s01.pyc"]); err != nil {
					t.Fatal(err)
				}
				if len(be.Requests(dataEnd)) == after {
					t.Fatal("a directory with 800 KB of small files was speculated on")
				}
			} else if sibling != 0 || after == before {
				t.Fatalf("without Siblings: %d sibling requests, %d requests for the siblings", sibling, after-before)
			}
		})
	}
}
