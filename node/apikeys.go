package node

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node/auth"
	"github.com/rbee-project/rbee/node/jobs"
)

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
			return jobs.Errorf(jobs.CodeBadRequest, "%s", userMessage(err))
		}
		return nil
	}
}

// userMessage is a registry validation error without the registry's own
// prefix ("fsm: invalid command: "), which says nothing to a user.
func userMessage(err error) string {
	return strings.TrimPrefix(err.Error(), fsm.ErrInvalid.Error()+": ")
}

func (n *Node) opAPIKeyCreate(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.APIKeyCreateRequest](req)
	// A name this replica already holds is refused before anything is
	// written; a create racing another on the same name still conflicts
	// when the registry applies it.
	if _, ok := n.findAPIKey(r.Name); ok {
		return jobs.Errorf(jobs.CodeConflict, "an API key named %q exists: revoke it first, or pick another name", r.Name)
	}
	key, hash := auth.NewAPIKey()
	k := fsm.APIKey{Name: r.Name, Scope: r.Scope, Hash: hash, Created: time.Now().UTC().Truncate(time.Second)}
	b, err := fsm.Encode(fsm.CreateAPIKey{Key: k})
	if err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "%s", userMessage(err))
	}
	if _, err := n.apply(ctx, b); err != nil {
		if errors.Is(err, fsm.ErrConflict) {
			return jobs.Errorf(jobs.CodeConflict, "an API key named %q exists: revoke it first, or pick another name", r.Name)
		}
		return writeFailed(err, "store the key")
	}
	// Read your writes: the key works on this node when the answer is out.
	n.waitReplica(ctx, func() bool { _, ok := n.auth.Lookup(key); return ok })
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
		last, ok := n.auth.LastUsed(k.Name)
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

// keyLoop ends the answers still streaming to API keys that were revoked
// (Guard.EndRevoked) when the registry changes, and every second in case
// a change notice was dropped.
func (n *Node) keyLoop() {
	defer n.wg.Done()
	events, stop := n.reg.Subscribe()
	defer stop()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-events:
		case <-t.C:
		}
		n.auth.EndRevoked()
	}
}
