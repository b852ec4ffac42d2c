// Package cliutil holds what the commands under cmd/ share: exit codes,
// one-line error reports, log levels and size flags, so that nydusd,
// nydus-image and nydusify read and report them the same way.
package cliutil

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

// ExitError is an error with the exit code the command ends with.
type ExitError struct {
	Code int
	Err  error
}

// Error returns the wrapped error's message.
func (e *ExitError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *ExitError) Unwrap() error { return e.Err }

// Exit returns err carrying exit code code.
func Exit(code int, err error) error { return &ExitError{Code: code, Err: err} }

// OneLine folds an error message onto one line.
func OneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

// Report prints a command's failure as "prog: message" on one line to w
// and returns the exit code: an ExitError's, else 1. A nil err returns 0.
func Report(w io.Writer, prog string, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(w, "%s: %s\n", prog, OneLine(err))
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

// ParseLogLevel parses upstream's log levels: trace (as debug), debug,
// info (or ""), warn (or warning) and error.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "trace", "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("invalid --log-level %q (want trace, debug, info, warn or error)", s)
}

// NewLogger returns a text logger writing to w at the level s names.
func NewLogger(s string, w io.Writer) (*slog.Logger, error) {
	lvl, err := ParseLogLevel(s)
	if err != nil {
		return nil, err
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}

// ParseNumber parses the value of --flag, a decimal or 0x-prefixed
// hexadecimal number, as upstream's size flags (--chunk-size 0x100000).
func ParseNumber(flag, s string) (uint64, error) {
	var v uint64
	var err error
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		v, err = strconv.ParseUint(s[2:], 16, 64)
	} else {
		v, err = strconv.ParseUint(s, 10, 64)
	}
	if err != nil {
		return 0, fmt.Errorf("invalid --%s %q: not a decimal or 0x-prefixed hex number", flag, s)
	}
	return v, nil
}

// ParseByteSize parses a byte size such as 512MiB, 10GiB, 1G or 1048576
// ("" means 0). K, M, G and T are binary multiples, as KiB, MiB, GiB and
// TiB.
func ParseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}}
	num, mult := s, int64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSuffix(num, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > (1<<63-1)/mult {
		return 0, fmt.Errorf("invalid size %q (want e.g. 512MiB or 10GiB)", s)
	}
	return n * mult, nil
}
