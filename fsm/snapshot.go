package fsm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// Snapshot format: the 4 magic bytes "RBEE", one version byte, then one
// JSON document (snapshotDoc). The version changes whenever the document's
// meaning changes; a reader rejects versions it does not know rather than
// guessing.
const (
	snapshotMagic = "RBEE"
	// SnapshotVersion 2 added api_keys, version 3 cluster_ca (and the
	// nodes' https_addr). Versions 1 and 2 are still read; a build that
	// knows only an older version refuses a newer snapshot instead of
	// silently dropping what it does not know.
	SnapshotVersion = 3
	// maxSnapshotSize caps what Restore reads. A registry of thousands of
	// nodes and workers is a few MiB; 256 MiB means something is wrong.
	maxSnapshotSize = 256 << 20
)

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
	state *State
}

// Persist implements raft.FSMSnapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := WriteSnapshot(sink, s.state); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *snapshot) Release() {}

// WriteSnapshot writes st in the versioned snapshot format. Entries are
// written in key order, so equal states produce identical bytes.
func WriteSnapshot(w io.Writer, st *State) error {
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
	bw := bufio.NewWriter(w)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	if err := bw.WriteByte(SnapshotVersion); err != nil {
		return err
	}
	if err := json.NewEncoder(bw).Encode(&doc); err != nil {
		return fmt.Errorf("fsm: encode snapshot: %w", err)
	}
	return bw.Flush()
}

// ReadSnapshot decodes a snapshot written by WriteSnapshot into a new
// State. It validates every entry and rejects duplicates, trailing data and
// unknown versions.
func ReadSnapshot(r io.Reader) (*State, error) {
	br := bufio.NewReader(io.LimitReader(r, maxSnapshotSize+1))
	hdr := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return nil, fmt.Errorf("%w: snapshot header: %v", ErrMalformed, err)
	}
	if !bytes.Equal(hdr[:len(snapshotMagic)], []byte(snapshotMagic)) {
		return nil, fmt.Errorf("%w: snapshot magic %q", ErrMalformed, hdr[:len(snapshotMagic)])
	}
	version := hdr[len(snapshotMagic)]
	if version < 1 || version > SnapshotVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads 1 to %d", ErrSnapshotVersion, version, SnapshotVersion)
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
	st := emptyState()
	st.index = doc.Index
	for _, n := range doc.Nodes {
		if err := n.validate(); err != nil {
			return nil, fmt.Errorf("snapshot node: %w", err)
		}
		if n.Capabilities != nil {
			if err := n.Capabilities.validate(); err != nil {
				return nil, fmt.Errorf("snapshot node %q: %w", n.ID, err)
			}
		}
		if _, dup := st.nodes[n.ID]; dup {
			return nil, fmt.Errorf("%w: snapshot has node %q twice", ErrMalformed, n.ID)
		}
		n.normalize()
		st.nodes[n.ID] = &n
	}
	for _, w := range doc.Workers {
		if err := w.validate(); err != nil {
			return nil, fmt.Errorf("snapshot worker: %w", err)
		}
		if _, dup := st.workers[w.ID]; dup {
			return nil, fmt.Errorf("%w: snapshot has worker %q twice", ErrMalformed, w.ID)
		}
		w.normalize()
		st.workers[w.ID] = &w
	}
	for _, m := range doc.Models {
		if err := m.validate(); err != nil {
			return nil, fmt.Errorf("snapshot model holding: %w", err)
		}
		if _, dup := st.models[m.Key()]; dup {
			return nil, fmt.Errorf("%w: snapshot has model holding %q/%q twice", ErrMalformed, m.NodeID, m.ModelID)
		}
		m.UpdatedAt = m.UpdatedAt.UTC()
		st.models[m.Key()] = &m
	}
	for _, b := range doc.Binaries {
		if err := b.validate(); err != nil {
			return nil, fmt.Errorf("snapshot binary holding: %w", err)
		}
		if _, dup := st.binaries[b.Key()]; dup {
			return nil, fmt.Errorf("%w: snapshot has a binary holding twice", ErrMalformed)
		}
		b.UpdatedAt = b.UpdatedAt.UTC()
		st.binaries[b.Key()] = &b
	}
	for _, h := range doc.Hosts {
		if err := h.validate(); err != nil {
			return nil, fmt.Errorf("snapshot host: %w", err)
		}
		if _, dup := st.hosts[h.Name]; dup {
			return nil, fmt.Errorf("%w: snapshot has host %q twice", ErrMalformed, h.Name)
		}
		h.UpdatedAt = h.UpdatedAt.UTC()
		st.hosts[h.Name] = &h
	}
	if version < 2 && len(doc.APIKeys) > 0 {
		return nil, fmt.Errorf("%w: a version 1 snapshot with api_keys", ErrMalformed)
	}
	for _, k := range doc.APIKeys {
		if err := k.validate(); err != nil {
			return nil, fmt.Errorf("snapshot api key: %w", err)
		}
		if _, dup := st.apiKeys[k.Name]; dup {
			return nil, fmt.Errorf("%w: snapshot has api key %q twice", ErrMalformed, k.Name)
		}
		k.Created = k.Created.UTC()
		st.apiKeys[k.Name] = &k
	}
	if doc.CA != nil {
		if version < 3 {
			return nil, fmt.Errorf("%w: a version %d snapshot with a cluster_ca", ErrMalformed, version)
		}
		if err := doc.CA.validate(); err != nil {
			return nil, fmt.Errorf("snapshot cluster CA: %w", err)
		}
		ca := *doc.CA
		ca.Created = ca.Created.UTC()
		st.ca = &ca
	}
	return st, nil
}
