package cliutil

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
)

func TestReport(t *testing.T) {
	var b bytes.Buffer
	if c := Report(&b, "tool", Exit(3, errors.New("bad\nthing"))); c != 3 || b.String() != "tool: bad; thing\n" {
		t.Fatalf("code %d, %q", c, b.String())
	}
	b.Reset()
	if c := Report(&b, "tool", errors.New("x")); c != 1 || b.String() != "tool: x\n" {
		t.Fatalf("code %d, %q", c, b.String())
	}
	if c := Report(&b, "tool", nil); c != 0 {
		t.Fatalf("nil error: code %d", c)
	}
}

func TestParse(t *testing.T) {
	if l, err := ParseLogLevel("trace"); err != nil || l != slog.LevelDebug {
		t.Fatal(l, err)
	}
	if _, err := ParseLogLevel("loud"); err == nil {
		t.Fatal("an unknown level was accepted")
	}
	for s, want := range map[string]uint64{"0x100000": 1 << 20, "4096": 4096, "0X10": 16} {
		if v, err := ParseNumber("chunk-size", s); err != nil || v != want {
			t.Errorf("ParseNumber(%q) = %d, %v", s, v, err)
		}
	}
	if _, err := ParseNumber("chunk-size", "1M"); err == nil {
		t.Error("ParseNumber accepted 1M")
	}
	for s, want := range map[string]int64{"": 0, "0": 0, "512MiB": 512 << 20, "10GiB": 10 << 30, "1G": 1 << 30, "2G": 2 << 30, "7B": 7, "1048576": 1 << 20} {
		if v, err := ParseByteSize(s); err != nil || v != want {
			t.Errorf("ParseByteSize(%q) = %d, %v", s, v, err)
		}
	}
	for _, s := range []string{"-1", "-1M", "x", "1.5GiB", "GiB", "99999999999TiB"} {
		if _, err := ParseByteSize(s); err == nil {
			t.Errorf("ParseByteSize accepted %q", s)
		}
	}
}
