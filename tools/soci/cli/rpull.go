package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/awslabs/soci-snapshotter/fs/source"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
)

// rpull pulls an image and unpacks it into the SOCI snapshotter, labelling
// every layer with what SOCI reads to mount it lazily: the image reference,
// the manifest digest and the layer digests (containerd's CRI labels, which
// nerdctl and the CRI plugin set too), and the layer sizes. ctr-remote's
// rpull sets stargz's labels only: SOCI then finds no image reference and
// lets containerd pull every layer whole.
func rpull(args []string) error {
	fl := flag.NewFlagSet("rpull", flag.ExitOnError)
	address := fl.String("address", "/run/containerd/containerd.sock", "containerd's socket")
	ns := fl.String("namespace", "default", "containerd namespace")
	snapshotter := fl.String("snapshotter", "soci", "snapshotter to unpack into")
	plainHTTP := fl.Bool("plain-http", false, "use plain HTTP for the registry")
	index := fl.String("soci-index-digest", "", "SOCI index to use (default: the one the image's manifest names)")
	fl.Usage = func() {
		fmt.Fprintf(fl.Output(), "usage: soci rpull [flags] REF\n\n")
		fl.PrintDefaults()
	}
	fl.Parse(args)
	if fl.NArg() != 1 {
		fl.Usage()
		os.Exit(2)
	}
	ref := fl.Arg(0)
	client, err := containerd.New(*address, containerd.WithDefaultNamespace(*ns))
	if err != nil {
		return err
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), *ns)
	hostOpts := []docker.RegistryOpt{}
	if *plainHTTP {
		hostOpts = append(hostOpts, docker.WithPlainHTTP(docker.MatchAllHosts))
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(hostOpts...)})
	t := time.Now()
	img, err := client.Pull(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(*snapshotter),
		containerd.WithImageHandlerWrapper(source.AppendDefaultLabelsHandlerWrapper(*index, snapshotters.AppendInfoHandlerWrapper(ref))))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "soci rpull: %s (%s) in %.2fs\n", img.Name(), img.Target().Digest, time.Since(t).Seconds())
	return nil
}
