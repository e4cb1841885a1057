package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// appliedHintFile holds the index and term of the newest registry entry
// this server applied, written after every apply without an fsync (see
// appliedHint).
const appliedHintFile = "applied-hint"

// appliedHint records the last applied entry in a small file with one
// pwrite per apply and no fsync. The stable store's applied index is an
// fsync (a bolt commit) and so is written at most every persistInterval
// (5 s): every node is a raft server and stores every entry, and at
// 100 nodes an fsync per entry per node took the shared disk. The hint
// covers what that leaves out: a process killed right after a change
// (kill -9, a crash; not a power loss, which may lose the page cache)
// still finds the change at restart and replays it at once, rather than
// waiting for a leader. It is only a hint: replayLocal uses it when it is
// whole (a CRC) and names an entry this server's log holds with the same
// term, which raft's log matching makes the same committed entry.
//
// write is called from raft's FSM goroutine only.
type appliedHint struct {
	f   *os.File
	buf [hintSize]byte
}

// hintSize: index and term (8 bytes each) and a CRC-32C of both. One
// write of 20 bytes at offset 0 replaces the previous record whole for
// every reader after a process crash.
const hintSize = 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func openAppliedHint(dir string) (*appliedHint, error) {
	f, err := os.OpenFile(filepath.Join(dir, appliedHintFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("consensus: open applied hint: %w", err)
	}
	return &appliedHint{f: f}, nil
}

// write records index and term; a failure only makes the hint older.
func (h *appliedHint) write(index, term uint64) error {
	binary.LittleEndian.PutUint64(h.buf[0:], index)
	binary.LittleEndian.PutUint64(h.buf[8:], term)
	binary.LittleEndian.PutUint32(h.buf[16:], crc32.Checksum(h.buf[:16], castagnoli))
	_, err := h.f.WriteAt(h.buf[:], 0)
	return err
}

// reset empties the hint (no entry applied yet).
func (h *appliedHint) reset() error {
	if err := h.f.Truncate(0); err != nil {
		return fmt.Errorf("consensus: reset applied hint: %w", err)
	}
	return nil
}

func (h *appliedHint) Close() error { return h.f.Close() }

// errNoHint: the hint file is empty, short or damaged.
var errNoHint = errors.New("consensus: no valid applied hint")

// read returns the index and term the hint holds.
func (h *appliedHint) read() (index, term uint64, err error) {
	var b [hintSize]byte
	if _, err := h.f.ReadAt(b[:], 0); err != nil {
		return 0, 0, errNoHint
	}
	if crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:]) {
		return 0, 0, errNoHint
	}
	return binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint64(b[8:]), nil
}
