package treetest

import (
	"archive/tar"
	"fmt"
	"math/rand"
	"path"
)

// Generate returns a layer of about entries entries shaped like a large
// application image (a language runtime's library tree, node_modules): a
// tree up to seven levels deep whose directories hold 3 to 40 entries,
// about 12% of them directories (40% near the top), 8% symbolic links (to siblings, to
// other directories' files, and a few dangling) and the rest regular
// files, mostly small (80% under 1 KiB, 19% under 8 KiB, 1% up to
// 128 KiB; about 2 KiB on average). The same seed gives the same layer.
func Generate(seed int64, entries int) []File {
	r := rand.New(rand.NewSource(seed))
	pool := Random(seed, 1<<20)
	exts := []string{".py", ".js", ".so", ".txt", ".json", ".h", ".pyc", ""}
	var files []File
	var regular []string
	queue := []struct {
		dir   string
		depth int
	}{{"app", 0}}
	files = append(files, Dir("app", 0o755))
	for roots := 1; len(files) < entries; {
		if len(queue) == 0 {
			// Another package beside the first.
			roots++
			p := fmt.Sprintf("app%d", roots)
			files = append(files, Dir(p, 0o755))
			queue = append(queue, struct {
				dir   string
				depth int
			}{p, 0})
		}
		d := queue[0]
		queue = queue[1:]
		n := 3 + r.Intn(38)
		for i := 0; i < n && len(files) < entries; i++ {
			switch x := r.Intn(100); {
			case (x < 12 || x < 40 && d.depth < 2) && d.depth < 7:
				p := path.Join(d.dir, fmt.Sprintf("d%02d", i))
				files = append(files, Dir(p, 0o755))
				queue = append(queue, struct {
					dir   string
					depth int
				}{p, d.depth + 1})
			case x < 20 && len(regular) > 0:
				target := regular[r.Intn(len(regular))]
				if r.Intn(10) == 0 {
					target = "missing-" + target
				}
				rel := relPath(d.dir, target)
				files = append(files, File{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: path.Join(d.dir, fmt.Sprintf("l%02d", i)), Linkname: rel, Mode: 0o777, ModTime: T, Format: tar.FormatPAX}})
			default:
				var size int
				switch y := r.Intn(100); {
				case y < 80:
					size = r.Intn(1 << 10)
				case y < 99:
					size = 1<<10 + r.Intn(7<<10)
				default:
					size = 8<<10 + r.Intn(120<<10)
				}
				off := r.Intn(len(pool) - size)
				p := path.Join(d.dir, fmt.Sprintf("f%02d%s", i, exts[r.Intn(len(exts))]))
				files = append(files, Reg(p, 0o644, pool[off:off+size]))
				regular = append(regular, p)
			}
		}
	}
	return files
}

// relPath returns target relative to directory dir (both slash paths
// from the same root).
func relPath(dir, target string) string {
	up := ""
	for d := dir; ; d = path.Dir(d) {
		if d == "." || d == "/" {
			return up + target
		}
		if rest, ok := cutPrefix(target, d+"/"); ok {
			return up + rest
		}
		up += "../"
	}
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return s, false
}
