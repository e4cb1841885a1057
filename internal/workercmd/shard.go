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

// parseShard fills cfg from --shard-layers LO:HI or --shard-kv-heads
// LO:HI and the --stage URLs;
// the stages' secrets come from worker.StageSecretsEnv (comma separated,
// in the same order), which is then removed from the environment.
func parseShard(cfg *worker.ShardConfig, layers, kv string, stages []string) error {
	secrets := os.Getenv(worker.StageSecretsEnv)
	_ = os.Unsetenv(worker.StageSecretsEnv)
	var err error
	switch {
	case layers != "" && kv != "":
		return fmt.Errorf("--shard-layers and --shard-kv-heads exclude each other")
	case layers != "":
		cfg.Mode = worker.ShardPipeline
		cfg.Lo, cfg.Hi, err = parseRange("--shard-layers", layers)
	case kv != "":
		cfg.Mode = worker.ShardTensor
		cfg.KVLo, cfg.KVHi, err = parseRange("--shard-kv-heads", kv)
	case len(stages) > 0:
		return fmt.Errorf("--stage needs --shard-layers 0:HI or --shard-kv-heads 0:HI")
	default:
		return nil
	}
	if err != nil {
		return err
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

func parseRange(flag, v string) (int, int, error) {
	lo, hi, ok := strings.Cut(v, ":")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%s %q: want LO:HI", flag, v)
	}
	return a, b, nil
}
