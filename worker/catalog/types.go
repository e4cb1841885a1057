package catalog

import (
	"fmt"
	"strconv"
)

// Launch describes one worker process to start; a WorkerType turns it into
// the command line of its binary.
type Launch struct {
	ModelPath string
	WorkerID  string
	Port      int
	Host      string // listen address; "" means the binary's default (loopback)
	NodeURL   string // "" means no heartbeats
	Device    string // "" means the binary's default
	Threads   int    // 0 means the binary's default
	Slots     int    // 0 means the binary's default
	// ModelID is the model's catalog name (an engine that checks the
	// request's "model" field serves it under this name).
	ModelID string
	// Ctx is the context length in tokens; 0 means the binary's default.
	Ctx int
	// GPUs are the GPU indices the worker may use (device visibility);
	// empty means the engine's default (all it sees, or none).
	GPUs []int
	// GPULayers is how many layers an engine offloads to the GPUs; < 0
	// means the engine's default.
	GPULayers int
	// Socket is the Unix socket an engine of a Socket type listens on
	// instead of Host:Port ("" means Host:Port).
	Socket string
}

// WorkerType describes one kind of worker binary: its file name, how to
// build it from Go source (if it can be) and how to launch it.
type WorkerType struct {
	// Name is the catalog type, e.g. "cpu".
	Name string
	// Binary is the executable's base name (without ".exe").
	Binary string
	// Module is the Go module that holds the binary's main package; with
	// Package it makes the type buildable. Empty means "download only"
	// (for instance llama.cpp's llama-server, which needs a C++ toolchain).
	Module string
	// Package is the main package relative to the module root ("./cmd/x").
	Package string
	// HealthPath answers 200 once the worker is ready to serve.
	HealthPath string
	// Args returns the command-line arguments (without the program name)
	// that start the binary for l.
	Args func(l Launch) []string
	// External marks an engine rbee does not build (llama-server, vLLM,
	// Ollama, any OpenAI-compatible server): it sends no heartbeats (the
	// node polls it), does not check rbee's worker secret unless SecretEnv
	// hands it over, and speaks the OpenAI API instead of /v1/infer.
	External bool
	// Env returns extra environment variables ("NAME=value") for l: GPU
	// visibility, listen address. nil adds none.
	Env func(l Launch) []string
	// Socket marks an engine that can listen on a Unix socket (Args puts
	// Launch.Socket on its command line): the process manager gives it one
	// in a directory only the node's user can enter, and the node calls it
	// there. An external engine without it listens on a loopback TCP port
	// that every local user can reach.
	Socket bool
	// SecretEnv, when set, is the environment variable that hands the
	// worker's secret to an external engine that checks a bearer key
	// (llama-server reads LLAMA_API_KEY as its --api-key); "" means the
	// engine checks none, so only its loopback address protects it.
	SecretEnv string
	// LoadPath is polled (with the secret) for the engine's load while it
	// runs: "/slots" (llama-server's JSON slots) or "/metrics"
	// (Prometheus text with a requests-running gauge); "" means the node
	// counts the requests it proxies.
	LoadPath string
	// Archive marks an engine released as an archive (tar.gz or zip) per
	// OS, architecture and accelerator, unpacked whole: its executable
	// needs the shared libraries next to it (llama.cpp's builds). See
	// ArchiveAssets.
	Archive bool
	// Templated marks a type whose command line and health path come from
	// each binary's command template (the generic "openai" type; see
	// ParseTemplate and ForEntry).
	Templated bool
	// Template is the template ForEntry expanded.
	Template string
}

// Buildable reports whether Build can produce this type from Go source.
func (t WorkerType) Buildable() bool { return t.Module != "" && t.Package != "" }

// BinaryName is the executable's file name on goos.
func (t WorkerType) BinaryName(goos string) string {
	if goos == "windows" {
		return t.Binary + ".exe"
	}
	return t.Binary
}

func (t WorkerType) validate() error {
	if err := ValidName("type", t.Name); err != nil {
		return err
	}
	if err := ValidName("binary", t.Binary); err != nil {
		return err
	}
	if t.Binary == SumsFile || t.Binary == SigFile {
		// A release proof is kept next to the binary under these names.
		return fmt.Errorf("%w: type %q: binary name %q is reserved", ErrBadName, t.Name, t.Binary)
	}
	if t.Args == nil && !t.Generic() {
		return fmt.Errorf("%w: type %q has no Args", ErrBadName, t.Name)
	}
	return nil
}

// Generic reports whether the type's command line comes from each
// binary's command template (the "openai" type).
func (t WorkerType) Generic() bool { return t.Templated }

// ForEntry returns the type as it launches e: for the generic type, the
// command line and health path come from the entry's template.
func (t WorkerType) ForEntry(e Entry) (WorkerType, error) {
	if !t.Generic() {
		return t, nil
	}
	if e.Template == "" {
		return WorkerType{}, fmt.Errorf("%w: %s binary %s has no command template", ErrBadName, e.Type, e.Version)
	}
	tpl, err := ParseTemplate(e.Template)
	if err != nil {
		return WorkerType{}, err
	}
	t.Args, t.Env, t.Template, t.Socket = tpl.Args, tpl.Env, e.Template, tpl.Socket()
	if e.HealthPath != "" {
		t.HealthPath = e.HealthPath
	}
	return t, nil
}

// TypeCPU is the type of rbee's own pure-Go worker.
const TypeCPU = "cpu"

// RbeeModule is the module that holds cmd/rbee-worker.
const RbeeModule = "github.com/rbee-project/rbee"

// RbeeWorkerArgs is the command line of cmd/rbee-worker:
//
//	--model FILE --port P --id ID [--host H] [--node URL] [--device D] [--threads N] [--slots K] [--ctx C]
func RbeeWorkerArgs(l Launch) []string {
	args := []string{"--model", l.ModelPath, "--port", strconv.Itoa(l.Port), "--id", l.WorkerID}
	if l.Host != "" {
		args = append(args, "--host", l.Host)
	}
	if l.NodeURL != "" {
		args = append(args, "--node", l.NodeURL)
	}
	if l.Device != "" {
		args = append(args, "--device", l.Device)
	}
	if l.Threads > 0 {
		args = append(args, "--threads", strconv.Itoa(l.Threads))
	}
	if l.Slots > 0 {
		args = append(args, "--slots", strconv.Itoa(l.Slots))
	}
	if l.Ctx > 0 {
		args = append(args, "--ctx", strconv.Itoa(l.Ctx))
	}
	return args
}

// CPUType is the "cpu" worker type: cmd/rbee-worker, built from this
// module.
func CPUType() WorkerType {
	return WorkerType{
		Name:       TypeCPU,
		Binary:     "rbee-worker",
		Module:     RbeeModule,
		Package:    "./cmd/rbee-worker",
		HealthPath: "/health",
		Args:       RbeeWorkerArgs,
	}
}

// TypeRbee is rbee itself. It is no worker: the node catalogues it so that
// `hive install` can copy rbee to hosts of another OS or architecture.
const TypeRbee = "rbee"

// RbeeType is the "rbee" type: cmd/rbee, buildable (and cross-compilable)
// from this module; it has no worker command line.
func RbeeType() WorkerType {
	return WorkerType{
		Name:    TypeRbee,
		Binary:  "rbee",
		Module:  RbeeModule,
		Package: "./cmd/rbee",
		Args:    func(Launch) []string { return nil },
	}
}

// DefaultTypes returns the types every node knows: rbee's own cpu worker
// and the external engines (EngineTypes).
func DefaultTypes() []WorkerType { return append([]WorkerType{CPUType()}, EngineTypes()...) }
