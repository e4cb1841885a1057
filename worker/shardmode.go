package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/internal/peercred"
	"github.com/rbee-project/rbee/internal/spinconn"
	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/worker/shard"
)

// StageSecretsEnv is the environment variable through which a group's
// head worker gets the secrets of its later stages' workers (comma
// separated, in the order of ShardConfig.Stages): like the worker's own
// secret, never on the command line.
const StageSecretsEnv = "RBEE_STAGE_SECRETS"

// StageListenEnv is how a node gives a shard worker the address of its
// direct stage port (the worker command's --stage-listen default): an
// environment variable, so that a worker binary from before direct ports
// ignores it rather than refusing an unknown flag.
const StageListenEnv = "RBEE_STAGE_LISTEN"

// ErrStageOnly answers generation and embedding requests sent to a shard
// of a group other than its head (a later pipeline stage, a tensor
// member): only the head serves them.
var ErrStageOnly = errors.New("worker: only the group's head serves the API; this shard serves its group (/v1/shard)")

// Shard modes of ShardConfig.Mode and ModelInfo.ShardMode.
const (
	ShardPipeline = "pipeline"
	ShardTensor   = "tensor"
)

// ShardConfig makes the worker one shard of a group serving one model:
// a pipeline stage (a range of layers) or a tensor shard (a slice of
// every layer, by KV heads). The zero value is an unsharded worker.
type ShardConfig struct {
	// Mode is ShardPipeline (or empty) or ShardTensor.
	Mode string
	// KVLo and KVHi (tensor): the KV heads [KVLo, KVHi) this worker
	// computes. KVLo > 0 makes a member that serves /v1/shard; KVLo 0
	// makes the group's head, with the members in Stages.
	KVLo, KVHi int
	// Lo and Hi: the layers [Lo, Hi) this worker loads; Hi 0 means to the
	// last layer. Lo > 0 makes a later stage: it serves the stage protocol
	// (GET /v1/shard, upgraded) and no generation. Lo 0 with Stages makes
	// the group's head: it serves the API and runs every forward pass
	// through the stages.
	Lo, Hi int
	// Stages are the later stages' workers, in layer order (head only).
	Stages []StageEndpoint
	// Timeout bounds one exchange with a stage; 0 means
	// shard.DefaultTimeout.
	Timeout time.Duration
}

// StageEndpoint is a later stage's worker as its head reaches it.
type StageEndpoint struct {
	// URL is the stage worker's base URL (http://host:port), or a
	// loopback address the node bridges to it.
	URL string
	// Secret is the stage worker's secret (its Authorization: Bearer).
	Secret string
}

func (c ShardConfig) sharded() bool {
	return c.Mode == ShardTensor || c.Lo > 0 || c.Hi > 0 || len(c.Stages) > 0
}

func (c ShardConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: Shard: %s", ErrBadConfig, fmt.Sprintf(format, args...))
	}
	if c.Mode == ShardTensor {
		switch {
		case c.Lo != 0 || c.Hi != 0:
			return bad("a tensor shard holds every layer (Lo, Hi must be 0)")
		case c.KVLo < 0 || c.KVHi <= c.KVLo:
			return bad("KV heads [%d, %d)", c.KVLo, c.KVHi)
		case c.KVLo > 0 && len(c.Stages) > 0:
			return bad("a tensor member (KVLo %d) has no members of its own", c.KVLo)
		case c.KVLo == 0 && len(c.Stages) == 0:
			return bad("the tensor head of KV heads [0, %d) needs its members (Stages)", c.KVHi)
		}
	} else if c.Mode != "" && c.Mode != ShardPipeline {
		return bad("mode %q (want %s or %s)", c.Mode, ShardPipeline, ShardTensor)
	} else if c.KVLo != 0 || c.KVHi != 0 {
		return bad("KV heads are for tensor shards")
	}
	switch {
	case c.Mode == ShardTensor:
	case c.Lo < 0 || c.Hi < 0 || c.Hi > 0 && c.Hi <= c.Lo:
		return bad("layer range [%d, %d)", c.Lo, c.Hi)
	case c.Lo > 0 && len(c.Stages) > 0:
		return bad("a later stage (Lo %d) has no stages of its own", c.Lo)
	case c.Lo == 0 && c.Hi > 0 && len(c.Stages) == 0:
		return bad("the head of layers [0, %d) needs its later stages", c.Hi)
	case c.Lo == 0 && c.Hi == 0 && len(c.Stages) > 0:
		return bad("a head with stages must say where its layers end (Hi)")
	case c.Timeout < 0:
		return bad("Timeout %v is negative", c.Timeout)
	}
	for i, st := range c.Stages {
		u, err := url.Parse(st.URL)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return bad("stage %d: %q is not an http URL", i+1, st.URL)
		}
		if len(st.Secret) < MinSecretLen {
			return bad("stage %d: secret of at least %d characters required", i+1, MinSecretLen)
		}
	}
	return nil
}

// DialStage returns a shard.Dialer that opens the stage protocol on a
// stage worker: GET baseURL/v1/shard with its secret, upgraded to
// shard.ProtocolID.
func DialStage(baseURL, secret string) shard.Dialer {
	var mu sync.Mutex
	var bridgedUntil time.Time // a direct connect failed: the bridge only, until then
	return func(ctx context.Context) (io.ReadWriteCloser, error) {
		mu.Lock()
		direct := time.Now().After(bridgedUntil)
		mu.Unlock()
		c, redirect, err := openStage(ctx, baseURL, secret, direct, true)
		if errors.Is(err, errBadRedirect) {
			c, redirect, err = openStage(ctx, baseURL, secret, false, true)
		}
		if err != nil || redirect == nil {
			return c, err
		}
		dctx, cancel := context.WithTimeout(ctx, stageDirectDialTimeout)
		dc, derr := DialStageDirect(dctx, redirect.Addr, redirect.Offer)
		cancel()
		if derr == nil {
			return dc, nil
		}
		mu.Lock()
		bridgedUntil = time.Now().Add(stageBridgedFor)
		mu.Unlock()
		c, _, err = openStage(ctx, baseURL, secret, false, true)
		if err != nil {
			return nil, fmt.Errorf("%w (the direct port failed too: %v)", err, derr)
		}
		return c, nil
	}
}

// Direct stage connections from the head: how long the head tries the
// offered port before it goes through the nodes, and for how long after
// a failure it asks for the bridge only (the port may be firewalled).
const (
	stageDirectDialTimeout = 3 * time.Second
	stageBridgedFor        = 2 * time.Minute
)

// StageDirectHeader, set to "1" on GET /v1/shard, tells a node's stage
// bridge that the head can connect to a direct stage port: the bridge
// then answers 200 with a StageRedirect when the shard's worker has one.
// A worker's own /v1/shard ignores it.
const StageDirectHeader = "Rbee-Stage-Direct"

// errBadRedirect: a bridge's 200 answer was not a StageRedirect.
var errBadRedirect = errors.New("malformed stage redirect")

// StageRedirect is a bridge's 200 answer to a GET /v1/shard with
// StageDirectHeader: connect to Addr with DialStageDirect.
type StageRedirect struct {
	Addr  string     `json:"addr"`
	Offer StageOffer `json:"offer"`
}

// DialWorkerStage opens the stage protocol on a stage worker itself
// (GET baseURL/v1/shard with its secret, upgraded), never asking for a
// direct port: what a node's bridge uses for a worker of its own.
func DialWorkerStage(ctx context.Context, baseURL, secret string) (io.ReadWriteCloser, error) {
	c, _, err := openStage(ctx, baseURL, secret, false, false)
	return c, err
}

// openStage sends GET /v1/shard; a 101 gives the upgraded connection, a
// 200 (asked for with direct) a redirect to a direct stage port. With
// spin (a head's own link, whose exchanges follow each other closely) the
// connection's reads poll before they sleep; a node's bridge does not
// spin: it only relays.
func openStage(ctx context.Context, baseURL, secret string, direct, spin bool) (io.ReadWriteCloser, *StageRedirect, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, nil, err
	}
	// A loopback stage (the node's bridge, a shard worker of this
	// machine) is run by this process's user: a port another local user
	// listens on (the stage worker died, the node restarts) gets neither
	// the secret nor the hidden states.
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok && ta.IP.IsLoopback() && peercred.Supported() {
		if err := peercred.CheckServer(c, uint32(os.Getuid())); err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	if spin {
		c = spinconn.Wrap(c, spinconn.DefaultSpin)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	req := "GET " + strings.TrimSuffix(u.Path, "/") + "/v1/shard HTTP/1.1\r\nHost: " + u.Host +
		"\r\nAuthorization: Bearer " + secret + "\r\nConnection: Upgrade\r\nUpgrade: " + shard.ProtocolID + "\r\n"
	if direct {
		req += StageDirectHeader + ": 1\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if direct && resp.StatusCode == http.StatusOK {
		var r StageRedirect
		err := json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&r)
		resp.Body.Close()
		c.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w: %s: %v", shard.ErrProtocol, errBadRedirect, baseURL, err)
		}
		return nil, &r, nil
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		c.Close()
		return nil, nil, fmt.Errorf("%w: %s: %s %s", shard.ErrProtocol, baseURL, resp.Status, strings.TrimSpace(string(body)))
	}
	_ = c.SetDeadline(time.Time{})
	return &bufConn{Conn: c, r: br}, nil, nil
}

// bufConn reads through the bufio.Reader that read the HTTP answer (it may
// hold the first bytes of the protocol).
type bufConn struct {
	net.Conn
	r io.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// stageServer is what a later stage's Model offers the HTTP layer.
type stageServer interface {
	ServeStage(ctx context.Context, conn io.ReadWriteCloser) error
}

// stageOnly refuses an API request on a shard other than the head (400
// group_shard): only the group's head generates and embeds.
func stageOnly(m Model) *apiError {
	if _, ok := m.(stageServer); ok {
		return &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: "group_shard", msg: ErrStageOnly.Error()}
	}
	return nil
}

// handleShard upgrades GET /v1/shard to the stage protocol on a later
// stage's worker (the secret was checked by the middleware).
func (s *Server) handleShard(w http.ResponseWriter, r *http.Request) {
	m, _, st, err := s.admit()
	if err != nil {
		writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: errTypeUnavailable, code: "unavailable", msg: fmt.Sprintf("worker is %s", st)})
		return
	}
	defer s.reqs.Done()
	ss, ok := m.(stageServer)
	if !ok {
		writeError(w, &apiError{status: http.StatusNotFound, typ: errTypeInvalid, code: "not_a_shard", msg: "this worker is not a shard that serves its group's head"})
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), shard.ProtocolID) {
		writeError(w, &apiError{status: http.StatusUpgradeRequired, typ: errTypeInvalid, code: "upgrade_required", msg: "Upgrade: " + shard.ProtocolID + " required"})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, &apiError{status: http.StatusInternalServerError, typ: errTypeServer, code: "internal", msg: err.Error()})
		return
	}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + shard.ProtocolID + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	// The connection outlives the request and counts as one in flight: a
	// drain waits (up to DrainTimeout) for the head to hang up, which it
	// does when it is retired itself; Close ends it at once. Its reads
	// poll before they sleep (exchanges follow each other closely), after
	// whatever the server's reader already holds.
	var held []byte
	if n := brw.Reader.Buffered(); n > 0 {
		p, _ := brw.Reader.Peek(n)
		held = bytes.Clone(p)
	}
	sc := spinconn.Wrap(conn, spinconn.DefaultSpin)
	s.reqs.Add(1)
	go func() {
		defer s.reqs.Done()
		_ = ss.ServeStage(s.hardCtx, &bufConn{Conn: sc, r: io.MultiReader(bytes.NewReader(held), sc)})
	}()
}

// loadShardEngine loads a pipeline stage (see ShardConfig) with the engine.
func loadShardEngine(path string, opts LoadOptions) (Model, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sc := opts.Shard
	eo := engine.Options{Threads: opts.Threads, ContextSize: opts.ContextSize, Logger: opts.Logger, RepackCache: opts.RepackCache, KVCache: opts.KVCache, MemoryLimit: opts.MemoryLimit, Sessions: opts.Sessions}
	if sc.Mode == ShardTensor {
		return loadTensorEngine(path, sc, eo, log, opts.OnModelLost)
	}
	if sc.Lo > 0 {
		m, err := engine.LoadShard(path, engine.ShardSpec{Lo: sc.Lo, Hi: sc.Hi}, eo)
		if err != nil {
			return nil, err
		}
		srv, err := shard.NewServer(shard.ServerConfig{Model: m, Logger: log, OnModelLost: opts.OnModelLost})
		if err != nil {
			m.Close()
			return nil, err
		}
		lo, hi := m.Shard()
		return &stageModel{m: m, srv: srv, mode: ShardPipeline, lo: lo, hi: hi}, nil
	}
	dials := make([]shard.Dialer, len(sc.Stages))
	for i, st := range sc.Stages {
		dials[i] = DialStage(st.URL, st.Secret)
	}
	p, err := shard.NewPipeline(shard.PipelineConfig{Stages: dials, Lo: sc.Hi, Timeout: sc.Timeout, Logger: log})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	m, err := engine.LoadShard(path, engine.ShardSpec{Lo: 0, Hi: sc.Hi, Next: p}, eo)
	if err != nil {
		p.Close()
		return nil, err
	}
	em := newEngineModel(m, log)
	em.group, em.shardMode, em.shardLo, em.shardHi = p, ShardPipeline, 0, sc.Hi
	return em, nil
}

// loadTensorEngine loads a tensor shard: a member serving /v1/shard, or
// the head connected to its members.
func loadTensorEngine(path string, sc ShardConfig, eo engine.Options, log *slog.Logger, onModelLost func(error)) (Model, error) {
	if sc.KVLo > 0 {
		link := shard.NewMemberLink()
		m, err := engine.LoadShard(path, engine.ShardSpec{Mode: engine.Tensor, KVLo: sc.KVLo, KVHi: sc.KVHi, Peers: link}, eo)
		if err != nil {
			return nil, err
		}
		srv, err := shard.NewServer(shard.ServerConfig{Model: m, Link: link, Logger: log, OnModelLost: onModelLost})
		if err != nil {
			m.Close()
			return nil, err
		}
		return &stageModel{m: m, srv: srv, mode: ShardTensor, lo: sc.KVLo, hi: sc.KVHi}, nil
	}
	dials := make([]shard.Dialer, len(sc.Stages))
	for i, st := range sc.Stages {
		dials[i] = DialStage(st.URL, st.Secret)
	}
	g, err := shard.NewTensorGroup(shard.TensorGroupConfig{Members: dials, KVHi: sc.KVHi, Timeout: sc.Timeout, Logger: log})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		return nil, err
	}
	m, err := engine.LoadShard(path, engine.ShardSpec{Mode: engine.Tensor, KVHi: sc.KVHi, Peers: g}, eo)
	if err != nil {
		g.Close()
		return nil, err
	}
	em := newEngineModel(m, log)
	em.group, em.shardMode, em.shardLo, em.shardHi = g, ShardTensor, 0, sc.KVHi
	return em, nil
}

// stageModel is a later stage: it serves the stage protocol and refuses
// generation.
type stageModel struct {
	m      *engine.Model
	srv    *shard.Server
	mode   string
	lo, hi int
}

func (sm *stageModel) Info() ModelInfo {
	i := sm.m.Info()
	return ModelInfo{
		Name: i.Name, Arch: i.Arch, ContextLength: i.ContextLength, TrainContextLength: i.TrainContextLength,
		VocabSize: i.VocabSize, Params: i.Params, Quantization: i.Quantization, KVCache: i.KVCache,
		Layers: i.Layers, Dim: i.Dim, Heads: i.Heads, KVHeads: i.KVHeads, MaxTokenBytes: i.MaxTokenBytes,
		ShardMode: sm.mode, ShardLo: sm.lo, ShardHi: sm.hi,
	}
}

func (sm *stageModel) Encode(text string) []int32 {
	tok := sm.m.Tokenizer()
	return tok.Encode(text, tok.AddBOS(), true)
}

func (sm *stageModel) EncodeChat(context.Context, []Message, []json.RawMessage, map[string]json.RawMessage, bool) ([]int32, error) {
	return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, ErrStageOnly)
}

func (sm *stageModel) NewSession() Session { return stageOnlySession{} }

func (sm *stageModel) ServeStage(ctx context.Context, conn io.ReadWriteCloser) error {
	return sm.srv.ServeConn(ctx, conn)
}

// Close ends the stage connections, then releases the model.
func (sm *stageModel) Close() error {
	sm.srv.Close()
	return sm.m.Close()
}

type stageOnlySession struct{}

func (stageOnlySession) Generate(context.Context, GenerateRequest, func(Token) error) (Result, error) {
	return Result{}, fmt.Errorf("%w: %w", ErrInvalidRequest, ErrStageOnly)
}

func (stageOnlySession) Embed(context.Context, []int32) ([]float32, error) {
	return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, ErrStageOnly)
}

func (stageOnlySession) CachedPrefix([]int32) int { return 0 }
