package builder

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"github.com/nydus-go/nydus/pkg/storage"
	"io"
	"time"

	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
	"golang.org/x/sys/unix"
)

// ErrDigestMismatch reports a chunk whose data does not match its digest.
var ErrDigestMismatch = errors.New("chunk digest mismatch")

// UnpackOptions tune Unpack.
type UnpackOptions struct {
	// SkipVerify disables chunk digest verification.
	SkipVerify bool
}

// Unpack writes the filesystem of a bootstrap as a tar stream to w,
// reading file data through src. Entry names are relative and never
// contain "..", so extracting the stream cannot escape its target.
func Unpack(ctx context.Context, rd *rafs.Reader, src storage.RangeReader, w io.Writer, opts UnpackOptions) error {
	root, err := rd.Load(ctx, rafs.LoadOptions{})
	if err != nil {
		return err
	}
	cr, err := storage.NewChunkReader(ctx, rd, src)
	if err != nil {
		return err
	}
	dig := rd.Ext.Flags.Digester()
	tw := tar.NewWriter(w)
	links := map[*rafs.Inode]string{}
	err = root.Walk(func(p string, n *rafs.Node) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		var name string
		if p == "/" {
			name = "./"
		} else {
			name = p[1:]
		}
		ino := n.Inode
		hdr := &tar.Header{
			Name:    name,
			Mode:    int64(ino.Mode & 0o7777),
			Uid:     int(ino.UID),
			Gid:     int(ino.GID),
			ModTime: time.Unix(int64(ino.Mtime), int64(ino.MtimeNsec)),
			Format:  tar.FormatPAX,
		}
		if len(ino.Xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for _, x := range ino.Xattrs {
				hdr.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
			}
		}
		if first, ok := links[ino]; ok && !ino.IsDir() {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			return tw.WriteHeader(hdr)
		}
		switch ino.Mode & rafs.ModeType {
		case rafs.ModeDir:
			hdr.Typeflag = tar.TypeDir
			if p != "/" {
				hdr.Name += "/"
			}
		case rafs.ModeRegular:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(ino.Size)
		case rafs.ModeSymlink:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = ino.Symlink
		case rafs.ModeChar, rafs.ModeBlock:
			hdr.Typeflag = tar.TypeChar
			if ino.Mode&rafs.ModeType == rafs.ModeBlock {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor = int64(unix.Major(uint64(ino.Rdev)))
			hdr.Devminor = int64(unix.Minor(uint64(ino.Rdev)))
		case rafs.ModeFifo:
			hdr.Typeflag = tar.TypeFifo
		case rafs.ModeSocket:
			return nil // tar cannot carry sockets
		}
		if !ino.IsDir() {
			links[ino] = name
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			for i, c := range ino.Chunks {
				data, err := readVerified(ctx, rd, cr, dig, c, opts.SkipVerify)
				if err != nil {
					return fmt.Errorf("%s: chunk %d: %w", p, i, err)
				}
				if _, err := tw.Write(data); err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func readVerified(ctx context.Context, rd *rafs.Reader, cr *storage.ChunkReader, dig digester.Algorithm, c rafs.ChunkInfo, skip bool) ([]byte, error) {
	if int(c.BlobIndex) >= len(rd.Blobs) {
		return nil, fmt.Errorf("blob index %d out of range", c.BlobIndex)
	}
	bi := rd.Blobs[c.BlobIndex]
	data, err := cr.ReadChunk(ctx, c)
	if err != nil {
		return nil, err
	}
	if uint32(len(data)) != c.UncompressedSize {
		return nil, fmt.Errorf("blob %s chunk %d: got %d bytes, want %d", bi.BlobID, c.Index, len(data), c.UncompressedSize)
	}
	if !skip && c.Digest != (digester.Digest{}) {
		if got := digester.Sum(dig, data); got != c.Digest {
			return nil, fmt.Errorf("blob %s chunk %d at compressed offset %d: %w (got %s, want %s)", bi.BlobID, c.Index, c.CompressedOffset, ErrDigestMismatch, got, c.Digest)
		}
	}
	return data, nil
}
