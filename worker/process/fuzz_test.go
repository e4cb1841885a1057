package process

import (
	"strings"
	"testing"

	"github.com/rbee-project/rbee/worker/catalog"
)

func TestParseState(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		pids    []int
		wantErr bool
	}{
		{"valid", `{"format":1,"processes":[{"pid":10,"worker_id":"w1","cmdline":["a"],"create_time_ms":5}]}`, []int{10}, false},
		{"drops malformed", `{"format":1,"processes":[
			{"pid":0,"worker_id":"w","cmdline":["a"],"create_time_ms":5},
			{"pid":11,"worker_id":"../w","cmdline":["a"],"create_time_ms":5},
			{"pid":12,"worker_id":"w","cmdline":[],"create_time_ms":5},
			{"pid":13,"worker_id":"w","cmdline":["a"],"create_time_ms":0},
			{"pid":4294967297,"worker_id":"w","cmdline":["a"],"create_time_ms":5},
			{"pid":14,"worker_id":"w","cmdline":["a"],"create_time_ms":5},
			{"pid":14,"worker_id":"w2","cmdline":["b"],"create_time_ms":6}]}`, []int{14}, false},
		{"version 2 needs a secret", `{"format":2,"processes":[
			{"pid":15,"worker_id":"w","cmdline":["a"],"create_time_ms":5},
			{"pid":16,"worker_id":"w","cmdline":["a"],"create_time_ms":5,"secret":"not-hex-and-short"},
			{"pid":17,"worker_id":"w","cmdline":["a"],"create_time_ms":5,"secret":"` + strings.Repeat("ab", 32) + `"}]}`, []int{17}, false},
		{"version 1 secrets are ignored", `{"format":1,"processes":[
			{"pid":18,"worker_id":"w","cmdline":["a"],"create_time_ms":5,"secret":"x"}]}`, []int{18}, false},
		{"wrong format", `{"format":3,"processes":[]}`, nil, true},
		{"not json", `{`, nil, true},
		{"too large", strings.Repeat(" ", maxStateBytes+1), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseState([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var pids []int
			for _, w := range got {
				pids = append(pids, w.PID)
			}
			if len(pids) != len(tt.pids) || (len(pids) > 0 && pids[0] != tt.pids[0]) {
				t.Fatalf("pids %v, want %v", pids, tt.pids)
			}
			for _, w := range got {
				if w.Secret != "" && !validSecret(w.Secret) {
					t.Fatalf("accepted secret %q", w.Secret)
				}
			}
		})
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"format":1,"processes":[{"pid":10,"worker_id":"w1","cmdline":["a","--port","1"],"create_time_ms":5,"port":1}]}`))
	f.Add([]byte(`{"format":1,"processes":[{"pid":-1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		infos, err := parseState(data)
		if err != nil {
			return
		}
		seen := map[int]bool{}
		for _, w := range infos {
			if w.PID <= 0 || len(w.Cmdline) == 0 || w.CreateTime <= 0 || seen[w.PID] || w.Adopted {
				t.Fatalf("accepted bad entry %+v", w)
			}
			if catalog.ValidName("worker id", w.WorkerID) != nil {
				t.Fatalf("accepted worker id %q", w.WorkerID)
			}
			if w.Secret != "" && !validSecret(w.Secret) {
				t.Fatalf("accepted secret %q", w.Secret)
			}
			seen[w.PID] = true
		}
	})
}

func TestWorkerEnv(t *testing.T) {
	env := workerEnv([]string{"HOME=/h", SecretEnv + "=inherited", "PATH=/bin"}, []string{"X=1", SecretEnv + "=extra"}, "s3cret", "")
	want := []string{"HOME=/h", "PATH=/bin", "X=1", SecretEnv + "=s3cret"}
	if strings.Join(env, "|") != strings.Join(want, "|") {
		t.Fatalf("env %q, want %q", env, want)
	}
}

// A worker does not inherit the node's credentials; an engine type that
// sets one for its process keeps it.
func TestWorkerEnvDropsNodeSecrets(t *testing.T) {
	base := []string{"HOME=/h", "RBEE_CLUSTER_TOKEN=cluster", "RBEE_TOKEN=key", "HF_TOKEN=hf", "HUGGING_FACE_HUB_TOKEN=hf2", "SSH_AUTH_SOCK=/tmp/agent", "PATH=/bin"}
	env := workerEnv(base, []string{"HF_TOKEN=chosen"}, "s3cret", "")
	want := []string{"HOME=/h", "PATH=/bin", "HF_TOKEN=chosen", SecretEnv + "=s3cret"}
	if strings.Join(env, "|") != strings.Join(want, "|") {
		t.Fatalf("env %q, want %q", env, want)
	}
}
