package benchkit

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/sysproc"
)

func TestRun(t *testing.T) {
	u, err := Run(exec.Command("sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"))
	if err != nil {
		t.Fatal(err)
	}
	if u.Wall <= 0 || u.CPU <= 0 || u.MaxRSSKiB <= 0 || u.Others < 0 {
		t.Fatalf("usage %+v", u)
	}
	if _, err := Run(exec.Command("sh", "-c", "exit 3")); err == nil {
		t.Fatal("exit 3: no error")
	}
	var ee *exec.ExitError
	if _, err := Run(exec.Command("sh", "-c", "exit 3")); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit 3: %v", err)
	}
}

// A cancelled context stops the whole process group, not just the child.
func TestRunCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Run(exec.CommandContext(ctx, "sh", "-c", "sleep 31.4159 & sleep 30; wait"))
	if err == nil {
		t.Fatal("no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
	sysproc.WaitGone(func() []int { return sysproc.PIDsMatching("31.4159") })
	if pids := sysproc.PIDsMatching("31.4159"); len(pids) > 0 {
		t.Fatalf("the background sleep survived: %v", pids)
	}
}

func TestWaitIdle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := WaitIdle(ctx, time.Minute, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	// A threshold nothing stays below gives up after maxWait.
	d, err := WaitIdle(context.Background(), 100*time.Millisecond, -1)
	if err != nil || d < 100*time.Millisecond || d > 2*time.Second {
		t.Fatalf("waited %s, %v", d, err)
	}
}

func TestMissingCommands(t *testing.T) {
	got := MissingCommands(map[string]string{"sh": "dash", "no-such-command-xyz": "pkg-a", "no-such-command-2": "pkg-a"})
	if len(got) != 1 || got[0] != "pkg-a" {
		t.Fatalf("missing = %v", got)
	}
}
