package api

import (
	"encoding/json"
	"fmt"
	"slices"
)

// The operations of POST /v1/jobs.
const (
	OpStatus                  = "status"
	OpHiveList                = "hive_list"
	OpHiveGet                 = "hive_get"
	OpHiveStatus              = "hive_status"
	OpHiveRefreshCapabilities = "hive_refresh_capabilities"

	OpInfer        = "infer"
	OpWorkerList   = "active_worker_list"
	OpWorkerGet    = "active_worker_get"
	OpWorkerRetire = "active_worker_retire"

	OpWorkerSpawn    = "worker_spawn"
	OpProcessList    = "worker_process_list"
	OpProcessGet     = "worker_process_get"
	OpProcessDelete  = "worker_process_delete"
	OpBinaryList     = "worker_binary_list"
	OpBinaryGet      = "worker_binary_get"
	OpBinaryDelete   = "worker_binary_delete"
	OpBinaryAdd      = "worker_binary_add"
	OpWorkerBuild    = "worker_build"
	OpWorkerDownload = "worker_download"
	OpModelDownload  = "model_download"
	OpModelList      = "model_list"
	OpModelGet       = "model_get"
	OpModelDelete    = "model_delete"

	OpImportSSH     = "hive_import_ssh"
	OpSSHTest       = "ssh_test"
	OpHiveInstall   = "hive_install"
	OpHiveUninstall = "hive_uninstall"
	OpHiveStart     = "hive_start"
	OpHiveStop      = "hive_stop"
	OpNodeLeave     = "node_leave"

	OpAPIKeyCreate = "apikey_create"
	OpAPIKeyList   = "apikey_list"
	OpAPIKeyRevoke = "apikey_revoke"
)

// Operations lists every operation name, sorted.
func Operations() []string {
	ops := []string{OpStatus, OpHiveList, OpHiveGet, OpHiveStatus, OpHiveRefreshCapabilities,
		OpInfer, OpWorkerList, OpWorkerGet, OpWorkerRetire,
		OpWorkerSpawn, OpProcessList, OpProcessGet, OpProcessDelete, OpBinaryList, OpBinaryGet, OpBinaryDelete, OpBinaryAdd,
		OpWorkerBuild, OpWorkerDownload, OpModelDownload, OpModelList, OpModelGet, OpModelDelete,
		OpImportSSH, OpSSHTest, OpHiveInstall, OpHiveUninstall, OpHiveStart, OpHiveStop, OpNodeLeave,
		OpAPIKeyCreate, OpAPIKeyList, OpAPIKeyRevoke}
	slices.Sort(ops)
	return ops
}

// Request is one operation's request.
type Request interface {
	// Operation is the operation's name (an Op constant).
	Operation() string
}

// Encode writes req as a job body: its fields plus "operation".
func Encode(req Request) ([]byte, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("api: %T does not encode as a JSON object: %w", req, err)
	}
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	op, _ := json.Marshal(req.Operation())
	fields["operation"] = op
	return json.Marshal(fields)
}

// OnHive is embedded by the operations that run on one hive.
type OnHive struct {
	// Hive names the node that runs the operation ("" is the node asked).
	Hive string `json:"hive,omitempty"`
}

// Target returns the hive the request names.
func (h OnHive) Target() string { return h.Hive }
