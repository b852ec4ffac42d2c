package main

import (
	"github.com/spf13/cobra"
)

func newCheckCmd(lo *logOptions) *cobra.Command {
	return &cobra.Command{Use: "check", Short: "Check a Nydus image against its source (being built)", Hidden: true}
}
