package fusefs

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The open journal: how the kernel has each node open, kept in a file
// (Options.Journal) so that the process that takes the connection over
// opens each node the same way. The kernel refuses (EIO) an open whose
// I/O mode conflicts with the node's opens still in place: a cached open
// while a passthrough one exists, and a passthrough open with another
// backing file than the one in use. After a takeover the predecessor's
// opens are still there, but only the journal knows them.
//
// Records are lines, appended before the open is answered (so an open
// the kernel accepted is always recorded; a crash loses nothing, the
// page cache keeps what was written):
//
//	P <node> <backing id>   the node's first passthrough open, with its backing file
//	p <node>                its last passthrough open was released, the backing file closed
//	C <node>                the node's first cached open
//	c <node>                its last cached open was released
//
// What the predecessor had open is inherited: its backing files are
// reused for the node's passthrough opens and never closed here (the
// predecessor's releases cannot be told from this process's), and a node
// it had open cached is only opened cached. A successor's journal starts
// with the inherited state, so it stays bounded by the nodes open.

// inherited is how a predecessor had a node open.
type inherited struct {
	backing int32 // its backing file's id (0: no passthrough open)
	cached  bool  // it had cached opens
}

// maxJournalRecord bounds a record line when reading a journal.
const maxJournalRecord = 64

// readJournal replays a journal into the open state it describes.
func readJournal(path string) (map[uint64]inherited, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return map[uint64]inherited{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[uint64]inherited{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, maxJournalRecord), maxJournalRecord)
	line := 0
	for sc.Scan() {
		line++
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			return nil, fmt.Errorf("%s: line %d: %q is not a record", path, line, sc.Text())
		}
		node, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: line %d: node %q: %w", path, line, fields[1], err)
		}
		st := out[node]
		switch {
		case fields[0] == "P" && len(fields) == 3:
			id, err := strconv.ParseInt(fields[2], 10, 32)
			if err != nil || id <= 0 {
				return nil, fmt.Errorf("%s: line %d: backing id %q", path, line, fields[2])
			}
			st.backing = int32(id)
		case fields[0] == "p" && len(fields) == 2:
			st.backing = 0
		case fields[0] == "C" && len(fields) == 2:
			st.cached = true
		case fields[0] == "c" && len(fields) == 2:
			st.cached = false
		default:
			return nil, fmt.Errorf("%s: line %d: %q is not a record", path, line, sc.Text())
		}
		if st == (inherited{}) {
			delete(out, node)
		} else {
			out[node] = st
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: line %d: %w", path, line+1, err)
	}
	return out, nil
}

// openJournal starts a journal at path holding state (a fresh mount:
// none), replacing what was there, and returns it open for appending.
func openJournal(path string, state map[uint64]inherited) (*os.File, error) {
	var b strings.Builder
	for node, st := range state {
		if st.backing != 0 {
			fmt.Fprintf(&b, "P %d %d\n", node, st.backing)
		}
		if st.cached {
			fmt.Fprintf(&b, "C %d\n", node)
		}
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
}

// record appends a journal record; s.mu is held. A failed write is
// logged: a later takeover may then open that node in a conflicting
// mode (EIO for its reads), nothing worse.
func (s *FileSystem) record(format string, args ...any) {
	if s.journal == nil {
		return
	}
	if _, err := fmt.Fprintf(s.journal, format, args...); err != nil {
		s.o.Log.Error("writing the open journal", "journal", s.journal.Name(), "err", err)
	}
}
