package workercmd

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rbee-project/rbee/worker"
)

// stageURLs collects repeated --stage flags.
type stageURLs []string

func (s *stageURLs) String() string { return strings.Join(*s, ",") }

func (s *stageURLs) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// parseShard fills cfg from --shard-layers LO:HI and the --stage URLs;
// the stages' secrets come from worker.StageSecretsEnv (comma separated,
// in the same order), which is then removed from the environment.
func parseShard(cfg *worker.ShardConfig, layers string, stages []string) error {
	secrets := os.Getenv(worker.StageSecretsEnv)
	_ = os.Unsetenv(worker.StageSecretsEnv)
	if layers == "" {
		if len(stages) > 0 {
			return fmt.Errorf("--stage needs --shard-layers 0:HI")
		}
		return nil
	}
	lo, hi, ok := strings.Cut(layers, ":")
	var err1, err2 error
	cfg.Lo, err1 = strconv.Atoi(lo)
	cfg.Hi, err2 = strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("--shard-layers %q: want LO:HI", layers)
	}
	var sec []string
	if secrets != "" {
		sec = strings.Split(secrets, ",")
	}
	if len(sec) != len(stages) {
		return fmt.Errorf("%d --stage URLs but %d secrets in %s", len(stages), len(sec), worker.StageSecretsEnv)
	}
	for i, u := range stages {
		cfg.Stages = append(cfg.Stages, worker.StageEndpoint{URL: u, Secret: sec[i]})
	}
	return nil
}
