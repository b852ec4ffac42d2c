package api_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/nydus-go/nydus/pkg/daemon/api"
)

// ExampleClient connects to a running nydusd's API socket, reads its
// state and follows its event log.
func ExampleClient() {
	c := api.NewClient("/run/nydus/api.sock", api.WithTimeout(10*time.Second))
	defer c.Close()
	ctx := context.Background()

	info, err := c.DaemonInfo(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.ID, info.State)
	for mp, m := range info.Mounts {
		fmt.Println(mp, m.Bootstrap, m.BootstrapDigest)
	}

	// A non-2xx answer is a *StatusError with upstream's code and message.
	if _, err := c.FileMetrics(ctx, "/nope"); err != nil {
		var se *api.StatusError
		if errors.As(err, &se) && se.StatusCode == http.StatusNotFound {
			fmt.Println("no such image:", se.Message)
		}
	}

	// Long-poll the event log: each call waits up to 30 s for an event.
	var since uint64
	for range 3 {
		evs, err := c.Events(ctx, since, 30*time.Second)
		if err != nil {
			log.Fatal(err)
		}
		for _, e := range evs {
			fmt.Println(e.Seq(), e.Type, e.Data.Path)
			since = e.Seq()
		}
	}
}
