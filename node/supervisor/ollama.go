package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rbee-project/rbee/internal/humanize"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node/jobs"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// An Ollama engine serves only the models in its own store, so a spawn
// imports the hive's GGUF into it, as `ollama create` with a Modelfile
// `FROM file.gguf` does over Ollama's API: the file is pushed as a blob
// (POST /api/blobs/sha256:<hex>; skipped when HEAD finds it already
// there), then a model named after the catalog id is created from it
// (POST /api/create {"model", "files"}). The node sends that name in every
// request (CallEngine). Until the model exists (POST /api/show answers
// 200) the engine counts as loading, so no request reaches it early; an
// engine re-adopted after a node restart still has its model.

// IsOllama reports whether t is the Ollama engine type.
func IsOllama(t workercat.WorkerType) bool { return t.Name == workercat.TypeOllama }

// ollamaModelReady reports whether the Ollama on port has model.
func (s *Supervisor) ollamaModelReady(ctx context.Context, port int, model string) bool {
	status, _, err := s.enginePost(ctx, port, "/api/show", map[string]string{"model": model})
	return err == nil && status == http.StatusOK
}

// ImportIntoOllama pushes the model file into the Ollama engine of info and
// creates the model there.
func (s *Supervisor) ImportIntoOllama(ctx context.Context, em jobs.Emitter, info process.WorkerInfo, model modelcat.Entry) error {
	_, port, ok := s.cfg.Procs.Secret(info.WorkerID)
	if !ok {
		return fmt.Errorf("engine %s is gone", info.WorkerID)
	}
	digest := "sha256:" + model.SHA256
	status, _, err := s.engineDo(ctx, http.MethodHead, port, "", "/api/blobs/"+digest, nil, "", 0)
	if err != nil {
		return fmt.Errorf("ask Ollama for the model's blob: %w", err)
	}
	if status != http.StatusOK {
		em.Narrate("hive", "import", "copying %s (%d bytes) into Ollama's store", model.ID, model.Size)
		f, err := os.Open(model.Path)
		if err != nil {
			return err
		}
		status, body, err := s.engineDo(ctx, http.MethodPost, port, "", "/api/blobs/"+digest, f, "application/octet-stream", model.Size)
		f.Close()
		if err != nil {
			return fmt.Errorf("push the model to Ollama: %w", err)
		}
		if status != http.StatusCreated && status != http.StatusOK {
			return fmt.Errorf("Ollama refused the model file: HTTP %d %s", status, clipBody(body))
		}
	}
	req := map[string]any{"model": model.ID, "files": map[string]string{filepath.Base(model.Path): digest}, "stream": false}
	status, body, err := s.enginePost(ctx, port, "/api/create", req)
	if err != nil {
		return fmt.Errorf("create the model in Ollama: %w", err)
	}
	var res struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	_ = json.Unmarshal(body, &res)
	if status != http.StatusOK || res.Status != "success" {
		return fmt.Errorf("Ollama could not create %s: HTTP %d %s", model.ID, status, clipBody(body))
	}
	em.Narrate("hive", "import", "Ollama has %s", model.ID)
	return nil
}

// clipBody is an engine's answer as error text: short, one line.
func clipBody(b []byte) string {
	return strconv.Quote(humanize.Clip(string(bytes.TrimSpace(b)), 300))
}

// enginePost posts v as JSON to a local engine (one that checks no key).
func (s *Supervisor) enginePost(ctx context.Context, port int, path string, v any) (int, []byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, nil, err
	}
	return s.engineDo(ctx, http.MethodPost, port, "", path, bytes.NewReader(b), "application/json", int64(len(b)))
}

// engineDo is one request to a local engine, with the worker's secret as
// a bearer key when it is not ""; size is the body's length (-1 unknown).
// The answer is read up to maxEngineBody.
func (s *Supervisor) engineDo(ctx context.Context, method string, port int, secret, path string, body io.Reader, ctype string, size int64) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://127.0.0.1:"+strconv.Itoa(port)+path, body)
	if err != nil {
		return 0, nil, err
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if size >= 0 {
		req.ContentLength = size
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxEngineBody))
	return resp.StatusCode, b, err
}
