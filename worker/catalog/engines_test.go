package catalog

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEngineArgsAndEnv(t *testing.T) {
	l := Launch{ModelPath: "/m.gguf", ModelID: "tiny", Port: 9000, Host: "127.0.0.1", Ctx: 4096, Threads: 4, GPUs: []int{0, 1}, GPULayers: -1}
	tests := []struct {
		name string
		typ  WorkerType
		l    Launch
		args []string
		env  []string
	}{
		{"llama-server on two GPUs", LlamaServerType(), l,
			[]string{"-m", "/m.gguf", "--host", "127.0.0.1", "--port", "9000", "-c", "4096", "-ngl", "999", "-t", "4", "--alias", "tiny", "--metrics"},
			[]string{"CUDA_VISIBLE_DEVICES=0,1", "HIP_VISIBLE_DEVICES=0,1", "GGML_VK_VISIBLE_DEVICES=0,1"}},
		{"llama-server on the CPU", LlamaServerType(), Launch{ModelPath: "/m.gguf", Port: 1, Device: "cpu", GPULayers: -1},
			[]string{"-m", "/m.gguf", "--host", "127.0.0.1", "--port", "1", "-ngl", "0", "--metrics"}, nil},
		{"llama-server, engine default layers", LlamaServerType(), Launch{ModelPath: "/m.gguf", Port: 1, GPULayers: -1},
			[]string{"-m", "/m.gguf", "--host", "127.0.0.1", "--port", "1", "--metrics"}, nil},
		{"vllm tensor parallel", VLLMType(), l,
			[]string{"serve", "/m.gguf", "--host", "127.0.0.1", "--port", "9000", "--served-model-name", "tiny", "--max-model-len", "4096", "--tensor-parallel-size", "2"},
			[]string{"CUDA_VISIBLE_DEVICES=0,1", "HIP_VISIBLE_DEVICES=0,1", "GGML_VK_VISIBLE_DEVICES=0,1"}},
		{"llama-server on a socket", LlamaServerType(), Launch{ModelPath: "/m.gguf", Port: 1, GPULayers: -1, Socket: "/d/engine.sock"},
			[]string{"-m", "/m.gguf", "--host", "/d/engine.sock", "--port", "1", "--metrics"}, nil},
		{"vllm on a socket", VLLMType(), Launch{ModelPath: "/m.gguf", Port: 1, GPULayers: -1, Socket: "/d/engine.sock"},
			[]string{"serve", "/m.gguf", "--host", "127.0.0.1", "--port", "1", "--uds", "/d/engine.sock"}, nil},
		{"ollama", OllamaType(), Launch{Port: 7, Ctx: 2048, GPULayers: -1}, []string{"serve"},
			[]string{"OLLAMA_HOST=127.0.0.1:7", "OLLAMA_CONTEXT_LENGTH=2048"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.args, tt.typ.Args(tt.l))
			assert.Equal(t, tt.env, tt.typ.Env(tt.l))
			assert.True(t, tt.typ.External)
		})
	}
	// Which engines can be put on a socket only the node's user reaches.
	assert.True(t, LlamaServerType().Socket)
	assert.True(t, VLLMType().Socket)
	assert.False(t, OllamaType().Socket)
}

func TestTemplate(t *testing.T) {
	l := Launch{ModelPath: "/m.gguf", ModelID: "tiny", WorkerID: "w1", Port: 9000, Ctx: 512, Threads: 2, GPUs: []int{1}, GPULayers: -1, Socket: "/d/engine.sock"}
	tests := []struct {
		tpl    string
		args   []string
		env    []string
		err    string
		socket bool
	}{
		{tpl: "--model {model} --port {port} -c {ctx} -ngl {gpu_layers} -t {threads}",
			args: []string{"--model", "/m.gguf", "--port", "9000", "-c", "512", "-ngl", "999", "-t", "2"},
			env:  []string{"CUDA_VISIBLE_DEVICES=1", "HIP_VISIBLE_DEVICES=1", "GGML_VK_VISIBLE_DEVICES=1"}},
		{tpl: "FOO=bar X={model_id} serve --listen={host}:{port} --id {id} --gpus {gpus}",
			args: []string{"serve", "--listen=127.0.0.1:9000", "--id", "w1", "--gpus", "1"},
			env:  []string{"CUDA_VISIBLE_DEVICES=1", "HIP_VISIBLE_DEVICES=1", "GGML_VK_VISIBLE_DEVICES=1", "FOO=bar", "X=tiny"}},
		{tpl: "--uds {socket} --model {model}",
			args: []string{"--uds", "/d/engine.sock", "--model", "/m.gguf"},
			env:  []string{"CUDA_VISIBLE_DEVICES=1", "HIP_VISIBLE_DEVICES=1", "GGML_VK_VISIBLE_DEVICES=1"}, socket: true},
		{tpl: "--model {model}", err: "must contain {port} or {socket}"},
		{tpl: "--port {port} {secret}", err: "unknown placeholder {secret}"},
		{tpl: "--port {port}\n--x", err: "line break"},
	}
	for _, tt := range tests {
		t.Run(tt.tpl, func(t *testing.T) {
			tp, err := ParseTemplate(tt.tpl)
			if tt.err != "" {
				require.ErrorIs(t, err, ErrBadName)
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.args, tp.Args(l))
			assert.Equal(t, tt.env, tp.Env(l))
			assert.Equal(t, tt.socket, tp.Socket())
			typ, err := OpenAIType().ForEntry(Entry{Type: TypeOpenAI, Template: tt.tpl})
			require.NoError(t, err)
			assert.Equal(t, tt.socket, typ.Socket, "the generic type listens on a socket when its template says so")
		})
	}
}

func TestRegister(t *testing.T) {
	bin := t.TempDir()
	exe := filepath.Join(bin, "llama-server")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	plain := filepath.Join(bin, "notes.txt")
	require.NoError(t, os.WriteFile(plain, []byte("x"), 0o644))
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	tests := []struct {
		name string
		opts RegisterOptions
		err  string
	}{
		{"missing file", RegisterOptions{Type: TypeLlamaServer, Path: filepath.Join(bin, "nope")}, "no such file"},
		{"directory", RegisterOptions{Type: TypeLlamaServer, Path: bin}, "not a regular file"},
		{"not executable", RegisterOptions{Type: TypeLlamaServer, Path: plain}, "not executable"},
		{"relative", RegisterOptions{Type: TypeLlamaServer, Path: "llama-server"}, "not an absolute path"},
		{"cpu is no engine", RegisterOptions{Type: TypeCPU, Path: exe}, "not an external engine"},
		{"unknown type", RegisterOptions{Type: "tgi", Path: exe}, "unknown worker type"},
		{"generic needs a template", RegisterOptions{Type: TypeOpenAI, Path: exe}, "needs a command template"},
		{"template only for generic", RegisterOptions{Type: TypeLlamaServer, Path: exe, Template: "--port {port}"}, "own command line"},
		{"bad health path", RegisterOptions{Type: TypeLlamaServer, Path: exe, HealthPath: "health"}, "health path"},
		{"bad device", RegisterOptions{Type: TypeLlamaServer, Path: exe, Devices: []string{"tpu"}}, "device"},
		{"ok", RegisterOptions{Type: TypeLlamaServer, Path: exe, Devices: []string{"cuda"}}, ""},
		{"ok generic", RegisterOptions{Type: TypeOpenAI, Version: "v2", Path: exe, Template: "--port {port}", HealthPath: "/v1/models"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := c.Register(tt.opts)
			if tt.err != "" {
				require.Error(t, err)
				if tt.name == "missing file" || tt.name == "directory" || tt.name == "not executable" || tt.name == "relative" {
					require.ErrorIs(t, err, ErrNotExecutable)
				}
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, exe, e.Path)
			assert.Equal(t, SourceRegistered, e.Source)
		})
	}
	// The record survives a reopen, is the default of its type, and a
	// delete leaves the user's file alone.
	c = newCatalog(t, dir, nil)
	e, err := c.Default(TypeLlamaServer, runtime.GOOS, runtime.GOARCH)
	require.NoError(t, err)
	assert.Equal(t, DefaultRegisteredVersion, e.Version)
	assert.Equal(t, []string{"cuda"}, e.Devices)
	g, err := c.Get(TypeOpenAI, "v2")
	require.NoError(t, err)
	gt, err := OpenAIType().ForEntry(g)
	require.NoError(t, err)
	assert.Equal(t, "/v1/models", gt.HealthPath)
	assert.Equal(t, []string{"--port", "5"}, gt.Args(Launch{Port: 5}))
	// A hand-edited index: the generic engine loses its template, which
	// Register refuses, so the open drops it and keeps the other.
	idx := filepath.Join(dir, indexFile)
	raw, err := os.ReadFile(idx)
	require.NoError(t, err)
	edited := strings.Replace(string(raw), `"template": "--port {port}"`, `"template": ""`, 1)
	require.NotEqual(t, string(raw), edited, "the index holds the template")
	require.NoError(t, os.WriteFile(idx, []byte(edited), 0o644))
	c = newCatalog(t, dir, nil)
	_, err = c.Get(TypeOpenAI, "v2")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = c.Default(TypeLlamaServer, runtime.GOOS, runtime.GOARCH)
	require.NoError(t, err)
	_, err = c.Register(RegisterOptions{Type: TypeOpenAI, Version: "v2", Path: exe, Template: "--port {port}", HealthPath: "/v1/models"})
	require.NoError(t, err)

	_, err = c.Delete(TypeLlamaServer, "")
	require.NoError(t, err)
	assert.FileExists(t, exe)
	// A registered engine whose file went away is dropped at open.
	require.NoError(t, os.Remove(exe))
	c = newCatalog(t, dir, nil)
	_, err = c.Get(TypeOpenAI, "v2")
	require.ErrorIs(t, err, ErrNotFound)
}

// Registering a type and version again replaces the record, but not while
// a running worker uses the recorded file and the new one is another:
// the catalog would no longer say what that worker runs, and its
// protection against Delete would pass to the new file.
func TestRegisterAgainRefusedInUse(t *testing.T) {
	bin := t.TempDir()
	exe := func(name string) string {
		p := filepath.Join(bin, name)
		require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755))
		return p
	}
	first, second := exe("llama-server"), exe("llama-server-new")
	busy := map[string]bool{}
	c := newCatalog(t, t.TempDir(), func(cfg *Config) { cfg.InUse = func(e Entry) bool { return busy[e.Path] } })
	_, err := c.Register(RegisterOptions{Type: TypeLlamaServer, Version: "b1", Path: first})
	require.NoError(t, err)
	busy[first] = true

	tests := []struct {
		name string
		path string
		err  error
	}{
		{"another file while in use", second, ErrInUse},
		{"the same file again", first, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Register(RegisterOptions{Type: TypeLlamaServer, Version: "b1", Path: tt.path, Devices: []string{"cuda"}})
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
			} else {
				require.NoError(t, err)
			}
			e, err := c.Get(TypeLlamaServer, "b1")
			require.NoError(t, err)
			assert.Equal(t, first, e.Path)
		})
	}
	busy[first] = false
	e, err := c.Register(RegisterOptions{Type: TypeLlamaServer, Version: "b1", Path: second})
	require.NoError(t, err, "replaced once no worker uses it")
	assert.Equal(t, second, e.Path)
}

// An engine any local user can change, or replace in its directory, is
// refused: the node would run their code as its own user. A sticky
// directory such as /tmp is fine.
func TestRegisterRefusesWhatOthersCanWrite(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("POSIX permissions")
	}
	root := t.TempDir()
	mk := func(dir string, dirMode, fileMode os.FileMode) string {
		d := filepath.Join(root, dir)
		require.NoError(t, os.MkdirAll(d, 0o755))
		exe := filepath.Join(d, "llama-server")
		require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
		require.NoError(t, os.Chmod(exe, fileMode))
		require.NoError(t, os.Chmod(d, dirMode))
		return exe
	}
	worldFile := mk("a", 0o755, 0o777)
	worldDir := mk("b", 0o777, 0o755)
	sticky := mk("c", os.ModeSticky|0o777, 0o755)
	link := filepath.Join(root, "link")
	require.NoError(t, os.Symlink(worldFile, link))
	linkDir := filepath.Join(root, "d")
	require.NoError(t, os.Mkdir(linkDir, 0o755))
	linkInWorldDir := filepath.Join(linkDir, "llama-server")
	require.NoError(t, os.Symlink(sticky, linkInWorldDir))
	require.NoError(t, os.Chmod(linkDir, 0o777))
	for _, tt := range []struct {
		name, path, err string
	}{
		{"world-writable file", worldFile, "any user can write " + worldFile},
		{"world-writable directory", worldDir, "any user can write " + filepath.Dir(worldDir)},
		{"symlink to a world-writable file", link, "any user can write " + worldFile},
		{"symlink in a world-writable directory", linkInWorldDir, "any user can write " + linkDir},
		{"sticky directory", sticky, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCatalog(t, t.TempDir(), nil)
			_, err := c.Register(RegisterOptions{Type: TypeLlamaServer, Path: tt.path})
			if tt.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrNotExecutable)
			require.ErrorContains(t, err, tt.err)
			assert.Empty(t, c.List())
		})
	}

	// Another user's file, or a file in another user's directory, whatever
	// the modes: its owner can change it (needs root to give it away).
	if os.Geteuid() != 0 {
		t.Skip("giving files to another user needs root")
	}
	const nobody = 65534
	theirs := mk("e", 0o755, 0o755)
	require.NoError(t, os.Chown(theirs, nobody, nobody))
	inTheirDir := mk("f", 0o755, 0o755)
	require.NoError(t, os.Chown(filepath.Dir(inTheirDir), nobody, nobody))
	for _, tt := range []struct{ name, path, owned string }{
		{"another user's file", theirs, theirs},
		{"in another user's directory", inTheirDir, filepath.Dir(inTheirDir)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCatalog(t, t.TempDir(), nil)
			_, err := c.Register(RegisterOptions{Type: TypeLlamaServer, Path: tt.path})
			require.ErrorIs(t, err, ErrNotExecutable)
			require.ErrorContains(t, err, tt.owned+" belongs to another user")
			assert.Empty(t, c.List())
		})
	}
}
