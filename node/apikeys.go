package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node/jobs"
)

// API keys are the clients' credentials: created by an admin, replicated
// in the registry as a sha256 (never the key), checked by every node, and
// revoked everywhere by one Raft entry. The registry is the only place a
// key lives besides the client; "last used" is this node's own memory (it
// changes on every request, so it never goes through Raft).

// apiKeyPrefix starts every API key: a scanner or a log filter can tell a
// key from other tokens (the cluster secret is "rbee_", the local admin
// key "rbeeadm_").
const apiKeyPrefix = "rbk_"

// maxAPIKeyLen bounds a presented credential before it is hashed.
const maxAPIKeyLen = 256

// NewAPIKey returns a new random key (32 random bytes) and its registry hash.
func NewAPIKey() (key, hash string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	key = apiKeyPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	return key, HashAPIKey(key)
}

// HashAPIKey is what the registry stores of key: lower-case hex sha256.
func HashAPIKey(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// ParseAPIKey checks the shape of a presented key without looking it up:
// the prefix, the length and the alphabet. It never echoes the key.
func ParseAPIKey(tok string) error {
	if len(tok) > maxAPIKeyLen {
		return errors.New("api key too long")
	}
	rest, ok := strings.CutPrefix(tok, apiKeyPrefix)
	if !ok {
		return errors.New("not an api key (they start with " + apiKeyPrefix + ")")
	}
	if len(rest) == 0 || strings.Trim(rest, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		return errors.New("api key has characters outside its alphabet")
	}
	return nil
}

// lookupAPIKey finds the registry entry of a presented key.
func (n *Node) lookupAPIKey(tok string) (fsm.APIKey, bool) {
	if ParseAPIKey(tok) != nil {
		return fsm.APIKey{}, false
	}
	h := []byte(HashAPIKey(tok))
	for _, k := range n.reg.APIKeys() {
		if subtle.ConstantTimeCompare(h, []byte(k.Hash)) == 1 {
			return k, true
		}
	}
	return fsm.APIKey{}, false
}

// scopePerms maps a key's scope to permissions.
func scopePerms(scope string) perm {
	switch scope {
	case fsm.ScopeAdmin:
		return permAdmin | permRead | permInference
	case fsm.ScopeRead:
		return permRead
	case fsm.ScopeInference:
		return permInference
	}
	return 0
}

// keyUse remembers when this node last accepted each key.
type keyUse struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (u *keyUse) touch(name string, at time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.last == nil {
		u.last = map[string]time.Time{}
	}
	u.last[name] = at
}

// snapshot returns the last uses as unix seconds, nil when none.
func (u *keyUse) snapshot() map[string]int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.last) == 0 {
		return nil
	}
	out := make(map[string]int64, len(u.last))
	for k, v := range u.last {
		out[k] = v.Unix()
	}
	return out
}

func (u *keyUse) get(name string) (time.Time, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t, ok := u.last[name]
	return t, ok
}

func validateAPIKeyReq(needScope bool) func(Request) error {
	return func(req Request) error {
		var r api.APIKeyCreateRequest // revoke's fields are a subset
		if err := json.Unmarshal(req.Raw, &r); err != nil {
			return jobs.Errorf(jobs.CodeBadRequest, "malformed api key request: %v", err)
		}
		k := fsm.APIKey{Name: r.Name, Scope: r.Scope, Hash: strings.Repeat("0", 64)}
		if !needScope {
			k.Scope = fsm.ScopeRead
		}
		if _, err := fsm.Encode(fsm.CreateAPIKey{Key: k}); err != nil {
			return jobs.Errorf(jobs.CodeBadRequest, "%v", err)
		}
		return nil
	}
}

func (n *Node) opAPIKeyCreate(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.APIKeyCreateRequest](req)
	key, hash := NewAPIKey()
	k := fsm.APIKey{Name: r.Name, Scope: r.Scope, Hash: hash, Created: time.Now().UTC().Truncate(time.Second)}
	b, err := fsm.Encode(fsm.CreateAPIKey{Key: k})
	if err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "%v", err)
	}
	if _, err := n.apply(ctx, b); err != nil {
		if errors.Is(err, fsm.ErrConflict) {
			return jobs.Errorf(jobs.CodeConflict, "an API key named %q exists: revoke it first, or pick another name", r.Name)
		}
		return writeFailed(err, "store the key")
	}
	// Read your writes: the key works on this node when the answer is out.
	n.waitReplica(ctx, func() bool { _, ok := n.lookupAPIKey(key); return ok })
	em.Narrate("apikey", "created", "API key %s (%s) created; it is shown once", k.Name, k.Scope)
	return em.Result(api.APIKeyCreated{APIKeyView: api.APIKeyView{Name: k.Name, Scope: k.Scope, Created: k.Created}, Key: key})
}

func (n *Node) opAPIKeyList(ctx context.Context, em jobs.Emitter, req Request) error {
	out := []api.APIKeyView{}
	// Last use anywhere in the cluster: this node's own memory, and what
	// the other nodes gossip with their load reports.
	used := n.loads.keysUsed()
	for _, k := range n.reg.APIKeys() {
		v := api.APIKeyView{Name: k.Name, Scope: k.Scope, Created: k.Created}
		last, ok := n.keyUse.get(k.Name)
		if sec, seen := used[k.Name]; seen && (!ok || sec > last.Unix()) {
			last, ok = time.Unix(sec, 0).UTC(), true
		}
		if ok {
			v.LastUsed = &last
		}
		out = append(out, v)
	}
	return em.Result(api.APIKeyListResult{Keys: out})
}

func (n *Node) opAPIKeyRevoke(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.APIKeyRevokeRequest](req)
	if _, ok := n.findAPIKey(r.Name); !ok {
		return jobs.Errorf(jobs.CodeNotFound, "no API key named %q (rbee apikey list)", r.Name)
	}
	b, err := fsm.Encode(fsm.DeleteAPIKey{Name: r.Name})
	if err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "%v", err)
	}
	if _, err := n.apply(ctx, b); err != nil {
		return writeFailed(err, "revoke the key")
	}
	n.waitReplica(ctx, func() bool { _, ok := n.findAPIKey(r.Name); return !ok })
	em.Narrate("apikey", "revoked", "API key %s revoked on every node", r.Name)
	return em.Result(api.APIKeyRevokeResult{Revoked: r.Name})
}

func (n *Node) findAPIKey(name string) (fsm.APIKey, bool) {
	for _, k := range n.reg.APIKeys() {
		if k.Name == name {
			return k, true
		}
	}
	return fsm.APIKey{}, false
}
