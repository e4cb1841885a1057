package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/node/auth"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/ollama"
	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
)

// The Ollama API's model routes: /api/show, /api/pull, /api/delete, and the
// embedding routes rbee does not serve. Model facts come from the GGUF in
// this node's catalog when it holds the model, else from a worker serving
// it (its /v1/info), else from the registry's holding.

// modelFacts is what /api/show, /api/tags and /api/ps say of a model.
type modelFacts struct {
	ID           string
	Arch         string
	Params       uint64
	Quantization string
	Size         uint64
	SHA256       string
	Modified     time.Time
	ContextLen   uint64
	// From the GGUF only (a model in this node's catalog):
	Template  string
	ModelInfo map[string]any
	// Tools: the chat template renders tools (from the GGUF's template,
	// else a serving worker's /v1/info).
	Tools bool
	// Thinking: a serving worker says the model writes its reasoning
	// apart (/v1/info's thinking).
	Thinking bool
}

// capabilities are the model's Ollama capabilities: "completion" (every
// model rbee serves generates), "tools" when its chat template
// renders tools, as Ollama reports a template that reads .Tools, and
// "thinking" when the model writes its reasoning apart (its template
// writes <think> or harmony's channels, or a serving worker says so:
// its vocabulary's tokens count there), which clients read before they
// send think (Ollama refuses think true without it, as rbee does). Not
// "embedding": /api/embed answers for every model, as Ollama's does for
// generative ones, but Ollama gives that capability to embedding models
// alone, and its clients treat such a model as one (ollama run embeds
// instead of chatting).
func (f modelFacts) capabilities() []string {
	c := []string{"completion"}
	if f.Tools || worker.TemplateTools(f.Template) {
		c = append(c, "tools")
	}
	noTokens := func(string) bool { return false }
	if f.Thinking || worker.ThinkTagFormat(noTokens, f.Template) || worker.HarmonyFormat(noTokens, f.Template) {
		c = append(c, "thinking")
	}
	return c
}

func (f modelFacts) details() ollama.Details {
	return ollama.NewDetails(f.Arch, f.Params, f.Quantization)
}

// What /api/show writes of a GGUF's metadata is bounded whatever the file
// holds, so that a hostile GGUF (in the catalog of any node a user can
// read) cannot make one request cost the node gigabytes:
//   - an array longer than maxShownArray, at any depth, is null, as Ollama
//     writes the tokenizer's vocabulary, merges and scores unless asked to
//     be verbose;
//   - a string is cut to maxShownString bytes, the chat template to
//     maxShownTemplate, each with a note saying so (cutNote);
//   - model_info as a whole stays under maxShownInfo bytes of JSON: a value
//     that does not fit is null, a key longer than maxShownKey or past the
//     budget is left out, and rbee.model_info_cut counts what was.
//
// The result is computed once per file version (shownCache).
const (
	maxShownArray    = 64
	maxShownString   = 4 << 10
	maxShownTemplate = 64 << 10
	maxShownInfo     = 1 << 20
	maxShownKey      = 256
	// shownCut is the model_info key that counts the keys left out or
	// written as null because they did not fit maxShownInfo.
	shownCut = "rbee.model_info_cut"
)

// cutNote is appended to a string cut to fit.
const cutNote = "… [rbee: cut to %d of %d bytes]"

// cutString cuts s to at most max bytes on a rune boundary, with a note.
func cutString(s string, max int) string {
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + fmt.Sprintf(cutNote, n, len(s))
}

func appendUint[T uint8 | uint16 | uint32 | uint64](b []byte, v T) []byte {
	return strconv.AppendUint(b, uint64(v), 10)
}

func appendInt[T int8 | int16 | int32 | int64](b []byte, v T) []byte {
	return strconv.AppendInt(b, int64(v), 10)
}

// appendShown appends the JSON of v as /api/show writes it (arrays longer
// than maxShownArray null, strings cut) to b. ok is false as soon as b
// grows past limit: the caller drops what was appended.
func appendShown(b []byte, v gguf.Value, limit int) (_ []byte, ok bool) {
	if v.Type == gguf.TypeArray && v.Len() > maxShownArray {
		return append(b, "null"...), len(b)+4 <= limit
	}
	switch x := v.Data.(type) {
	case string:
		b = appendShownString(b, x)
	case bool:
		b = strconv.AppendBool(b, x)
	case uint8:
		b = appendUint(b, x)
	case uint16:
		b = appendUint(b, x)
	case uint32:
		b = appendUint(b, x)
	case uint64:
		b = appendUint(b, x)
	case int8:
		b = appendInt(b, x)
	case int16:
		b = appendInt(b, x)
	case int32:
		b = appendInt(b, x)
	case int64:
		b = appendInt(b, x)
	case float32:
		b = appendShownFloat(b, float64(x), 32)
	case float64:
		b = appendShownFloat(b, x, 64)
	case []uint8:
		// Numbers, not encoding/json's base64 of a []byte.
		b = appendShownArray(b, x, appendUint[uint8])
	case []uint16:
		b = appendShownArray(b, x, appendUint[uint16])
	case []uint32:
		b = appendShownArray(b, x, appendUint[uint32])
	case []uint64:
		b = appendShownArray(b, x, appendUint[uint64])
	case []int8:
		b = appendShownArray(b, x, appendInt[int8])
	case []int16:
		b = appendShownArray(b, x, appendInt[int16])
	case []int32:
		b = appendShownArray(b, x, appendInt[int32])
	case []int64:
		b = appendShownArray(b, x, appendInt[int64])
	case []float32:
		b = appendShownArray(b, x, func(b []byte, e float32) []byte { return appendShownFloat(b, float64(e), 32) })
	case []float64:
		b = appendShownArray(b, x, func(b []byte, e float64) []byte { return appendShownFloat(b, e, 64) })
	case []bool:
		b = appendShownArray(b, x, strconv.AppendBool)
	case []string:
		b = appendShownArray(b, x, appendShownString)
	case []gguf.Value:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendShown(b, e, limit); !ok {
				return b, false
			}
		}
		b = append(b, ']')
	default:
		b = append(b, "null"...)
	}
	return b, len(b) <= limit
}

// appendShownArray appends a (at most maxShownArray elements, each
// bounded) as a JSON array.
func appendShownArray[T any](b []byte, a []T, elem func([]byte, T) []byte) []byte {
	b = append(b, '[')
	for i, e := range a {
		if i > 0 {
			b = append(b, ',')
		}
		b = elem(b, e)
	}
	return append(b, ']')
}

func appendShownString(b []byte, s string) []byte {
	q, _ := json.Marshal(cutString(s, maxShownString))
	return append(b, q...)
}

// appendShownFloat writes NaN and the infinities, which JSON lacks, as
// null (encoding/json would fail the whole answer).
func appendShownFloat(b []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}

// ggufShown is what /api/show writes from a GGUF's metadata.
type ggufShown struct {
	Template  string
	ModelInfo map[string]any // values are json.RawMessage
}

// shownOf reads the template and model_info of the GGUF at path, bounded as
// described above; params is the catalog's parameter count, written when
// the file has no general.parameter_count.
func shownOf(path string, params uint64) (ggufShown, error) {
	g, err := gguf.Open(path)
	if err != nil {
		return ggufShown{}, err
	}
	defer g.Close()
	out := ggufShown{ModelInfo: map[string]any{}}
	budget := maxShownInfo
	cut := 0
	var buf []byte
	for _, kv := range g.KVs {
		if kv.Key == "tokenizer.chat_template" {
			if s, ok := kv.Value.Data.(string); ok {
				out.Template = cutString(s, maxShownTemplate)
			}
			continue
		}
		if len(kv.Key) > maxShownKey {
			cut++
			continue
		}
		// A key costs its quoted name, a colon and a comma besides its
		// value; "null" is the least a kept key costs.
		qk, _ := json.Marshal(kv.Key)
		cost := len(qk) + 2
		if cost+4 > budget {
			cut++
			continue
		}
		var ok bool
		buf, ok = appendShown(buf[:0], kv.Value, budget-cost)
		if !ok {
			cut++
			buf = append(buf[:0], "null"...)
		}
		out.ModelInfo[kv.Key] = json.RawMessage(bytes.Clone(buf))
		budget -= cost + len(buf)
	}
	if _, ok := out.ModelInfo["general.parameter_count"]; !ok && params > 0 {
		out.ModelInfo["general.parameter_count"] = params
	}
	if cut > 0 {
		out.ModelInfo[shownCut] = cut
	}
	return out, nil
}

// shownCache keeps what /api/show computed of the last few GGUFs, so that
// a repeated request does not parse the file's metadata again. A file
// version is its path, size and modification time (a model file is never
// rewritten in place: the catalog replaces it whole); an entry computes
// once however many requests wait for it.
var shownCache = newShownLRU(16)

type shownKey struct {
	path   string
	size   int64
	mtime  int64
	params uint64
}

type shownEntry struct {
	once  sync.Once
	shown ggufShown
	err   error
}

type shownLRU struct {
	mu    sync.Mutex
	max   int
	m     map[shownKey]*shownEntry
	order []shownKey // least recently used first
}

func newShownLRU(max int) *shownLRU {
	return &shownLRU{max: max, m: map[shownKey]*shownEntry{}}
}

// get returns what /api/show writes of the GGUF at path.
func (c *shownLRU) get(path string, params uint64) (ggufShown, error) {
	st, err := os.Stat(path)
	if err != nil {
		return ggufShown{}, err
	}
	k := shownKey{path: path, size: st.Size(), mtime: st.ModTime().UnixNano(), params: params}
	c.mu.Lock()
	e, ok := c.m[k]
	if ok {
		c.order = slices.DeleteFunc(c.order, func(o shownKey) bool { return o == k })
	} else {
		e = &shownEntry{}
		c.m[k] = e
		if len(c.order) >= c.max {
			delete(c.m, c.order[0])
			c.order = c.order[1:]
		}
	}
	c.order = append(c.order, k)
	c.mu.Unlock()
	e.once.Do(func() { e.shown, e.err = shownOf(path, params) })
	if e.err != nil {
		// Not kept: the next request tries again.
		c.mu.Lock()
		if c.m[k] == e {
			delete(c.m, k)
			c.order = slices.DeleteFunc(c.order, func(o shownKey) bool { return o == k })
		}
		c.mu.Unlock()
	}
	return e.shown, e.err
}

// modelFactsOf finds what is known of the model a client named. ok is false
// when no catalog, worker or holding knows it.
func (n *Node) modelFactsOf(ctx context.Context, name string, withGGUF bool) (modelFacts, bool) {
	if e, ok := n.hive.LocalModel(name); ok {
		f := modelFacts{ID: e.ID, Arch: e.Architecture, Params: e.Parameters, Quantization: e.Quantization,
			Size: uint64(e.Size), SHA256: e.SHA256, Modified: e.AddedAt, ContextLen: e.ContextLength}
		if withGGUF {
			f.readGGUF(e.Path)
		}
		return f, true
	}
	var f modelFacts
	found := false
	for _, h := range n.reg.Models() {
		if router.ModelMatches(h.ModelID, name) {
			f = modelFacts{ID: h.ModelID, Quantization: h.Quantization, Size: h.Size, SHA256: h.SHA256, Modified: h.UpdatedAt}
			found = true
			break
		}
	}
	if t, err := n.router.Pick(router.Filter{Model: name}); err == nil {
		if in, err := n.workerInfo(ctx, t); err == nil {
			if !found {
				f = modelFacts{ID: t.Registry.Model, Modified: time.Now().UTC()}
				found = true
			}
			f.Arch, f.Params, f.ContextLen = in.Architecture, uint64(in.Params), uint64(in.TrainContextLength)
			f.Tools, f.Thinking = in.Tools, in.Thinking
			if f.Quantization == "" {
				f.Quantization = in.Quantization
			}
		}
	}
	return f, found
}

// workerInfo asks a worker for its /v1/info, briefly.
func (n *Node) workerInfo(ctx context.Context, t router.Target) (worker.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := n.callWorker(ctx, t, http.MethodGet, "/v1/info", nil)
	if err != nil {
		return worker.Info{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return worker.Info{}, fmt.Errorf("worker %s answered %d to /v1/info", t.Registry.ID, resp.StatusCode)
	}
	var in worker.Info
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&in)
	return in, err
}

// readGGUF fills the template and model_info from the file's metadata
// (nothing when the file cannot be read: the catalog's facts remain).
func (f *modelFacts) readGGUF(path string) {
	if shown, err := shownCache.get(path, f.Params); err == nil {
		f.Template, f.ModelInfo = shown.Template, shown.ModelInfo
	}
}

// checkOllamaShow refuses what /api/show would otherwise ignore, naming
// each: an unknown field, and verbose true (long arrays are null whatever
// is asked, see appendShown).
func checkOllamaShow(raw []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return errors.New("malformed JSON: the request must be an object")
	}
	var bad []string
	for _, k := range slices.Sorted(maps.Keys(top)) {
		switch k {
		case "model", "name":
		case "verbose":
			var v *bool
			switch {
			case json.Unmarshal(top[k], &v) != nil:
				bad = append(bad, "verbose must be a boolean")
			case v != nil && *v:
				bad = append(bad, fmt.Sprintf("verbose: not supported (rbee writes arrays longer than %d elements, such as the vocabulary, as null)", maxShownArray))
			}
		default:
			bad = append(bad, fmt.Sprintf("unknown field %q", k))
		}
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// ollamaModelName reads the model of an Ollama request: "model", or
// "name" as older clients send.
func ollamaModelName(w http.ResponseWriter, r *http.Request, dst any) (string, bool) {
	raw, err := readOllamaBody(w, r)
	if err != nil {
		return "", false
	}
	var head struct {
		Model string `json:"model"`
		Name  string `json:"name"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		ollamaError(w, http.StatusBadRequest, ollamaDecodeError(err, head))
		return "", false
	}
	if dst != nil {
		_ = json.Unmarshal(raw, dst)
	}
	name := head.Model
	if name == "" {
		name = head.Name
	}
	if name == "" {
		ollamaError(w, http.StatusBadRequest, "model is required")
		return "", false
	}
	return ollama.Name(name), true
}

// handleOllamaShow answers POST /api/show.
func (n *Node) handleOllamaShow(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	name, ok := ollamaModelName(w, r, &raw)
	if !ok {
		return
	}
	if err := checkOllamaShow(raw); err != nil {
		ollamaError(w, http.StatusBadRequest, err.Error())
		return
	}
	f, ok := n.modelFactsOf(r.Context(), name, true)
	if !ok {
		ollamaError(w, http.StatusNotFound, fmt.Sprintf("model %q not found", name))
		return
	}
	if f.ModelInfo == nil {
		f.ModelInfo = map[string]any{}
		if f.Arch != "" {
			f.ModelInfo["general.architecture"] = f.Arch
			if f.ContextLen > 0 {
				f.ModelInfo[f.Arch+".context_length"] = f.ContextLen
			}
		}
		if f.Params > 0 {
			f.ModelInfo["general.parameter_count"] = f.Params
		}
	}
	// rbee's sampling defaults (the worker's), in Modelfile syntax.
	params := "temperature 0.8\ntop_k 40\ntop_p 0.95\nmin_p 0.05\nrepeat_penalty 1"
	// num_ctx is the context a request gets: the least of the serving
	// workers' (a worker runs with its spawn's ctx, by default the trained
	// one capped at 4096), which is also the most options.num_ctx may ask
	// (ollamaLimits). Continue adopts it as the model's context length,
	// prunes the conversation to it and sends it back with every request:
	// the trained length here made every request ask for more than the
	// workers hold, and refused. model_info keeps the trained length (the
	// GGUF's metadata). Without a worker's report, the trained length.
	numCtx := f.ContextLen
	if served, err := n.servingContext(r.Context(), name, false); err == nil && served > 0 {
		numCtx = uint64(served)
	}
	if numCtx > 0 {
		params = "num_ctx " + strconv.FormatUint(numCtx, 10) + "\n" + params
	}
	modelfile := "# Modelfile generated by rbee\nFROM " + f.ID + "\n"
	if f.Template != "" {
		// Not repeated here: the template is the model's Jinja chat
		// template, which a Modelfile's TEMPLATE (Go template syntax)
		// cannot hold, and writing it twice doubled the answer.
		modelfile += "# TEMPLATE: the model's chat template (Jinja, from its GGUF) is the template field\n"
	}
	for _, p := range strings.Split(params, "\n") {
		modelfile += "PARAMETER " + p + "\n"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"modelfile":    modelfile,
		"parameters":   params,
		"template":     f.Template,
		"details":      f.details(),
		"model_info":   f.ModelInfo,
		"capabilities": f.capabilities(),
		"modified_at":  f.Modified,
	})
}

// handleOllamaEmbed answers POST /api/embed ({"model", "input": a string
// or strings} → {"embeddings": [[...]]}) and handleOllamaEmbeddings the
// older POST /api/embeddings ({"model", "prompt"} → {"embedding": [...]}):
// both are the worker's /v1/embeddings.
func (n *Node) handleOllamaEmbed(w http.ResponseWriter, r *http.Request) { n.ollamaEmbed(w, r, false) }
func (n *Node) handleOllamaEmbeddings(w http.ResponseWriter, r *http.Request) {
	n.ollamaEmbed(w, r, true)
}

// ollamaEmbedFields are the fields /api/embed (and, without truncate and
// dimensions, /api/embeddings) take; another is refused with a 400
// naming it, as on /api/generate and /api/chat. options and keep_alive
// tune how Ollama runs a model (rbee's workers run as they were started)
// and are accepted without effect.
var ollamaEmbedFields = map[string]bool{"model": true, "name": true, "input": true, "truncate": true, "dimensions": true,
	"options": true, "keep_alive": true}

// ollamaEmbedRequest reads and checks an /api/embed or /api/embeddings
// body; the error is the 400's message.
type ollamaEmbedRequest struct {
	Input  json.RawMessage `json:"input"`
	Prompt *string         `json:"prompt"`
	// Truncate, as Ollama's default, is true when absent: an input longer
	// than the context is cut to fit (the worker's truncate).
	Truncate *bool `json:"truncate"`
	// Dimensions is taken only at the model's own size (checked against
	// the answer): rbee does not shorten embeddings.
	Dimensions *int `json:"dimensions"`
}

func checkOllamaEmbed(raw []byte, legacy bool) (ollamaEmbedRequest, error) {
	var req ollamaEmbedRequest
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return req, errors.New("malformed JSON: the request must be an object")
	}
	var bad []string
	for _, k := range slices.Sorted(maps.Keys(top)) {
		v := bytes.TrimSpace(top[k])
		switch {
		case legacy && (k == "input" || k == "truncate" || k == "dimensions"):
			bad = append(bad, fmt.Sprintf("unknown field %q (/api/embeddings takes prompt; /api/embed takes %s)", k, k))
		case !legacy && k == "prompt":
			bad = append(bad, `unknown field "prompt" (/api/embed takes input; /api/embeddings takes prompt)`)
		case k == "prompt":
			if json.Unmarshal(v, &req.Prompt) != nil {
				bad = append(bad, "prompt must be a string")
			}
		case !ollamaEmbedFields[k]:
			bad = append(bad, fmt.Sprintf("unknown field %q", k))
		case k == "truncate":
			if json.Unmarshal(v, &req.Truncate) != nil {
				bad = append(bad, "truncate must be a boolean")
			}
		case k == "dimensions":
			if json.Unmarshal(v, &req.Dimensions) != nil || req.Dimensions != nil && *req.Dimensions < 1 {
				bad = append(bad, "dimensions must be a positive integer")
			}
		case k == "keep_alive":
			if err := ollama.CheckKeepAlive(v); err != nil {
				bad = append(bad, err.Error())
			}
		case k == "options":
			var o map[string]json.RawMessage
			if json.Unmarshal(v, &o) != nil {
				bad = append(bad, "options must be an object")
			}
		case k == "input":
			req.Input = json.RawMessage(v)
		}
	}
	if len(bad) > 0 {
		return req, errors.New(strings.Join(bad, "; "))
	}
	return req, nil
}

func (n *Node) ollamaEmbed(w http.ResponseWriter, r *http.Request, legacy bool) {
	var raw json.RawMessage
	name, ok := ollamaModelName(w, r, &raw)
	if !ok {
		return
	}
	req, err := checkOllamaEmbed(raw, legacy)
	if err != nil {
		ollamaError(w, http.StatusBadRequest, err.Error())
		return
	}
	input := req.Input
	if legacy {
		if req.Prompt == nil || *req.Prompt == "" {
			ollamaError(w, http.StatusBadRequest, "prompt is required")
			return
		}
		input, _ = json.Marshal(*req.Prompt)
	} else if len(input) == 0 || string(input) == "null" {
		ollamaError(w, http.StatusBadRequest, "input is required")
		return
	}
	body := relay.Body{"input": input}
	if !legacy && (req.Truncate == nil || *req.Truncate) {
		body["truncate"] = json.RawMessage("true")
	}
	start := time.Now()
	var b []byte
	var status int
	forward := func() (router.Target, error) {
		t, _, err := n.relay.Forward(r.Context(), router.Filter{Model: name}, "/v1/embeddings", body, &relay.State{},
			func(resp *http.Response, t router.Target) (err error) {
				if b, err = relay.ReadAnswer(resp.Body, t, relay.MaxAnswer); err != nil {
					return err
				}
				status = resp.StatusCode
				return nil
			})
		return t, err
	}
	t, err := forward()
	if d, ok := relay.WorkerError(b); err == nil && status == http.StatusBadRequest && ok && d.Param != nil && *d.Param == "truncate" {
		// A worker older than truncate refuses the field: it answers
		// as it did, an input longer than the context refused.
		delete(body, "truncate")
		t, err = forward()
	}
	if err != nil {
		n.observeRequest("ollama", name, "", err, 0, 0)
		switch {
		case modelMissing(err):
			ollamaError(w, http.StatusNotFound, fmt.Sprintf("model %q not found: no ready worker serves it", name))
		case errors.Is(err, relay.ErrAnswerTooLarge):
			ollamaError(w, http.StatusBadRequest, err.Error())
		case r.Context().Err() == nil:
			ollamaError(w, http.StatusServiceUnavailable, err.Error())
		}
		return
	}
	if status != http.StatusOK {
		msg := string(b)
		if d, ok := relay.WorkerError(b); ok {
			msg = fmt.Sprintf("%s (%s)", d.Message, d.Code)
		}
		err = errors.New(msg)
	}
	var er worker.EmbedResponse
	if err == nil {
		err = json.Unmarshal(b, &er)
	}
	if err == nil && req.Dimensions != nil && len(er.Data) > 0 && len(er.Data[0].Embedding) != *req.Dimensions {
		status = http.StatusBadRequest
		err = fmt.Errorf("dimensions %d: the embeddings of %s have %d dimensions (the model's hidden size), and rbee does not shorten them; leave dimensions out or set it to %d",
			*req.Dimensions, name, len(er.Data[0].Embedding), len(er.Data[0].Embedding))
	}
	n.observeRequest("ollama", t.Registry.Model, t.NodeName, err, 0, 0)
	if err != nil {
		if status == http.StatusOK {
			status = http.StatusBadGateway
		}
		ollamaError(w, status, err.Error())
		return
	}
	if legacy {
		var v []float32
		if len(er.Data) > 0 {
			v = er.Data[0].Embedding
		}
		writeJSON(w, http.StatusOK, map[string]any{"embedding": v})
		return
	}
	vs := make([][]float32, len(er.Data))
	for i, d := range er.Data {
		vs[i] = d.Embedding
	}
	writeJSON(w, http.StatusOK, map[string]any{"model": name, "embeddings": vs,
		"total_duration": time.Since(start).Nanoseconds(), "prompt_eval_count": er.Usage.PromptTokens})
}

// jobSubmitStatus is the HTTP status of an operation that failed as a
// job: the job limits as POST /v1/jobs answers them (a caller over its
// share 429, a full table 503), anything else 500.
func jobSubmitStatus(err error) int {
	switch {
	case errors.Is(err, jobs.ErrOwnerBusy):
		return http.StatusTooManyRequests
	case errors.Is(err, jobs.ErrTooMany), errors.Is(err, jobs.ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// ollamaJob runs an operation as a job owned by the caller and calls fn for
// each of its events; it returns the job's error event (nil when it ended
// well).
func (n *Node) ollamaJob(r *http.Request, req api.Request, fn func(jobs.Event)) (*jobs.Event, error) {
	b, err := api.Encode(req)
	if err != nil {
		return nil, err
	}
	parsed, err := n.ParseRequest(b)
	if err != nil {
		return nil, err
	}
	j, err := n.submitAs(r.Context(), parsed, auth.FromContext(r.Context()).Owner)
	if err != nil {
		return nil, err
	}
	var failed *jobs.Event
	err = j.Follow(r.Context(), 0, func(ev jobs.Event) error {
		if ev.Type == jobs.TypeError {
			e := ev
			failed = &e
		}
		if fn != nil {
			fn(ev)
		}
		return nil
	})
	return failed, err
}

// handleOllamaPull answers POST /api/pull: a model_download on this node,
// reported as Ollama's NDJSON progress (stream, the default) or one answer.
func (n *Node) handleOllamaPull(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Stream *bool `json:"stream"`
	}
	name, ok := ollamaModelName(w, r, &req)
	if !ok {
		return
	}
	stream := req.Stream == nil || *req.Stream
	flusher, _ := w.(http.Flusher)
	line := func(v any) {
		if !stream {
			return
		}
		b, _ := json.Marshal(v)
		_, _ = w.Write(append(b, '\n'))
		if flusher != nil {
			flusher.Flush()
		}
	}
	if stream {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	line(map[string]string{"status": "pulling manifest"})
	var digest string
	failed, err := n.ollamaJob(r, api.ModelDownloadRequest{OnHive: api.OnHive{Hive: n.cfg.Name}, Model: name}, func(ev jobs.Event) {
		switch ev.Type {
		case jobs.TypeProgress:
			if ev.Unit == "bytes" {
				line(map[string]any{"status": "downloading " + name, "digest": name, "total": ev.Total, "completed": ev.Done})
			}
		case jobs.TypeResult:
			var e struct {
				SHA256 string `json:"sha256"`
			}
			_ = json.Unmarshal(ev.Result, &e)
			digest = e.SHA256
		}
	})
	if err == nil && failed != nil {
		err = errors.New(failed.Message)
	}
	if err != nil {
		if stream {
			line(map[string]string{"error": err.Error()})
			return
		}
		ollamaError(w, jobSubmitStatus(err), err.Error())
		return
	}
	if digest != "" {
		line(map[string]string{"status": "verifying sha256 digest", "digest": "sha256:" + digest})
	}
	line(map[string]string{"status": "writing manifest"})
	if stream {
		line(map[string]string{"status": "success"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "success"})
}

// handleOllamaDelete answers DELETE /api/delete: the model leaves the
// catalog of every node that holds it (a model_delete on each). While a
// worker serves it anywhere nothing is deleted: the answer names the
// workers to retire first.
func (n *Node) handleOllamaDelete(w http.ResponseWriter, r *http.Request) {
	name, ok := ollamaModelName(w, r, nil)
	if !ok {
		return
	}
	type target struct{ nodeID, node, id string }
	var targets []target
	seen := map[target]bool{}
	if e, ok := n.hive.LocalModel(name); ok {
		t := target{n.ID(), n.cfg.Name, e.ID}
		targets, seen[t] = append(targets, t), true
	}
	for _, h := range n.reg.Models() {
		if !router.ModelMatches(h.ModelID, name) {
			continue
		}
		nd, ok := n.reg.Node(h.NodeID)
		if !ok {
			continue
		}
		t := target{h.NodeID, nd.Name, h.ModelID}
		if !seen[t] {
			targets, seen[t] = append(targets, t), true
		}
	}
	if len(targets) == 0 {
		ollamaError(w, http.StatusNotFound, fmt.Sprintf("model %q not found", name))
		return
	}
	var busy []string
	for _, wk := range n.reg.Workers() {
		for _, t := range targets {
			if wk.NodeID == t.nodeID && wk.Model == t.id {
				busy = append(busy, wk.ID+" on "+t.node)
			}
		}
	}
	if len(busy) > 0 {
		sort.Strings(busy)
		ollamaError(w, http.StatusConflict, fmt.Sprintf("model %q is in use by worker %s: retire it first (rbee worker retire ID); nothing was deleted", name, strings.Join(busy, ", ")))
		return
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].node < targets[j].node })
	for _, t := range targets {
		failed, err := n.ollamaJob(r, api.ModelDeleteRequest{OnHive: api.OnHive{Hive: t.node}, ID: t.id}, nil)
		if err == nil && failed != nil {
			err = fmt.Errorf("%s (%s)", failed.Message, failed.Code)
		}
		if err != nil {
			ollamaError(w, jobSubmitStatus(err), fmt.Sprintf("deleting %s on %s: %v", t.id, t.node, err))
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}
