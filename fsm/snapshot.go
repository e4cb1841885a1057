package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// Snapshot formats: the 4 magic bytes "RBEE", one format byte, then
//
//   - formats 1-3: one JSON document (snapshotDoc). Format 2 added
//     api_keys, format 3 cluster_ca (and the nodes' https_addr).
//   - format 4 (registry version 2): typed records, as Nomad's snapshots
//     are: each is a type byte, a uvarint length and a JSON body; first a
//     header record, then one record per entity, then an end record (type
//     0, length 0) so a truncated snapshot is caught. A new table is a new
//     record type, not a new format; a reader skips an unknown record type
//     that carries IgnorableFlag and refuses any other.
//
// The writer picks the format from the registry version the cluster agreed
// on (snapshotFormatFor), so a follower running an older build can always
// read what the leader sends it. A reader rejects formats it does not know
// rather than guessing.
const (
	snapshotMagic = "RBEE"
	// SnapshotVersion is the newest format this build reads and writes.
	SnapshotVersion = 4
	// snapshotJSONFormat is the last single-document format, what a
	// registry at version 1 writes.
	snapshotJSONFormat = 3
	// maxSnapshotSize caps what Restore reads. A registry of thousands of
	// nodes and workers is a few MiB; 256 MiB means something is wrong.
	maxSnapshotSize = 256 << 20
	// maxSnapshotRecord caps one record: an entity is at most a few KiB
	// (a node with capabilities), like a command.
	maxSnapshotRecord = MaxCommandSize
)

// Record types of snapshot format 4: append-only, never renumbered.
const (
	recEnd     byte = 0
	recHeader  byte = 1
	recNode    byte = 2
	recWorker  byte = 3
	recModel   byte = 4
	recBinary  byte = 5
	recHost    byte = 6
	recAPIKey  byte = 7
	recCA      byte = 8
	recGroup   byte = 9
	recOnce    byte = 10 // an applied Once envelope (registry version 4)
	recIgnored      = byte(IgnorableFlag)
)

// snapshotHeader is the first record of format 4.
type snapshotHeader struct {
	Index           uint64 `json:"index"`
	RegistryVersion int    `json:"registry_version"`
}

// snapshotFormatFor is the format a snapshot of st is written in by a
// build that supports registry versions up to supports.
func snapshotFormatFor(st *State, supports int) byte {
	if st.RegistryVersion() >= 2 && supports >= 2 {
		return 4
	}
	return snapshotJSONFormat
}

type snapshotDoc struct {
	Index    uint64          `json:"index"`
	Nodes    []Node          `json:"nodes"`
	Workers  []Worker        `json:"workers"`
	Models   []ModelHolding  `json:"models"`
	Binaries []BinaryHolding `json:"binaries"`
	Hosts    []Host          `json:"hosts"`
	APIKeys  []APIKey        `json:"api_keys,omitempty"`
	CA       *ClusterCA      `json:"cluster_ca,omitempty"`
}

type snapshot struct {
	state  *State
	format byte
}

// Persist implements raft.FSMSnapshot. It streams the records to the sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.state, s.format); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *snapshot) Release() {}

// WriteSnapshot writes st in the format its registry version calls for
// (see snapshotFormatFor). Entries are written in key order, so equal
// states produce identical bytes.
func WriteSnapshot(w io.Writer, st *State) error {
	return writeSnapshot(w, st, snapshotFormatFor(st, Version))
}

func writeSnapshot(w io.Writer, st *State, format byte) error {
	bw := bufio.NewWriter(w)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	if err := bw.WriteByte(format); err != nil {
		return err
	}
	if format < 4 {
		doc := snapshotDoc{
			Index:    st.index,
			Nodes:    st.Nodes(),
			Workers:  st.Workers(),
			Models:   st.Models(),
			Binaries: st.Binaries(),
			Hosts:    st.Hosts(),
			APIKeys:  st.APIKeys(),
			CA:       st.ca,
		}
		if err := json.NewEncoder(bw).Encode(&doc); err != nil {
			return fmt.Errorf("fsm: encode snapshot: %w", err)
		}
		return bw.Flush()
	}
	rw := recordWriter{w: bw}
	rw.put(recHeader, snapshotHeader{Index: st.index, RegistryVersion: st.RegistryVersion()})
	for _, n := range st.Nodes() {
		rw.put(recNode, n)
	}
	for _, x := range st.Workers() {
		rw.put(recWorker, x)
	}
	for _, m := range st.Models() {
		rw.put(recModel, m)
	}
	for _, b := range st.Binaries() {
		rw.put(recBinary, b)
	}
	for _, h := range st.Hosts() {
		rw.put(recHost, h)
	}
	for _, k := range st.APIKeys() {
		rw.put(recAPIKey, k)
	}
	if st.ca != nil {
		rw.put(recCA, st.ca)
	}
	for _, g := range st.Groups() {
		rw.put(recGroup, g)
	}
	for _, r := range st.once {
		rw.put(recOnce, r.toJSON())
	}
	rw.end()
	if rw.err != nil {
		return rw.err
	}
	return bw.Flush()
}

// recordWriter writes format-4 records; the first error sticks.
type recordWriter struct {
	w   *bufio.Writer
	buf []byte
	err error
}

func (r *recordWriter) put(typ byte, v any) {
	if r.err != nil {
		return
	}
	body, err := json.Marshal(v)
	if err != nil {
		r.err = fmt.Errorf("fsm: encode snapshot record %d: %w", typ, err)
		return
	}
	r.frame(typ, body)
}

func (r *recordWriter) end() { r.frame(recEnd, nil) }

func (r *recordWriter) frame(typ byte, body []byte) {
	if r.err != nil {
		return
	}
	r.buf = append(r.buf[:0], typ)
	r.buf = binary.AppendUvarint(r.buf, uint64(len(body)))
	if _, err := r.w.Write(r.buf); err != nil {
		r.err = err
		return
	}
	_, r.err = r.w.Write(body)
}

// ReadSnapshot decodes a snapshot written by WriteSnapshot (any format up
// to SnapshotVersion) into a new State. It validates every entry and
// rejects duplicates, trailing data and unknown formats.
func ReadSnapshot(r io.Reader) (*State, error) { return readSnapshot(r, Version) }

// readSnapshot is ReadSnapshot for a build that supports registry versions
// up to supports (format 4 needs 2).
func readSnapshot(r io.Reader, supports int) (*State, error) {
	br := bufio.NewReader(io.LimitReader(r, maxSnapshotSize+1))
	hdr := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return nil, fmt.Errorf("%w: snapshot header: %v", ErrMalformed, err)
	}
	if !bytes.Equal(hdr[:len(snapshotMagic)], []byte(snapshotMagic)) {
		return nil, fmt.Errorf("%w: snapshot magic %q", ErrMalformed, hdr[:len(snapshotMagic)])
	}
	version := hdr[len(snapshotMagic)]
	newest := byte(snapshotJSONFormat)
	if supports >= 2 {
		newest = SnapshotVersion
	}
	if version < 1 || version > newest {
		return nil, fmt.Errorf("%w: version %d, this build reads 1 to %d", ErrSnapshotVersion, version, newest)
	}
	if version >= 4 {
		return readRecords(br)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot read: %v", ErrMalformed, err)
	}
	if len(body) > maxSnapshotSize {
		return nil, fmt.Errorf("%w: snapshot larger than %d bytes", ErrMalformed, maxSnapshotSize)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var doc snapshotDoc
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: snapshot body: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: snapshot body: trailing data", ErrMalformed)
	}
	if version < 2 && len(doc.APIKeys) > 0 {
		return nil, fmt.Errorf("%w: a version 1 snapshot with api_keys", ErrMalformed)
	}
	if doc.CA != nil && version < 3 {
		return nil, fmt.Errorf("%w: a version %d snapshot with a cluster_ca", ErrMalformed, version)
	}
	ld := loader{st: emptyState()}
	ld.st.index, ld.st.nodesAt = doc.Index, doc.Index
	for _, n := range doc.Nodes {
		ld.node(n)
	}
	for _, w := range doc.Workers {
		ld.worker(w)
	}
	for _, m := range doc.Models {
		ld.model(m)
	}
	for _, b := range doc.Binaries {
		ld.binary(b)
	}
	for _, h := range doc.Hosts {
		ld.host(h)
	}
	for _, k := range doc.APIKeys {
		ld.apiKey(k)
	}
	if doc.CA != nil {
		ld.ca(*doc.CA)
	}
	if ld.err != nil {
		return nil, ld.err
	}
	return ld.st, nil
}

// readRecords reads the records of format 4 after the format byte.
func readRecords(br *bufio.Reader) (*State, error) {
	ld := loader{st: emptyState()}
	first := true
	var body []byte
	for {
		typ, err := br.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: snapshot truncated (no end record): %v", ErrMalformed, err)
		}
		n, err := binary.ReadUvarint(br)
		if err != nil || n > maxSnapshotRecord {
			return nil, fmt.Errorf("%w: snapshot record %d: bad length", ErrMalformed, typ)
		}
		if cap(body) < int(n) {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(br, body); err != nil {
			return nil, fmt.Errorf("%w: snapshot record %d: %v", ErrMalformed, typ, err)
		}
		if first != (typ == recHeader) {
			return nil, fmt.Errorf("%w: snapshot record %d: the header must come first, once", ErrMalformed, typ)
		}
		first = false
		switch typ {
		case recEnd:
			if n != 0 {
				return nil, fmt.Errorf("%w: snapshot end record with a body", ErrMalformed)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				return nil, fmt.Errorf("%w: snapshot: trailing data", ErrMalformed)
			}
			if ld.err != nil {
				return nil, ld.err
			}
			return ld.st, nil
		case recHeader:
			var h snapshotHeader
			if ld.decode(typ, body, &h) {
				if h.RegistryVersion < 1 || h.RegistryVersion > Version {
					return nil, fmt.Errorf("%w: snapshot of registry version %d, this build supports 1 to %d", ErrSnapshotVersion, h.RegistryVersion, Version)
				}
				ld.st.index, ld.st.version = h.Index, h.RegistryVersion
			}
		case recNode:
			var v Node
			if ld.decode(typ, body, &v) {
				ld.node(v)
			}
		case recWorker:
			var v Worker
			if ld.decode(typ, body, &v) {
				ld.worker(v)
			}
		case recModel:
			var v ModelHolding
			if ld.decode(typ, body, &v) {
				ld.model(v)
			}
		case recBinary:
			var v BinaryHolding
			if ld.decode(typ, body, &v) {
				ld.binary(v)
			}
		case recHost:
			var v Host
			if ld.decode(typ, body, &v) {
				ld.host(v)
			}
		case recAPIKey:
			var v APIKey
			if ld.decode(typ, body, &v) {
				ld.apiKey(v)
			}
		case recCA:
			var v ClusterCA
			if ld.decode(typ, body, &v) {
				ld.ca(v)
			}
		case recGroup:
			var v Group
			if ld.decode(typ, body, &v) {
				ld.group(v)
			}
		case recOnce:
			var v onceJSON
			if ld.decode(typ, body, &v) {
				ld.once(v)
			}
		default:
			if typ&recIgnored == 0 {
				return nil, fmt.Errorf("%w: snapshot record type %d is unknown to this build (written by a newer one)", ErrSnapshotVersion, typ)
			}
		}
		if ld.err != nil {
			return nil, ld.err
		}
	}
}

// loader validates entities and adds them to a new state; the first error
// sticks.
type loader struct {
	st  *State
	err error
	// onceIDs are the request ids of the once records read so far.
	onceIDs map[OnceID]struct{}
}

func (l *loader) decode(typ byte, body []byte, v any) bool {
	if l.err != nil {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		l.err = fmt.Errorf("%w: snapshot record %d: %v", ErrMalformed, typ, err)
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		l.err = fmt.Errorf("%w: snapshot record %d: trailing data", ErrMalformed, typ)
		return false
	}
	return true
}

func (l *loader) node(n Node) {
	if l.err != nil {
		return
	}
	if err := n.validate(); err != nil {
		l.err = fmt.Errorf("snapshot node: %w", err)
		return
	}
	if n.Capabilities != nil {
		if err := n.Capabilities.validate(); err != nil {
			l.err = fmt.Errorf("snapshot node %q: %w", n.ID, err)
			return
		}
	}
	if _, dup := l.st.nodes[n.ID]; dup {
		l.err = fmt.Errorf("%w: snapshot has node %q twice", ErrMalformed, n.ID)
		return
	}
	n.normalize()
	l.st.nodes[n.ID] = &n
}

func (l *loader) worker(w Worker) {
	if l.err != nil {
		return
	}
	if err := w.validate(); err != nil {
		l.err = fmt.Errorf("snapshot worker: %w", err)
		return
	}
	if _, dup := l.st.workers[w.ID]; dup {
		l.err = fmt.Errorf("%w: snapshot has worker %q twice", ErrMalformed, w.ID)
		return
	}
	w.normalize()
	l.st.workers[w.ID] = &w
}

func (l *loader) model(m ModelHolding) {
	if l.err != nil {
		return
	}
	if err := m.validate(); err != nil {
		l.err = fmt.Errorf("snapshot model holding: %w", err)
		return
	}
	if _, dup := l.st.models[m.Key()]; dup {
		l.err = fmt.Errorf("%w: snapshot has model holding %q/%q twice", ErrMalformed, m.NodeID, m.ModelID)
		return
	}
	m.UpdatedAt = m.UpdatedAt.UTC()
	l.st.models[m.Key()] = &m
}

func (l *loader) binary(b BinaryHolding) {
	if l.err != nil {
		return
	}
	if err := b.validate(); err != nil {
		l.err = fmt.Errorf("snapshot binary holding: %w", err)
		return
	}
	if _, dup := l.st.binaries[b.Key()]; dup {
		l.err = fmt.Errorf("%w: snapshot has a binary holding twice", ErrMalformed)
		return
	}
	b.UpdatedAt = b.UpdatedAt.UTC()
	l.st.binaries[b.Key()] = &b
}

func (l *loader) host(h Host) {
	if l.err != nil {
		return
	}
	if err := h.validate(); err != nil {
		l.err = fmt.Errorf("snapshot host: %w", err)
		return
	}
	if _, dup := l.st.hosts[h.Name]; dup {
		l.err = fmt.Errorf("%w: snapshot has host %q twice", ErrMalformed, h.Name)
		return
	}
	h.UpdatedAt = h.UpdatedAt.UTC()
	l.st.hosts[h.Name] = &h
}

func (l *loader) apiKey(k APIKey) {
	if l.err != nil {
		return
	}
	if err := k.validate(); err != nil {
		l.err = fmt.Errorf("snapshot api key: %w", err)
		return
	}
	if _, dup := l.st.apiKeys[k.Name]; dup {
		l.err = fmt.Errorf("%w: snapshot has api key %q twice", ErrMalformed, k.Name)
		return
	}
	k.Created = k.Created.UTC()
	l.st.apiKeys[k.Name] = &k
}

func (l *loader) ca(ca ClusterCA) {
	if l.err != nil {
		return
	}
	if l.st.ca != nil {
		l.err = fmt.Errorf("%w: snapshot has two cluster CAs", ErrMalformed)
		return
	}
	if err := ca.validate(); err != nil {
		l.err = fmt.Errorf("snapshot cluster CA: %w", err)
		return
	}
	ca.Created = ca.Created.UTC()
	l.st.ca = &ca
}
