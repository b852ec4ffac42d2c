package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/nydus-go/nydus/pkg/imageref"
)

// netFlags are the network timeouts every registry-facing subcommand
// takes.
type netFlags struct {
	connect, header, idle time.Duration
}

func (n *netFlags) register(fl *pflag.FlagSet) {
	fl.DurationVar(&n.connect, "connect-timeout", imageref.DefaultConnectTimeout, "bound on TCP connect and TLS handshake with a registry")
	fl.DurationVar(&n.header, "response-timeout", imageref.DefaultResponseHeaderTimeout, "bound on waiting for a registry's response headers")
	fl.DurationVar(&n.idle, "idle-timeout", imageref.DefaultIdleTimeout, "fail a transfer that receives nothing for this long")
}

// apply sets the timeouts on registry options.
func (n *netFlags) apply(ros ...*imageref.RegistryOptions) {
	for _, ro := range ros {
		ro.ConnectTimeout, ro.ResponseHeaderTimeout, ro.IdleTimeout = n.connect, n.header, n.idle
	}
}
