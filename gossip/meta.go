package gossip

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Meta is the small description of a node that rides on memberlist's alive
// messages: every member sees every other member's Meta, and changes
// propagate with UpdateMeta. The whole encoding must fit in
// memberlist.MetaMaxSize (512 bytes), so keep it to addresses and labels.
type Meta struct {
	// Name is the human name of the hive (e.g. the host name).
	Name string
	// HTTPAddr is the node's API address, "host:port".
	HTTPAddr string
	// HTTPSAddr is the node's TLS API address ("" when it has none).
	HTTPSAddr string
	// P2PAddrs are the node's libp2p multiaddrs.
	P2PAddrs []string
	// Version is the rbee version the node runs.
	Version string
	// BootstrapExpect is the node's --bootstrap-expect (0 = not set).
	BootstrapExpect int
	// Role is a free-form role label (e.g. "voter", "worker-only").
	Role string
	// Tags are extra key/value labels.
	Tags map[string]string
	// RegistryVersion is the newest registry version (fsm.Version) the
	// node's build supports; 0 from builds older than the field (which
	// support version 1).
	RegistryVersion int
	// Cluster names the cluster whose registry the node holds: its CA's
	// fingerprint ("" until the node knows one). A leader does not add a
	// member of another cluster to its raft configuration.
	Cluster string
	// Features is a set of Feature* bits: what the node's build can do
	// that older builds cannot; 0 from builds older than the field.
	Features uint64
}

// Feature bits of Meta.Features. Append-only: a bit keeps its meaning.
const (
	// FeatureRegistryFeed: outside the raft configuration the node
	// follows the registry from a voter's feed (consensus.Member.Replica).
	FeatureRegistryFeed uint64 = 1 << 0
)

// Meta encoding, version 1:
//
//	byte 0     encoding version (metaVersion)
//	then TLV   field tag (1 byte), value length (uvarint), value bytes
//
// Fields are written in tag order and omitted when zero. Strings are UTF-8.
// P2PAddr and Tag repeat; a Tag value is uvarint(len(key)) key value. When
// two or more P2P addresses end in the same "/p2p/<id>" component it is
// written once as P2PSuffix and stripped from each address (host addresses
// of a wildcard listen would otherwise overflow the 512 bytes). A
// decoder skips tags it does not know, so new fields can be added without a
// version bump; the version only changes if the framing itself does.
const (
	metaVersion byte = 1

	tagName            byte = 1
	tagHTTPAddr        byte = 2
	tagP2PAddr         byte = 3
	tagVersion         byte = 4
	tagBootstrapExpect byte = 5
	tagRole            byte = 6
	tagTag             byte = 7
	tagP2PSuffix       byte = 8
	tagHTTPSAddr       byte = 9
	tagRegistryVersion byte = 10
	tagCluster         byte = 11
	tagFeatures        byte = 12

	// p2pComponent starts the libp2p peer-id component of a multiaddr.
	p2pComponent = "/p2p/"

	// maxBootstrapExpect bounds BootstrapExpect: raft clusters have 3 or 5
	// voters; anything past 1000 is a typo or an attack.
	maxBootstrapExpect = 1000
	// maxRegistryVersion bounds RegistryVersion (one per format change:
	// a thousand is centuries away).
	maxRegistryVersion = 1000
)

// EncodeMeta encodes m in the current version. It fails with
// ErrMetaTooLarge when the result exceeds memberlist.MetaMaxSize, and with
// ErrBadConfig for values that cannot be encoded (invalid UTF-8, a
// BootstrapExpect outside 0..1000).
func EncodeMeta(m Meta) ([]byte, error) {
	if m.BootstrapExpect < 0 || m.BootstrapExpect > maxBootstrapExpect {
		return nil, fmt.Errorf("%w: bootstrap expect %d outside 0..%d", ErrBadConfig, m.BootstrapExpect, maxBootstrapExpect)
	}
	if m.RegistryVersion < 0 || m.RegistryVersion > maxRegistryVersion {
		return nil, fmt.Errorf("%w: registry version %d outside 0..%d", ErrBadConfig, m.RegistryVersion, maxRegistryVersion)
	}
	b := make([]byte, 0, 128)
	b = append(b, metaVersion)
	var err error
	str := func(tag byte, field, s string) {
		if s == "" || err != nil {
			return
		}
		if !utf8.ValidString(s) {
			err = fmt.Errorf("%w: %s is not valid UTF-8", ErrBadConfig, field)
			return
		}
		b = appendField(b, tag, []byte(s))
	}
	str(tagName, "name", m.Name)
	str(tagHTTPAddr, "http addr", m.HTTPAddr)
	suffix := commonP2PSuffix(m.P2PAddrs)
	for _, a := range m.P2PAddrs {
		if a == "" {
			return nil, fmt.Errorf("%w: empty p2p address", ErrBadConfig)
		}
		str(tagP2PAddr, "p2p addr", a[:len(a)-len(suffix)])
	}
	str(tagVersion, "version", m.Version)
	if m.BootstrapExpect > 0 {
		b = appendField(b, tagBootstrapExpect, binary.AppendUvarint(nil, uint64(m.BootstrapExpect)))
	}
	str(tagRole, "role", m.Role)
	keys := make([]string, 0, len(m.Tags))
	for k := range m.Tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := m.Tags[k]
		if k == "" {
			return nil, fmt.Errorf("%w: empty tag key", ErrBadConfig)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, fmt.Errorf("%w: tag %q is not valid UTF-8", ErrBadConfig, k)
		}
		val := binary.AppendUvarint(nil, uint64(len(k)))
		val = append(val, k...)
		val = append(val, v...)
		b = appendField(b, tagTag, val)
	}
	str(tagP2PSuffix, "p2p suffix", suffix)
	str(tagHTTPSAddr, "https addr", m.HTTPSAddr)
	if m.RegistryVersion > 0 {
		b = appendField(b, tagRegistryVersion, binary.AppendUvarint(nil, uint64(m.RegistryVersion)))
	}
	str(tagCluster, "cluster", m.Cluster)
	if m.Features != 0 {
		b = appendField(b, tagFeatures, binary.AppendUvarint(nil, m.Features))
	}
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// commonP2PSuffix returns the "/p2p/<id>" component every address ends
// with, if there are at least two addresses, or "".
func commonP2PSuffix(addrs []string) string {
	if len(addrs) < 2 {
		return ""
	}
	i := strings.LastIndex(addrs[0], p2pComponent)
	if i < 0 {
		return ""
	}
	suffix := addrs[0][i:]
	if !validP2PSuffix(suffix) {
		return ""
	}
	for _, a := range addrs {
		if len(a) <= len(suffix) || !strings.HasSuffix(a, suffix) {
			return ""
		}
	}
	return suffix
}

// validP2PSuffix reports whether s is one "/p2p/<id>" component.
func validP2PSuffix(s string) bool {
	id, ok := strings.CutPrefix(s, p2pComponent)
	return ok && id != "" && !strings.Contains(id, "/")
}

func appendField(b []byte, tag byte, val []byte) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(val)))
	return append(b, val...)
}

// DecodeMeta decodes metadata written by EncodeMeta (of this or a later
// build: unknown fields are skipped). It never panics; bad input yields
// ErrMetaVersion or ErrMetaMalformed.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty", ErrMetaMalformed)
	}
	if len(b) > memberlist.MetaMaxSize {
		return m, fmt.Errorf("%w: %d bytes, limit %d", ErrMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	if b[0] != metaVersion {
		return m, fmt.Errorf("%w: %d", ErrMetaVersion, b[0])
	}
	seen := make(map[byte]bool)
	var suffix string
	rest := b[1:]
	for len(rest) > 0 {
		tag := rest[0]
		n, k := binary.Uvarint(rest[1:])
		if k <= 0 || n > uint64(len(rest)-1-k) {
			return Meta{}, fmt.Errorf("%w: field %d: bad length", ErrMetaMalformed, tag)
		}
		val := rest[1+k : 1+k+int(n)]
		rest = rest[1+k+int(n):]
		switch tag {
		case tagName, tagHTTPAddr, tagVersion, tagBootstrapExpect, tagRole, tagP2PSuffix, tagHTTPSAddr, tagRegistryVersion, tagCluster, tagFeatures:
			if seen[tag] {
				return Meta{}, fmt.Errorf("%w: field %d repeated", ErrMetaMalformed, tag)
			}
			seen[tag] = true
		}
		switch tag {
		case 0:
			return Meta{}, fmt.Errorf("%w: field tag 0", ErrMetaMalformed)
		case tagName, tagHTTPAddr, tagP2PAddr, tagVersion, tagRole, tagP2PSuffix, tagHTTPSAddr, tagCluster:
			if len(val) == 0 || !utf8.Valid(val) {
				return Meta{}, fmt.Errorf("%w: field %d: empty or invalid UTF-8 string", ErrMetaMalformed, tag)
			}
			s := string(val)
			switch tag {
			case tagName:
				m.Name = s
			case tagHTTPAddr:
				m.HTTPAddr = s
			case tagHTTPSAddr:
				m.HTTPSAddr = s
			case tagCluster:
				m.Cluster = s
			case tagP2PAddr:
				m.P2PAddrs = append(m.P2PAddrs, s)
			case tagVersion:
				m.Version = s
			case tagRole:
				m.Role = s
			case tagP2PSuffix:
				if !validP2PSuffix(s) {
					return Meta{}, fmt.Errorf("%w: bad p2p suffix %q", ErrMetaMalformed, s)
				}
				suffix = s
			}
		case tagBootstrapExpect:
			v, k := binary.Uvarint(val)
			if k <= 0 || k != len(val) || v == 0 || v > maxBootstrapExpect {
				return Meta{}, fmt.Errorf("%w: bad bootstrap expect", ErrMetaMalformed)
			}
			m.BootstrapExpect = int(v)
		case tagRegistryVersion:
			v, k := binary.Uvarint(val)
			if k <= 0 || k != len(val) || v == 0 || v > maxRegistryVersion {
				return Meta{}, fmt.Errorf("%w: bad registry version", ErrMetaMalformed)
			}
			m.RegistryVersion = int(v)
		case tagFeatures:
			v, k := binary.Uvarint(val)
			if k <= 0 || k != len(val) || v == 0 {
				return Meta{}, fmt.Errorf("%w: bad features", ErrMetaMalformed)
			}
			m.Features = v
		case tagTag:
			kl, k := binary.Uvarint(val)
			if k <= 0 || kl == 0 || kl > uint64(len(val)-k) {
				return Meta{}, fmt.Errorf("%w: bad tag", ErrMetaMalformed)
			}
			key, v := val[k:k+int(kl)], val[k+int(kl):]
			if !utf8.Valid(key) || !utf8.Valid(v) {
				return Meta{}, fmt.Errorf("%w: tag is not valid UTF-8", ErrMetaMalformed)
			}
			if m.Tags == nil {
				m.Tags = make(map[string]string)
			}
			if _, dup := m.Tags[string(key)]; dup {
				return Meta{}, fmt.Errorf("%w: tag %q repeated", ErrMetaMalformed, key)
			}
			m.Tags[string(key)] = string(v)
		default:
			// A field from a newer build: skip it.
		}
	}
	if suffix != "" {
		for i := range m.P2PAddrs {
			m.P2PAddrs[i] += suffix
		}
	}
	return m, nil
}
