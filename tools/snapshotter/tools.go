//go:build tools

// Package snapshotter pins the upstream nydus-snapshotter that the
// containerd tests and `make demo` run with our nydusd. `go install
// …@version` refuses that module (its go.mod has exclude directives), so
// it is required here and built with `make snapshotter`.
package snapshotter

import _ "github.com/containerd/nydus-snapshotter/cmd/containerd-nydus-grpc"
