// Command rbee-worker serves one model over HTTP for an rbee node.
//
//	RBEE_WORKER_SECRET=… rbee-worker --model FILE --port P --id ID [--node URL] [--device cpu]
//	            [--threads N] [--slots K] [--host 127.0.0.1] [--heartbeat-interval 2s]
//	            [--orphan-grace 5m] [--queue N] [--ctx N] [--kv-cache f16|f32] [--drain-timeout 30s] [--log-level info]
//
// The secret shared with the node comes in the environment variable
// RBEE_WORKER_SECRET (never a flag: every local user can read a command
// line); the worker removes it from its environment once read. Every
// request must carry it as "Authorization: Bearer", and heartbeats carry it
// to the node.
//
// SIGTERM or SIGINT drains the worker (new requests get 503, in-flight ones
// finish within the drain timeout) and exits 0; a second signal stops at
// once. A model that fails to load exits 1; bad flags or a missing secret
// exit 2. A worker whose node accepted no heartbeat for --orphan-grace
// drains and exits 3.
// All behaviour lives in package worker; this file only parses flags, reads
// the secret and handles signals.
package main

import (
	"os"

	"github.com/rbee-project/rbee/internal/workercmd"
)

func main() {
	os.Exit(workercmd.Run(os.Args[1:], os.Stderr))
}
