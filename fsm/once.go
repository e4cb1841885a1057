package fsm

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Exactly-once writes (registry version 4).
//
// A proposer whose request reached a leader that died before answering
// cannot tell whether the command committed, and retries it. Without more,
// the retry applies the command a second time, after whatever other writes
// committed in between: a reader could see x=1, then x=2 (another writer),
// then x=1 again, which no order of the three writes explains; a
// create-if-absent would answer "conflict" for a create that succeeded.
//
// So a proposer wraps each command in a Once envelope with a random request
// id, and sends every attempt of that request with the same id. The
// registry remembers, for each envelope it applied, the id and the Result;
// an envelope whose id it remembers is not applied again and returns the
// first Result. Rejected commands are not remembered: they changed nothing,
// so applying a retry is as if the first attempt never happened.
//
// Memory is bounded without clocks: an envelope also carries Base, a log
// index the proposer had seen applied before its first attempt, so every
// attempt of the request lands at an index above Base. A record may be
// dropped once the log is OnceWindow indexes past it (the next envelope
// applied drops what is that old), and an envelope whose index
// is more than OnceWindow past its Base is refused with ErrExpired unless
// its record is still there: whenever a record could have been dropped, the
// registry says it cannot tell, rather than applying twice. A proposer that
// knows none of its attempts could have been applied (every one was
// refused) may retry with a newer Base.
const (
	// TypeOnce is the envelope's command type.
	TypeOnce CommandType = 20
	// OnceVersion is the registry version that introduced TypeOnce.
	OnceVersion = 4
	// OnceIDSize is the size of a request id: 128 random bits, so that the
	// ids of distinct requests never collide.
	OnceIDSize = 16
	// OnceWindow is how many log indexes a record outlives its entry. A
	// retry comes within seconds (a new leader's election and a backoff);
	// 8192 indexes is minutes of writes even for a hundred busy nodes,
	// and at most 8192 records of 32 bytes are live (256 KiB, up to about
	// twice that with the array's spare and dropped room).
	OnceWindow = 8192
	// onceHeaderSize is the type byte, the id and Base.
	onceHeaderSize = 1 + OnceIDSize + 8
)

// ErrExpired: a Once envelope arrived more than OnceWindow log indexes
// after its Base and its record, if there ever was one, may be gone: the
// registry cannot tell whether an earlier attempt was applied, so it
// applies nothing.
var ErrExpired = errors.New("fsm: request too old to tell whether it was applied")

// OnceID identifies one request across its attempts.
type OnceID [OnceIDSize]byte

// String returns the id in hex.
func (id OnceID) String() string { return hex.EncodeToString(id[:]) }

// EncodeOnce wraps an encoded command (Encode) in an envelope with request
// id and Base base. Its layout is the type byte TypeOnce, the 16-byte id,
// base as 8 bytes big-endian, then the command unchanged. An envelope
// cannot hold another envelope.
func EncodeOnce(id OnceID, base uint64, cmd []byte) ([]byte, error) {
	if len(cmd) == 0 || len(cmd) > MaxCommandSize {
		return nil, fmt.Errorf("%w: command of %d bytes in an envelope", ErrInvalid, len(cmd))
	}
	if CommandType(cmd[0]) == TypeOnce {
		return nil, fmt.Errorf("%w: an envelope inside an envelope", ErrInvalid)
	}
	out := make([]byte, onceHeaderSize+len(cmd))
	out[0] = byte(TypeOnce)
	copy(out[1:], id[:])
	binary.BigEndian.PutUint64(out[1+OnceIDSize:], base)
	copy(out[onceHeaderSize:], cmd)
	return out, nil
}

// DecodeOnce splits an envelope into its id, Base and command, which it
// decodes (Decode) to check it.
func DecodeOnce(b []byte) (id OnceID, base uint64, cmd []byte, err error) {
	if len(b) < onceHeaderSize+1 || CommandType(b[0]) != TypeOnce {
		return id, 0, nil, fmt.Errorf("%w: not an envelope (%d bytes)", ErrMalformed, len(b))
	}
	copy(id[:], b[1:])
	base = binary.BigEndian.Uint64(b[1+OnceIDSize:])
	cmd = b[onceHeaderSize:]
	if CommandType(cmd[0]) == TypeOnce {
		return id, 0, nil, fmt.Errorf("%w: an envelope inside an envelope", ErrMalformed)
	}
	if _, err := Decode(cmd); err != nil {
		return id, 0, nil, err
	}
	return id, base, cmd, nil
}

// onceRecord is what the registry remembers of an applied envelope.
type onceRecord struct {
	id      OnceID
	index   uint64
	typ     CommandType
	changed bool
}

// onceRecords are a State's records in index order. States share one
// backing array: a new state appends after the last record of the current
// one (where no older state looks) and drops records from the front by
// reslicing, so adding a record costs O(1) and a captured snapshot stays
// unchanged. This holds only while every new State derives from the
// FSM's current one (applyOnce); two States derived from one base would
// write the same slot.
type onceRecords []onceRecord

// lookup finds the record of id, newest first (a retry is recent): at
// most OnceWindow comparisons of 16 bytes, microseconds.
func (r onceRecords) lookup(id OnceID) (onceRecord, bool) {
	for i := len(r) - 1; i >= 0; i-- {
		if r[i].id == id {
			return r[i], true
		}
	}
	return onceRecord{}, false
}

// add returns the records with rec appended and those OnceWindow or more
// indexes older than rec dropped.
func (r onceRecords) add(rec onceRecord) onceRecords {
	drop := 0
	for drop < len(r) && rec.index-r[drop].index >= OnceWindow {
		drop++
	}
	r = r[drop:]
	if len(r) == 0 {
		// Nothing older is kept: start a fresh array rather than pin the
		// old one.
		return onceRecords{rec}
	}
	return append(r, rec)
}

// applyOnce applies an envelope at index: the stored Result of its id, or
// its command applied and remembered.
func (f *FSM) applyOnce(index uint64, data []byte) (Result, error) {
	id, base, cmd, err := DecodeOnce(data)
	if err != nil {
		return Result{}, err
	}
	if t := CommandType(cmd[0]); Since(t) == 0 || Since(t) > f.supports {
		return f.unknown(index, t)
	}
	base0 := f.State()
	if v := base0.RegistryVersion(); v < OnceVersion {
		// No proposer writes one below the version: an older replica
		// restored from this state's snapshot would not know the records.
		return Result{}, fmt.Errorf("%w: an envelope at registry version %d", ErrNeedsVersion, v)
	}
	if rec, ok := base0.once.lookup(id); ok {
		return Result{Index: rec.index, Type: rec.typ, Changed: rec.changed}, nil
	}
	if base >= index {
		// A proposer's Base is an index it saw applied: below any entry.
		return Result{}, fmt.Errorf("%w: request %s with base index %d at index %d", ErrInvalid, id, base, index)
	}
	if index-base > OnceWindow {
		return Result{}, fmt.Errorf("%w: request %s with base index %d arrived at index %d, more than %d later", ErrExpired, id, base, index, OnceWindow)
	}
	a, err := apply(base0, index, cmd)
	if err != nil {
		return Result{}, err
	}
	a.next.once = base0.once.add(onceRecord{id: id, index: index, typ: a.res.Type, changed: a.res.Changed})
	f.commit(a)
	return a.res, nil
}

// OnceRecords is how many envelope records the state keeps (for tests and
// metrics).
func (s *State) OnceRecords() int { return len(s.once) }

// onceJSON is a record of snapshot format 4 (recOnce).
type onceJSON struct {
	ID      string      `json:"id"`
	Index   uint64      `json:"index"`
	Type    CommandType `json:"type"`
	Changed bool        `json:"changed,omitempty"`
}

func (r onceRecord) toJSON() onceJSON {
	return onceJSON{ID: r.id.String(), Index: r.index, Type: r.typ, Changed: r.changed}
}

// once adds a snapshot record; records come in increasing index order, at
// or below the snapshot's index.
func (l *loader) once(v onceJSON) {
	if l.err != nil {
		return
	}
	var rec onceRecord
	b, err := hex.DecodeString(v.ID)
	switch {
	case err != nil || len(b) != OnceIDSize:
		err = fmt.Errorf("id %q", v.ID)
	case l.st.regVersion() < OnceVersion:
		err = fmt.Errorf("in a snapshot of registry version %d", l.st.regVersion())
	case v.Type == 0 || v.Type == TypeOnce:
		// Any other type: a newer build's ignorable command is recorded
		// too, and the type is only echoed back.
		err = fmt.Errorf("type %d", v.Type)
	case v.Index == 0 || v.Index > l.st.index:
		err = fmt.Errorf("index %d (snapshot at %d)", v.Index, l.st.index)
	case len(l.st.once) > 0 && v.Index <= l.st.once[len(l.st.once)-1].index:
		err = fmt.Errorf("index %d out of order", v.Index)
	case len(l.st.once) >= OnceWindow:
		err = fmt.Errorf("more than %d records", OnceWindow)
	}
	copy(rec.id[:], b)
	if _, dup := l.onceIDs[rec.id]; dup && err == nil {
		err = fmt.Errorf("request %s twice", rec.id)
	}
	if err != nil {
		l.err = fmt.Errorf("%w: snapshot request record: %v", ErrMalformed, err)
		return
	}
	if l.onceIDs == nil {
		l.onceIDs = map[OnceID]struct{}{}
	}
	l.onceIDs[rec.id] = struct{}{}
	rec.index, rec.typ, rec.changed = v.Index, v.Type, v.Changed
	l.st.once = append(l.st.once, rec)
}
