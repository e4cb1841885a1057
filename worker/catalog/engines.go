package catalog

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// The external engine types. Their binaries are installed by the user and
// registered (Register) or, for llama-server, downloaded; rbee spawns
// them on loopback, waits for their health check, polls their load and
// proxies the OpenAI API to them.
const (
	// TypeLlamaServer is llama.cpp's llama-server (CUDA, ROCm, Vulkan,
	// Metal or CPU builds).
	TypeLlamaServer = "llama-server"
	// TypeVLLM is vLLM's OpenAI server (`vllm serve`).
	TypeVLLM = "vllm"
	// TypeOllama is `ollama serve`.
	TypeOllama = "ollama"
	// TypeOpenAI is any server that speaks the OpenAI API, launched from
	// a command template given when its binary is registered.
	TypeOpenAI = "openai"
)

// Environment variables that limit which GPUs a process sees: CUDA
// (NVIDIA), HIP (AMD ROCm) and ggml's Vulkan backend. A worker given GPUs
// gets all three, so one list works whatever the engine was built for.
var gpuVisibilityEnv = []string{"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GGML_VK_VISIBLE_DEVICES"}

// allLayers asks an engine to offload every layer: llama.cpp clamps -ngl
// to the model's layer count, so any number above the largest model's
// depth means "all".
const allLayers = 999

// GPUEnv returns the device visibility variables for gpus ("" when none
// are given: the engine then sees every GPU).
func GPUEnv(gpus []int) []string {
	if len(gpus) == 0 {
		return nil
	}
	list := GPUList(gpus)
	out := make([]string, 0, len(gpuVisibilityEnv))
	for _, k := range gpuVisibilityEnv {
		out = append(out, k+"="+list)
	}
	return out
}

// GPUList is gpus as a comma-separated list ("0,1").
func GPUList(gpus []int) string {
	s := make([]string, len(gpus))
	for i, g := range gpus {
		s[i] = strconv.Itoa(g)
	}
	return strings.Join(s, ",")
}

// GPULayersOrDefault is the layer count a launch offloads: l.GPULayers when set,
// else all of them with GPUs, none without.
func (l Launch) GPULayersOrDefault() int {
	switch {
	case l.GPULayers >= 0:
		return l.GPULayers
	case len(l.GPUs) > 0:
		return allLayers
	}
	return 0
}

func hostOr(l Launch) string {
	if l.Host == "" {
		return "127.0.0.1"
	}
	return l.Host
}

// LlamaServerArgs is llama-server's command line (its documented flags):
//
//	-m FILE --host H --port P [-c CTX] [-ngl N] [-t N] [-np SLOTS] --alias ID --metrics
//
// With l.Socket, H is the socket's path: llama-server listens on a Unix
// socket when --host ends in ".sock" (and ignores --port). The API key
// goes in LLAMA_API_KEY (SecretEnv), never on the command line.
func LlamaServerArgs(l Launch) []string {
	host := hostOr(l)
	if l.Socket != "" {
		host = l.Socket
	}
	args := []string{"-m", l.ModelPath, "--host", host, "--port", strconv.Itoa(l.Port)}
	if l.Ctx > 0 {
		args = append(args, "-c", strconv.Itoa(l.Ctx))
	}
	if l.GPULayers >= 0 || len(l.GPUs) > 0 || l.Device == "cpu" {
		args = append(args, "-ngl", strconv.Itoa(l.GPULayersOrDefault()))
	}
	if l.Threads > 0 {
		args = append(args, "-t", strconv.Itoa(l.Threads))
	}
	if l.Slots > 0 {
		args = append(args, "-np", strconv.Itoa(l.Slots))
	}
	if l.ModelID != "" {
		args = append(args, "--alias", l.ModelID)
	}
	return append(args, "--metrics")
}

// LlamaServerType is llama.cpp's server.
func LlamaServerType() WorkerType {
	return WorkerType{
		Name: TypeLlamaServer, Binary: "llama-server", HealthPath: "/health", External: true, Archive: true,
		Args: LlamaServerArgs, Env: func(l Launch) []string { return GPUEnv(l.GPUs) },
		SecretEnv: "LLAMA_API_KEY", LoadPath: "/slots", Socket: true,
	}
}

// VLLMArgs is `vllm serve`'s command line:
//
//	serve FILE --host H --port P [--uds SOCKET] --served-model-name ID [--max-model-len CTX] [--tensor-parallel-size len(GPUs)]
//
// --uds makes it listen on the Unix socket alone, host and port ignored
// (a vLLM too old to know it exits at once: the spawn shows its log).
func VLLMArgs(l Launch) []string {
	args := []string{"serve", l.ModelPath, "--host", hostOr(l), "--port", strconv.Itoa(l.Port)}
	if l.Socket != "" {
		args = append(args, "--uds", l.Socket)
	}
	if l.ModelID != "" {
		args = append(args, "--served-model-name", l.ModelID)
	}
	if l.Ctx > 0 {
		args = append(args, "--max-model-len", strconv.Itoa(l.Ctx))
	}
	if len(l.GPUs) > 1 {
		args = append(args, "--tensor-parallel-size", strconv.Itoa(len(l.GPUs)))
	}
	return args
}

// VLLMType is vLLM's OpenAI server; it reads its API key from VLLM_API_KEY.
func VLLMType() WorkerType {
	return WorkerType{
		Name: TypeVLLM, Binary: "vllm", HealthPath: "/health", External: true,
		Args: VLLMArgs, Env: func(l Launch) []string { return GPUEnv(l.GPUs) },
		SecretEnv: "VLLM_API_KEY", LoadPath: "/metrics", Socket: true,
	}
}

// OllamaType is `ollama serve` on its own loopback port (OLLAMA_HOST).
// Ollama checks no API key: its loopback address is its only protection.
func OllamaType() WorkerType {
	return WorkerType{
		Name: TypeOllama, Binary: "ollama", HealthPath: "/", External: true,
		Args: func(Launch) []string { return []string{"serve"} },
		Env: func(l Launch) []string {
			env := append(GPUEnv(l.GPUs), "OLLAMA_HOST="+net.JoinHostPort(hostOr(l), strconv.Itoa(l.Port)))
			if l.Ctx > 0 {
				env = append(env, "OLLAMA_CONTEXT_LENGTH="+strconv.Itoa(l.Ctx))
			}
			return env
		},
	}
}

// OpenAIType is the generic type: any OpenAI-compatible server, launched
// from the command template its binary was registered with.
func OpenAIType() WorkerType {
	return WorkerType{Name: TypeOpenAI, Binary: "openai-server", HealthPath: "/health", External: true, Templated: true}
}

// EngineTypes are the external engine types every node knows.
func EngineTypes() []WorkerType {
	return []WorkerType{LlamaServerType(), VLLMType(), OllamaType(), OpenAIType()}
}

// Template placeholders and what they become.
var placeholderRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\{[a-z_]*\}`) })

var placeholders = map[string]func(l Launch) string{
	"{model}":      func(l Launch) string { return l.ModelPath },
	"{model_id}":   func(l Launch) string { return l.ModelID },
	"{port}":       func(l Launch) string { return strconv.Itoa(l.Port) },
	"{host}":       hostOr,
	"{ctx}":        func(l Launch) string { return strconv.Itoa(l.Ctx) },
	"{gpu_layers}": func(l Launch) string { return strconv.Itoa(l.GPULayersOrDefault()) },
	"{threads}":    func(l Launch) string { return strconv.Itoa(l.Threads) },
	"{gpus}":       func(l Launch) string { return GPUList(l.GPUs) },
	"{id}":         func(l Launch) string { return l.WorkerID },
	"{socket}":     func(l Launch) string { return l.Socket },
}

// envNameRE is a leading NAME=value word of a template.
var envNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`) })

// maxTemplateBytes bounds a command template: a command line, not a script.
const maxTemplateBytes = 4096

// Template is a parsed command template: words separated by blanks (no
// shell: no quoting, globbing or expansion besides the placeholders
// {model} {model_id} {port} {host} {ctx} {gpu_layers} {threads} {gpus}
// {id} {socket}). Leading NAME=value words set environment variables, like
// env(1); the rest are the arguments after the binary. {port} or {socket}
// must appear: the engine has to listen where rbee probes it. A template
// with {socket} makes an engine that listens on that Unix socket (in a
// directory only the node's user can enter) and is called there; one with
// {port} alone listens on a loopback port every local user can reach. {ctx} 0, {threads} 0 mean
// "the engine's default"; {gpu_layers} is 999 (all) with GPUs, else 0.
type Template struct {
	env, args []string
	socket    bool
}

// Socket reports whether the template puts the engine on a Unix socket
// ({socket}).
func (t Template) Socket() bool { return t.socket }

// ParseTemplate checks and parses a command template.
func ParseTemplate(s string) (Template, error) {
	if len(s) > maxTemplateBytes {
		return Template{}, fmt.Errorf("%w: command template over %d bytes", ErrBadName, maxTemplateBytes)
	}
	if strings.ContainsAny(s, "\x00\r\n") {
		return Template{}, fmt.Errorf("%w: command template has a NUL or line break", ErrBadName)
	}
	var t Template
	words := strings.Fields(s)
	i := 0
	for ; i < len(words) && envNameRE().MatchString(words[i]); i++ {
		t.env = append(t.env, words[i])
	}
	t.args = words[i:]
	port := false
	for _, w := range words {
		for _, p := range placeholderRE().FindAllString(w, -1) {
			if _, ok := placeholders[p]; !ok {
				return Template{}, fmt.Errorf("%w: command template: unknown placeholder %s (known: {model} {model_id} {port} {host} {ctx} {gpu_layers} {threads} {gpus} {id} {socket})", ErrBadName, p)
			}
			port = port || p == "{port}"
			t.socket = t.socket || p == "{socket}"
		}
	}
	if !port && !t.socket {
		return Template{}, fmt.Errorf("%w: command template must contain {port} or {socket}: rbee picks the address and probes the engine there", ErrBadName)
	}
	return t, nil
}

func expand(words []string, l Launch) []string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = placeholderRE().ReplaceAllStringFunc(w, func(p string) string { return placeholders[p](l) })
	}
	return out
}

// Args is the template's argument list for l.
func (t Template) Args(l Launch) []string { return expand(t.args, l) }

// Env is the template's environment for l, after the GPU visibility
// variables (so a template may override them).
func (t Template) Env(l Launch) []string { return append(GPUEnv(l.GPUs), expand(t.env, l)...) }
