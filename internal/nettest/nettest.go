// Package nettest holds network fixtures for tests: servers that
// misbehave the way real ones do.
package nettest

import (
	"net"
	"testing"
)

// Silent starts a TCP listener on loopback that accepts connections and
// never reads or answers, like a registry whose process hangs. It returns
// its host:port; the listener and its connections are closed when the
// test ends.
func Silent(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn // owned by this goroutine
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}
