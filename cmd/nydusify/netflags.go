package main

import (
	"time"

	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/spf13/pflag"
)

// netFlags are the network timeouts every registry-facing subcommand
// takes.
type netFlags struct {
	connect, header, idle time.Duration
}

func (n *netFlags) register(fl *pflag.FlagSet) {
	fl.DurationVar(&n.connect, "connect-timeout", converter.DefaultConnectTimeout, "bound on TCP connect and TLS handshake with a registry")
	fl.DurationVar(&n.header, "response-timeout", converter.DefaultResponseHeaderTimeout, "bound on waiting for a registry's response headers")
	fl.DurationVar(&n.idle, "idle-timeout", converter.DefaultIdleTimeout, "fail a transfer that receives nothing for this long")
}

// apply sets the timeouts on registry options.
func (n *netFlags) apply(ros ...*converter.RegistryOptions) {
	for _, ro := range ros {
		ro.ConnectTimeout, ro.ResponseHeaderTimeout, ro.IdleTimeout = n.connect, n.header, n.idle
	}
}
