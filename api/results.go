package api

import (
	"time"

	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node/sshhive"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// Hive is what the API reports of one node, or of an inventory host that
// runs none (ID empty).
type Hive struct {
	Name  string `json:"name"`
	ID    string `json:"id"`
	State string `json:"state"`
	Voter bool   `json:"voter"`
	// Suffrage is the hive's place in raft: "voter", "nonvoter" (a
	// node of an older build that a leader replicates to), or "replica"
	// (outside raft, following the registry from a voter's feed).
	Suffrage   string   `json:"suffrage,omitempty"`
	Leader     bool     `json:"leader"`
	HTTPAddr   string   `json:"http_addr,omitempty"`
	HTTPSAddr  string   `json:"https_addr,omitempty"`
	GossipAddr string   `json:"gossip_addr,omitempty"`
	P2PAddrs   []string `json:"p2p_addrs,omitempty"`
	Version    string   `json:"version,omitempty"`
	// StateSince is when State last changed in the answering node's
	// gossip view, by its clock (when it learnt of the hive, if it never
	// changed); absent for a hive known only from the registry.
	StateSince *time.Time `json:"state_since,omitempty"`
	// StateAgeMs is how long before the answer that was, by the answering
	// node's clock: what a client on another machine (another clock)
	// shows.
	StateAgeMs   *int64            `json:"state_age_ms,omitempty"`
	Capabilities *fsm.Capabilities `json:"capabilities,omitempty"`
	// Host is the SSH inventory entry of this name, if any.
	Host *fsm.Host `json:"host,omitempty"`
}

// HiveListResult is hive_list's result.
type HiveListResult struct {
	Hives []Hive `json:"hives"`
}

// StatusResult is the result of the status operation.
type StatusResult struct {
	Node      string `json:"node"`
	NodeID    string `json:"node_id"`
	Leader    string `json:"leader"`
	LeaderID  string `json:"leader_id"`
	RaftState string `json:"raft_state"`
	// Stale: no leader is known (or none was heard from lately), so the
	// registry below is this node's last known copy.
	Stale bool `json:"stale"`
	// LastLeaderContact: when this node last heard from a leader (also
	// in an earlier run); absent when never.
	LastLeaderContact *time.Time `json:"last_leader_contact,omitempty"`
	// RegistryVersion is the registry version the cluster agreed on;
	// RegistryHalted says why this node's replica stopped applying (it met
	// a command of a newer build: upgrade this node; or its disk refuses
	// the new entries: free space), absent when it runs.
	RegistryVersion int          `json:"registry_version"`
	RegistryHalted  string       `json:"registry_halted,omitempty"`
	Nodes           []Hive       `json:"nodes"`
	Workers         []WorkerView `json:"workers"`
	// Groups are the sharded worker groups in every state (few: each
	// holds a model on several hives): a failed group, whose shards are
	// gone from Workers, shows here with why.
	Groups   []GroupView        `json:"groups,omitempty"`
	Models   []fsm.ModelHolding `json:"models"`
	InFlight int                `json:"in_flight"`
	// Summary is set when the lists above are cut (StatusRequest.All
	// unset in a cluster past StatusListAll nodes): Nodes then holds the
	// leader, the voters, this node and every node that is not alive;
	// Workers the workers that are not ready; Models nothing.
	Summary *StatusSummary `json:"summary,omitempty"`
}

// StatusSummary counts what a cut status does not list.
type StatusSummary struct {
	// Nodes counts the nodes by state (alive, suspect, dead, left).
	Nodes map[string]int `json:"nodes"`
	// Workers counts the workers by registry state.
	Workers map[string]int `json:"workers"`
	// Models counts the model holdings (a model on a node).
	Models int `json:"models"`
}

// HiveStatus is the result of hive_status.
type HiveStatus struct {
	Name        string  `json:"name"`
	ID          string  `json:"id"`
	GossipState string  `json:"gossip_state"`
	P2PRTTMs    float64 `json:"p2p_rtt_ms,omitempty"`
	P2PError    string  `json:"p2p_error,omitempty"`
	APIHealthy  bool    `json:"api_healthy"`
	APIError    string  `json:"api_error,omitempty"`
	RaftState   string  `json:"raft_state,omitempty"`
	Version     string  `json:"version,omitempty"`
}

// Capabilities is hive_refresh_capabilities' result: what the hive found.
type Capabilities = fsm.Capabilities

// InferResult is the result event of an infer job.
type InferResult struct {
	WorkerID   string `json:"worker_id"`
	Node       string `json:"node"`
	Model      string `json:"model"`
	Text       string `json:"text"`
	StopReason string `json:"stop_reason"`
	TokensIn   int    `json:"tokens_in"`
	// TokensCached are the leading TokensIn the worker's cache held
	// already (an earlier turn of the conversation), not evaluated again.
	TokensCached int     `json:"tokens_cached"`
	TokensOut    int     `json:"tokens_out"`
	TTFTMs       float64 `json:"ttft_ms"`
	TPS          float64 `json:"tokens_per_second"`
	Attempts     int     `json:"attempts"`
}

// WorkerView is what worker list/get report of one worker.
type WorkerView struct {
	ID                 string  `json:"id"`
	Node               string  `json:"node"`
	NodeID             string  `json:"node_id"`
	Model              string  `json:"model"`
	Device             string  `json:"device"`
	State              string  `json:"state"`
	LiveState          string  `json:"live_state,omitempty"`
	InFlight           int     `json:"in_flight"`
	Queued             int     `json:"queued"`
	Slots              int     `json:"slots,omitempty"`
	TokensPerSecond    float64 `json:"tokens_per_second"`
	Port               int     `json:"port,omitempty"`
	PID                int     `json:"pid,omitempty"`
	LastHeartbeatAgeMs int64   `json:"last_heartbeat_age_ms"`
	Schedulable        bool    `json:"schedulable"`
	// Group is set on the workers of a sharded group: the group they
	// belong to (requests go to its head only).
	Group *GroupView `json:"group,omitempty"`
}

// GroupView is a sharded worker group: one model served by workers on
// several nodes, one registry entry.
type GroupView struct {
	ID     string           `json:"id"`
	Model  string           `json:"model"`
	Mode   string           `json:"mode"`
	State  string           `json:"state"`
	Error  string           `json:"error,omitempty"`
	Shards []GroupShardView `json:"shards"`
}

// GroupShardView is one shard of a group: its worker, node and part
// (layers [Lo, Hi) of a pipeline, KV heads [Lo, Hi) of a tensor group).
type GroupShardView struct {
	WorkerID    string `json:"worker_id"`
	Node        string `json:"node"`
	NodeID      string `json:"node_id"`
	Lo          int    `json:"lo"`
	Hi          int    `json:"hi"`
	WorkerState string `json:"worker_state,omitempty"`
}

// GroupSpawnResult is worker_spawn's result for a sharded group.
type GroupSpawnResult struct {
	Group GroupView `json:"group"`
	// WorkerID is the group's head, the worker requests go to.
	WorkerID string `json:"worker_id"`
	Model    string `json:"model"`
	State    string `json:"state"`
}

// WorkerListResult is active_worker_list's result.
type WorkerListResult struct {
	Workers []WorkerView `json:"workers"`
	// Groups are the sharded groups; their workers are in Workers too.
	Groups []GroupView `json:"groups,omitempty"`
}

// SpawnResult is the result of worker_spawn.
type SpawnResult struct {
	WorkerID string `json:"worker_id"`
	PID      int    `json:"pid"`
	Port     int    `json:"port"`
	Model    string `json:"model"`
	Node     string `json:"node"`
	Device   string `json:"device"`
	// State is "ready", or "registering" while the registry write waits
	// for a leader (the worker serves from its node already).
	State string `json:"state"`
	// BinaryVersion is the version of the worker binary it runs.
	BinaryVersion string `json:"binary_version"`
}

// Process is one worker process a hive runs (worker_process_get).
type Process = process.Status

// ProcessListResult is worker_process_list's result.
type ProcessListResult struct {
	Node      string    `json:"node"`
	Processes []Process `json:"processes"`
}

// ProcessDeleteResult is worker_process_delete's result.
type ProcessDeleteResult struct {
	PID      int    `json:"pid"`
	WorkerID string `json:"worker_id"`
	Stopped  bool   `json:"stopped"`
}

// Binary is one worker binary of a hive's catalog (worker_binary_get,
// _add, worker_build, worker_download).
type Binary = workercat.Entry

// BinaryListResult is worker_binary_list's result.
type BinaryListResult struct {
	Node     string   `json:"node"`
	Binaries []Binary `json:"binaries"`
}

// BinaryDeleteResult is worker_binary_delete's result.
type BinaryDeleteResult struct {
	Deleted []Binary `json:"deleted"`
}

// Model is one model of a hive's catalog (model_get, model_download).
type Model = modelcat.Entry

// ModelListResult is model_list's result for one hive.
type ModelListResult struct {
	Node   string  `json:"node"`
	Models []Model `json:"models"`
}

// ModelView is one line of the cluster-wide model list.
type ModelView struct {
	ID           string   `json:"id"`
	Nodes        []string `json:"nodes"`
	SHA256       string   `json:"sha256"`
	Size         uint64   `json:"size"`
	Quantization string   `json:"quantization"`
	File         string   `json:"file"`
}

// ClusterModelListResult is model_list's result with All.
type ClusterModelListResult struct {
	Models  []ModelView `json:"models"`
	Cluster bool        `json:"cluster"`
}

// ModelDeleteResult is model_delete's result.
type ModelDeleteResult struct {
	Deleted string `json:"deleted"`
	Node    string `json:"node"`
}

// ImportSSHResult is hive_import_ssh's result.
type ImportSSHResult = sshhive.ImportResult

// SSHTestResult is ssh_test's result.
type SSHTestResult struct {
	Name        string  `json:"name"`
	RoundTripMs float64 `json:"round_trip_ms"`
	ConnectMs   float64 `json:"connect_ms"`
	OS          string  `json:"os"`
	Arch        string  `json:"arch"`
	Uname       string  `json:"uname"`
	RbeeVersion string  `json:"rbee_version"`
}

// InstallResult is hive_install's result.
type InstallResult = sshhive.InstallResult

// UninstallResult is hive_uninstall's result.
type UninstallResult = sshhive.UninstallResult

// HiveStartResult is hive_start's result.
type HiveStartResult struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`
	Service string `json:"service"`
	Log     string `json:"log"`
}

// HiveStopResult is hive_stop's result.
type HiveStopResult struct {
	Name     string        `json:"name"`
	Graceful bool          `json:"graceful"`
	State    fsm.HostState `json:"state"`
}

// NodeLeaveResult is node_leave's result.
type NodeLeaveResult struct {
	Name    string `json:"name"`
	Leaving bool   `json:"leaving"`
}

// APIKeyView is what apikey_list shows of a key.
type APIKeyView struct {
	Name     string     `json:"name"`
	Scope    string     `json:"scope"`
	Created  time.Time  `json:"created"`
	LastUsed *time.Time `json:"last_used,omitempty"`
}

// APIKeyCreated is apikey_create's result: the key is shown this once.
type APIKeyCreated struct {
	APIKeyView
	Key string `json:"key"`
}

// APIKeyListResult is apikey_list's result.
type APIKeyListResult struct {
	Keys []APIKeyView `json:"keys"`
}

// APIKeyRevokeResult is apikey_revoke's result.
type APIKeyRevokeResult struct {
	Revoked string `json:"revoked"`
}

// CAInfo is what GET /v1/tls/ca answers: the cluster CA certificate
// (public) and its fingerprint.
type CAInfo struct {
	CertPEM     string    `json:"cert_pem"`
	Fingerprint string    `json:"fingerprint"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
}

// ClusterSnapshot is what the web page shows: the status plus the jobs of
// this node with their latest progress.
type ClusterSnapshot struct {
	Status StatusResult `json:"status"`
	Jobs   []JobSummary `json:"jobs"`
	// InsecureHTTP: this node serves plain HTTP off loopback
	// (--insecure-http); the page shows a warning.
	InsecureHTTP bool `json:"insecure_http"`
}

// JobSummary is one job of this node.
type JobSummary struct {
	ID        string    `json:"job_id"`
	Operation string    `json:"operation"`
	Status    string    `json:"status"`
	Created   time.Time `json:"created"`
	Done      int64     `json:"done,omitempty"`
	Total     int64     `json:"total,omitempty"`
	Message   string    `json:"message,omitempty"`
}
