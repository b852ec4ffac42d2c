package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nydus-go/nydus/internal/version"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/registry"
	"github.com/nydus-go/nydus/pkg/storage"
)

func newUnpackCmd() *cobra.Command {
	var log logFlags
	var boot, output, blob, blobDir, backendType, backendConfig, backendConfigFile, config string
	var noVerify bool
	c := &cobra.Command{
		Use:   "unpack [flags] BOOTSTRAP --output OUT",
		Short: "Unpack an image's filesystem into a tar archive",
		Long: `Unpack the filesystem of a RAFS v6 bootstrap into a tar archive at OUT
(which may be a FIFO). File data comes from one of:
  -b/--blob FILE              one blob file serving every blob id
  -D/--blob-dir DIR           blobs stored as DIR/<blob_id>
  --backend-type http-proxy   an HTTP server (or unix socket) serving blobs
    --backend-config '{"addr":"/path/to.sock"}' or --backend-config-file F
  --backend-type registry     an OCI registry, with nydusd's registry fields
    --backend-config '{"host":"127.0.0.1:5000","repo":"app","scheme":"http"}'
    (also "auth": base64 of user:password, "registry_token", "skip_verify")

Every chunk's digest is verified; a mismatch fails the unpack. Entry names
never contain "..", so extracting the archive cannot escape its target.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			done, err := log.setup()
			if err != nil {
				return err
			}
			defer done()
			path, err := bootstrapArg(args, boot)
			if err != nil {
				return err
			}
			if output == "" {
				return errors.New("--output is required")
			}
			n := 0
			for _, v := range []string{blob, blobDir, backendType} {
				if v != "" {
					n++
				}
			}
			if n > 1 {
				return errors.New("--blob, --blob-dir and --backend-type are mutually exclusive")
			}
			return runUnpack(cmd.Context(), path, output, blob, blobDir, backendType, backendConfig, backendConfigFile, noVerify)
		},
	}
	log.register(c)
	fl := c.Flags()
	fl.StringVarP(&boot, "bootstrap", "B", "", "bootstrap to unpack (deprecated: pass it as an argument)")
	fl.StringVarP(&output, "output", "o", "", "tar file (or FIFO) to write")
	fl.StringVarP(&blob, "blob", "b", "", "blob file to read every chunk from")
	fl.StringVarP(&blobDir, "blob-dir", "D", "", "directory of blobs named by id")
	fl.StringVar(&backendType, "backend-type", "", "storage backend: http-proxy, registry (localfs: use --blob-dir)")
	fl.StringVar(&backendConfig, "backend-config", "", "backend configuration as JSON")
	fl.StringVar(&backendConfigFile, "backend-config-file", "", "file holding the backend configuration JSON")
	fl.StringVarP(&config, "config", "C", "", "configuration file (ignored)")
	fl.BoolVar(&noVerify, "no-verify", false, "do not verify chunk digests (not recommended)")
	return c
}

func runUnpack(ctx context.Context, path, output, blob, blobDir, backendType, backendConfig, backendConfigFile string, noVerify bool) error {
	rd, f, err := openBootstrap(ctx, path)
	if err != nil {
		return err
	}
	defer f.Close()
	var src storage.RangeReader
	switch {
	case blob != "":
		fs := &storage.FileSource{File: blob}
		defer fs.Close()
		src = fs
	case blobDir != "":
		fs := &storage.FileSource{Dir: blobDir}
		defer fs.Close()
		src = fs
	case backendType != "":
		cfg := []byte(backendConfig)
		if backendConfigFile != "" {
			if backendConfig != "" {
				return errors.New("--backend-config and --backend-config-file are mutually exclusive")
			}
			if cfg, err = os.ReadFile(backendConfigFile); err != nil {
				return fmt.Errorf("--backend-config-file: %w", err)
			}
		}
		switch backendType {
		case "http-proxy":
			hs, err := newHTTPProxySource(cfg)
			if err != nil {
				return err
			}
			src = hs
		case "localfs":
			return errors.New("--backend-type localfs is not accepted: use --blob-dir")
		case "registry":
			var rc registry.Config
			if err := json.Unmarshal(cfg, &rc); err != nil {
				return fmt.Errorf("invalid registry backend config: %w", err)
			}
			cl, err := registry.New(ctx, rc)
			if err != nil {
				return err
			}
			src = cl
		default:
			return fmt.Errorf("invalid --backend-type %q (want http-proxy or registry)", backendType)
		}
	default:
		return errors.New("one of --blob, --blob-dir or --backend-type is required")
	}
	out, err := createOutput(output)
	if err != nil {
		return err
	}
	if err := builder.Unpack(ctx, rd, src, out, builder.UnpackOptions{SkipVerify: noVerify}); err != nil {
		out.abort()
		return fmt.Errorf("unpack %s: %w", path, err)
	}
	return out.commit("")
}

// httpProxySource reads chunks with HTTP Range requests from upstream's
// "http-proxy" backend: addr is a unix socket path (requests go to "/")
// or an http(s) URL (requests go to addr + path + "/" + blob id).
type httpProxySource struct {
	client *http.Client
	base   string
	local  bool
}

func newHTTPProxySource(cfg []byte) (*httpProxySource, error) {
	var c struct {
		Addr string `json:"addr"`
		Path string `json:"path"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		return nil, fmt.Errorf("invalid http-proxy backend config: %w", err)
	}
	if c.Addr == "" {
		return nil, errors.New("invalid http-proxy backend config: field addr is empty")
	}
	s := &httpProxySource{}
	if strings.HasPrefix(c.Addr, "http://") || strings.HasPrefix(c.Addr, "https://") {
		s.client = http.DefaultClient
		s.base = strings.TrimRight(c.Addr, "/") + "/" + strings.Trim(c.Path, "/")
	} else {
		sock := c.Addr
		s.local = true
		s.client = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		}}
		s.base = "http://unix/"
	}
	return s, nil
}

// ReadRange reads n bytes at off of a blob.
func (s *httpProxySource) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	url := s.base
	if !s.local {
		url = strings.TrimRight(s.base, "/") + "/" + blobID
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("http-proxy backend: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent && resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("http-proxy backend: blob %s: HTTP %s", blobID, resp.Status)
	}
	buf, err := registry.RangeBody(resp, uint64(off), uint64(n))
	if err != nil {
		return nil, fmt.Errorf("http-proxy backend: blob %s bytes %d-%d: %w", blobID, off, off+n-1, err)
	}
	return buf, nil
}

func newStatCmd() *cobra.Command {
	var log logFlags
	var boot, blobDir, target, dig, outJSON, config string
	c := &cobra.Command{
		Use:   "stat [flags]",
		Short: "Report file and chunk deduplication statistics of bootstraps",
		Long: `Report statistics of one bootstrap (-B) or of every extension-less file in a
directory (-D), counting chunks shared between images once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			done, err := log.setup()
			if err != nil {
				return err
			}
			defer done()
			return runStat(cmd.Context(), boot, blobDir, target, outJSON)
		},
	}
	log.register(c)
	fl := c.Flags()
	fl.StringVarP(&boot, "bootstrap", "B", "", "bootstrap to analyse")
	fl.StringVarP(&blobDir, "blob-dir", "D", "", "directory of bootstraps to analyse together")
	fl.StringVarP(&target, "target", "T", "", "bootstrap to compare against the others")
	fl.StringVar(&dig, "digester", "blake3", "digest algorithm (informational)")
	fl.StringVarP(&outJSON, "output-json", "J", "", "write the JSON report to this file (default: stdout)")
	fl.StringVarP(&config, "config", "C", "", "configuration file (ignored)")
	return c
}

func runStat(ctx context.Context, boot, dir, target, outJSON string) error {
	var paths []string
	if boot != "" {
		paths = append(paths, boot)
	}
	if target != "" {
		paths = append(paths, target)
	}
	if dir != "" {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("--blob-dir: %w", err)
		}
		for _, e := range ents {
			if e.Type().IsRegular() && !strings.Contains(e.Name(), ".") {
				paths = append(paths, dir+"/"+e.Name())
			}
		}
	}
	if len(paths) == 0 {
		return errors.New("one of --bootstrap, --blob-dir or --target is required")
	}
	type img struct {
		Path    string           `json:"path"`
		Summary *builder.Summary `json:"summary"`
	}
	var images []img
	unique := map[[32]byte]uint32{}
	var total uint64
	for _, p := range paths {
		rd, f, err := openBootstrap(ctx, p)
		if err != nil {
			return err
		}
		sum, err := builder.Check(ctx, rd, nil)
		if err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", p, err)
		}
		table, err := rd.ChunkTable(ctx)
		f.Close()
		if err != nil {
			return err
		}
		for _, c := range table {
			unique[c.Digest] = c.UncompressedSize
		}
		total += sum.UniqueBytes
		images = append(images, img{p, sum})
	}
	var uniq uint64
	for _, s := range unique {
		uniq += uint64(s)
	}
	report := map[string]any{
		"version":             version.Version,
		"images":              images,
		"unique_chunks":       len(unique),
		"unique_chunk_bytes":  uniq,
		"total_chunk_bytes":   total,
		"cross_image_savings": total - uniq,
	}
	if outJSON == "" {
		b, _ := json.MarshalIndent(report, "", "  ")
		fmt.Println(string(b))
		return nil
	}
	return writeJSON(outJSON, report)
}
