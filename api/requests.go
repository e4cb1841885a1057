package api

import (
	"encoding/json"

	"github.com/rbee-project/rbee/internal/jsonx"
)

// StatusRequest asks for the cluster status (StatusResult).
type StatusRequest struct {
	// All asks for every node, worker and model however many there are;
	// without it a cluster past StatusListAll nodes answers with a
	// summary (StatusResult.Summary) and only the nodes and workers that
	// need attention.
	All bool `json:"all,omitempty"`
}

// StatusListAll: up to this many nodes, status lists everything.
const StatusListAll = 20

// HiveListRequest lists every node and inventory host (HiveListResult).
type HiveListRequest struct{}

// HiveGetRequest reports one node or inventory host (Hive).
type HiveGetRequest struct {
	Name string `json:"name"`
}

// HiveStatusRequest checks one node's gossip, p2p and API (HiveStatus).
type HiveStatusRequest struct {
	Name string `json:"name"`
}

// HiveRefreshCapabilitiesRequest makes a hive detect its hardware again.
type HiveRefreshCapabilitiesRequest struct {
	OnHive
}

// Message is one chat message of an infer request. ToolCalls is kept raw:
// the node passes it to the worker untouched.
type Message struct {
	Role       string          `json:"role"`
	Content    string          `json:"content"`
	ToolCalls  json.RawMessage `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
	Name       string          `json:"name,omitempty"`
}

// InferRequest runs a prompt (or chat messages) on a worker the scheduler
// picks; its token events stream and the result is an InferResult. Model,
// Hive, Device and WorkerID route it; the node passes the other fields
// (and any other sampling option the worker takes) to the worker.
type InferRequest struct {
	Model    string    `json:"model,omitempty"`
	Hive     string    `json:"hive,omitempty"`
	Device   string    `json:"device,omitempty"`
	WorkerID string    `json:"worker_id,omitempty"`
	Prompt   *string   `json:"prompt,omitempty"`
	Messages []Message `json:"messages,omitempty"`

	MaxTokens   int              `json:"max_tokens,omitempty"`
	Temperature *float32         `json:"temperature,omitempty"`
	TopK        *int             `json:"top_k,omitempty"`
	TopP        *float32         `json:"top_p,omitempty"`
	Seed        *int64           `json:"seed,omitempty"`
	Stop        jsonx.StringList `json:"stop,omitempty"`
}

// WorkerListRequest lists the registry's workers (WorkerListResult).
type WorkerListRequest struct{}

// WorkerGetRequest reports one worker (WorkerView).
type WorkerGetRequest struct {
	WorkerID string `json:"worker_id,omitempty"`
	// ID is an older spelling of WorkerID.
	ID string `json:"id,omitempty"`
}

// Worker is the id the request names.
func (r WorkerGetRequest) Worker() string {
	if r.WorkerID != "" {
		return r.WorkerID
	}
	return r.ID
}

// WorkerRetireRequest drains and stops a worker (WorkerView).
type WorkerRetireRequest WorkerGetRequest

// Worker is the id the request names.
func (r WorkerRetireRequest) Worker() string { return WorkerGetRequest(r).Worker() }

// WorkerSpawnRequest starts a worker process on a hive (SpawnResult).
type WorkerSpawnRequest struct {
	OnHive
	// Model is a catalog id or a reference (builtin:…, hf:…, a URL or a
	// path); Ref is an older spelling.
	Model string `json:"model,omitempty"`
	Ref   string `json:"ref,omitempty"`
	// Type is the worker type ("" is cpu, rbee's own engine).
	Type     string `json:"type,omitempty"`
	Version  string `json:"version,omitempty"`
	Device   string `json:"device,omitempty"`
	Threads  int    `json:"threads,omitempty"`
	Slots    int    `json:"slots,omitempty"`
	Queue    int    `json:"queue,omitempty"`
	WorkerID string `json:"worker_id,omitempty"`
	// Engines: visible GPUs, context tokens, layers to offload (unset:
	// all with GPUs, none without).
	GPUs      []int `json:"gpus,omitempty"`
	Ctx       int   `json:"ctx,omitempty"`
	GPULayers *int  `json:"gpu_layers,omitempty"`
	// KVCache is the cpu worker's KV cache type, "f16" or "f32" (empty:
	// the worker's default, f16).
	KVCache string `json:"kv_cache,omitempty"`
	// Shards > 1 spawns a sharded group: one model served by Shards cpu
	// workers on the Hives (in order; the first is the group's head), as
	// a pipeline of layer ranges (Mode "pipeline", the default) or a
	// tensor split of KV heads (Mode "tensor"). Without Hives the node
	// picks them. The result is a GroupSpawnResult.
	Shards int      `json:"shards,omitempty"`
	Hives  []string `json:"hives,omitempty"`
	Mode   string   `json:"mode,omitempty"`
	// Group is the id of a failed group the leader re-plans (it keeps its
	// id); users do not set it.
	Group string `json:"group,omitempty"`
	// Shard is set by the node that places a group, on the spawn of each
	// of its shards; users do not set it.
	Shard *ShardSpawn `json:"shard,omitempty"`
}

// ShardSpawn makes a spawned worker one shard of a group: layers [Lo, Hi)
// (pipeline) or KV heads [Lo, Hi) (tensor). The head (Lo 0) gets the
// other shards as Stages, which its node bridges to them.
type ShardSpawn struct {
	Group  string       `json:"group"`
	Mode   string       `json:"mode"`
	Lo     int          `json:"lo"`
	Hi     int          `json:"hi"`
	Stages []ShardStage `json:"stages,omitempty"`
}

// ShardStage is another shard of a group as its head's node reaches it.
type ShardStage struct {
	NodeID   string `json:"node_id"`
	WorkerID string `json:"worker_id"`
}

// ModelRef is the model the request names.
func (r WorkerSpawnRequest) ModelRef() string {
	if r.Model != "" {
		return r.Model
	}
	return r.Ref
}

// ProcessListRequest lists a hive's worker processes (ProcessListResult).
type ProcessListRequest struct{ OnHive }

// ProcessGetRequest reports one worker process (Process).
type ProcessGetRequest struct {
	OnHive
	PID int `json:"pid"`
}

// ProcessDeleteRequest stops one worker process (ProcessDeleteResult).
type ProcessDeleteRequest ProcessGetRequest

// BinaryListRequest lists a hive's worker binaries (BinaryListResult).
type BinaryListRequest struct{ OnHive }

// BinaryRequest names binaries of a type: one version, or "" for all.
type BinaryRequest struct {
	OnHive
	Type    string `json:"type,omitempty"`
	Version string `json:"version,omitempty"`
}

// BinaryGetRequest reports one worker binary (Binary).
type BinaryGetRequest BinaryRequest

// BinaryDeleteRequest deletes worker binaries (BinaryDeleteResult).
type BinaryDeleteRequest BinaryRequest

// BinaryAddRequest registers an engine the user installed on the hive, at
// Path (Binary). Admin only: rbee will execute that file.
type BinaryAddRequest struct {
	OnHive
	Type    string `json:"type,omitempty"`
	Version string `json:"version,omitempty"`
	Path    string `json:"path"`
	// Template is the engine's command line; Health its readiness path.
	Template string   `json:"template,omitempty"`
	Health   string   `json:"health,omitempty"`
	Devices  []string `json:"devices,omitempty"`
	// Default makes it the spawn default of its type and platform.
	Default bool `json:"default,omitempty"`
}

// WorkerBuildRequest builds a worker (or rbee itself) from source on the
// hive (Binary).
type WorkerBuildRequest struct {
	OnHive
	Type string `json:"type,omitempty"`
	OS   string `json:"os,omitempty"`
	Arch string `json:"arch,omitempty"`
	// Module builds that module version instead of the hive's source tree.
	Module string `json:"module_version,omitempty"`
}

// WorkerDownloadRequest fetches a signed worker release, from a peer or
// the node's release location (Binary).
type WorkerDownloadRequest struct {
	OnHive
	Type    string `json:"type,omitempty"`
	Version string `json:"version,omitempty"`
	OS      string `json:"os,omitempty"`
	Arch    string `json:"arch,omitempty"`
	// Accel is the build of an engine archive ("" picks it from the
	// hive's GPUs).
	Accel   string `json:"accel,omitempty"`
	Default bool   `json:"default,omitempty"`
}

// ModelDownloadRequest puts a model in a hive's catalog, from a peer or
// its source (Model).
type ModelDownloadRequest struct {
	OnHive
	// Model is a reference; Ref is an older spelling.
	Model string `json:"model,omitempty"`
	Ref   string `json:"ref,omitempty"`
}

// ModelRef is the model the request names.
func (r ModelDownloadRequest) ModelRef() string {
	if r.Model != "" {
		return r.Model
	}
	return r.Ref
}

// ModelListRequest lists a hive's models (ModelListResult), or with All
// every model of the cluster (ClusterModelListResult).
type ModelListRequest struct {
	OnHive
	All bool `json:"all,omitempty"`
}

// ModelGetRequest reports one model of a hive's catalog (Model).
type ModelGetRequest struct {
	OnHive
	ID string `json:"id"`
}

// ModelDeleteRequest deletes one model from a hive (ModelDeleteResult).
type ModelDeleteRequest ModelGetRequest

// ImportSSHRequest adds the hosts of an OpenSSH config on the node to the
// inventory (ImportSSHResult).
type ImportSSHRequest struct {
	// SSHConfig is a path on the node ("" is ~/.ssh/config there).
	SSHConfig string `json:"ssh_config,omitempty"`
	Overwrite bool   `json:"overwrite,omitempty"`
}

// SSHTestRequest connects to an inventory host (SSHTestResult).
type SSHTestRequest struct {
	Name string `json:"name"`
	// AcceptNew records an unknown host key (a changed one is refused).
	AcceptNew bool `json:"accept_new,omitempty"`
}

// HiveInstallRequest installs rbee on an inventory host (InstallResult).
type HiveInstallRequest struct {
	Name string `json:"name"`
	// Path is where the binary goes ("" is the default layout).
	Path string `json:"path,omitempty"`
}

// HiveUninstallRequest removes rbee from an inventory host
// (UninstallResult).
type HiveUninstallRequest struct {
	Name    string `json:"name"`
	Purge   bool   `json:"purge,omitempty"`
	DataDir string `json:"data_dir,omitempty"`
}

// HiveStartRequest starts a node on an inventory host that joins this
// cluster (HiveStartResult).
type HiveStartRequest struct {
	Name       string   `json:"name"`
	DataDir    string   `json:"data_dir,omitempty"`
	HTTPAddr   string   `json:"http_addr,omitempty"`
	GossipAddr string   `json:"gossip_addr,omitempty"`
	P2PAddr    string   `json:"p2p_addr,omitempty"`
	NodeArgs   []string `json:"node_args,omitempty"`
}

// HiveStopRequest stops the node of an inventory host (HiveStopResult).
type HiveStopRequest struct {
	Name string `json:"name"`
}

// NodeLeaveRequest makes a node drain its workers and leave the cluster
// (NodeLeaveResult).
type NodeLeaveRequest struct{ OnHive }

// APIKeyCreateRequest creates a scoped API key (APIKeyCreated).
type APIKeyCreateRequest struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
}

// APIKeyListRequest lists the API keys (APIKeyListResult).
type APIKeyListRequest struct{}

// APIKeyRevokeRequest revokes a key (APIKeyRevokeResult).
type APIKeyRevokeRequest struct {
	Name string `json:"name"`
}

func (StatusRequest) Operation() string                  { return OpStatus }
func (HiveListRequest) Operation() string                { return OpHiveList }
func (HiveGetRequest) Operation() string                 { return OpHiveGet }
func (HiveStatusRequest) Operation() string              { return OpHiveStatus }
func (HiveRefreshCapabilitiesRequest) Operation() string { return OpHiveRefreshCapabilities }
func (InferRequest) Operation() string                   { return OpInfer }
func (WorkerListRequest) Operation() string              { return OpWorkerList }
func (WorkerGetRequest) Operation() string               { return OpWorkerGet }
func (WorkerRetireRequest) Operation() string            { return OpWorkerRetire }
func (WorkerSpawnRequest) Operation() string             { return OpWorkerSpawn }
func (ProcessListRequest) Operation() string             { return OpProcessList }
func (ProcessGetRequest) Operation() string              { return OpProcessGet }
func (ProcessDeleteRequest) Operation() string           { return OpProcessDelete }
func (BinaryListRequest) Operation() string              { return OpBinaryList }
func (BinaryGetRequest) Operation() string               { return OpBinaryGet }
func (BinaryDeleteRequest) Operation() string            { return OpBinaryDelete }
func (BinaryAddRequest) Operation() string               { return OpBinaryAdd }
func (WorkerBuildRequest) Operation() string             { return OpWorkerBuild }
func (WorkerDownloadRequest) Operation() string          { return OpWorkerDownload }
func (ModelDownloadRequest) Operation() string           { return OpModelDownload }
func (ModelListRequest) Operation() string               { return OpModelList }
func (ModelGetRequest) Operation() string                { return OpModelGet }
func (ModelDeleteRequest) Operation() string             { return OpModelDelete }
func (ImportSSHRequest) Operation() string               { return OpImportSSH }
func (SSHTestRequest) Operation() string                 { return OpSSHTest }
func (HiveInstallRequest) Operation() string             { return OpHiveInstall }
func (HiveUninstallRequest) Operation() string           { return OpHiveUninstall }
func (HiveStartRequest) Operation() string               { return OpHiveStart }
func (HiveStopRequest) Operation() string                { return OpHiveStop }
func (NodeLeaveRequest) Operation() string               { return OpNodeLeave }
func (APIKeyCreateRequest) Operation() string            { return OpAPIKeyCreate }
func (APIKeyListRequest) Operation() string              { return OpAPIKeyList }
func (APIKeyRevokeRequest) Operation() string            { return OpAPIKeyRevoke }

// JobIDHeader names the job in the answer to a POST /v1/jobs that asked
// for the job's events (Accept: text/event-stream): the events stream in
// that answer, so submitting and following take one round trip; a client
// whose stream breaks follows on at /v1/jobs/{id}/events.
const JobIDHeader = "X-Rbee-Job-Id"

// StrictJobsHeader is set ("1") on every answer of a node that refuses a
// job request field it does not know. A node without it may be a build
// that ignores one (see LooseIgnored): a client does not send it a job
// that sets such a field.
const StrictJobsHeader = "X-Rbee-Strict-Jobs"
